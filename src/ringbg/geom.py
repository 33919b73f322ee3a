"""Sky geometry: a celestial WCS image with a log-spaced reconstructed-energy axis.

The conventions follow gammapy 2.1's ``WcsGeom.create`` so that maps can be compared pixel by
pixel: ``CRPIX = (n + 1) / 2``, ``CDELT = (-binsize, +binsize)``, pixel ``i`` covers the
0-based continuous pixel range ``[i - 0.5, i + 0.5)``. Per-observation cutouts are aligned
sub-grids of the full geometry (no resampling), given as a pair of slices.
"""

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from astropy.wcs.utils import celestial_frame_to_wcs

__all__ = [
    "Geom",
    "energy_edges_tev",
    "offset_frame_lonlat",
    "angular_separation_deg",
    "to_frame",
]

FRAMES = ("icrs", "galactic")


def energy_edges_tev(energy_min_tev, energy_max_tev, nbins):
    """Log-spaced energy bin edges, as gammapy's ``MapAxis.from_energy_bounds``.

    Parameters
    ----------
    energy_min_tev, energy_max_tev : float
        Range in TeV.
    nbins : int
        Number of bins.

    Returns
    -------
    edges : `~numpy.ndarray`
        ``nbins + 1`` edges in TeV.
    """
    return np.exp(np.linspace(np.log(energy_min_tev), np.log(energy_max_tev), nbins + 1))


def to_frame(lon_deg, lat_deg, frame_in, frame_out):
    """Transform sky coordinates between ``icrs`` and ``galactic`` (plain arrays in degrees).

    Between those two the values are rotated by astropy's matrix (taken once): astropy's
    values to 1e-12 deg, without SkyCoord's ~4 ms per call. The angles are taken to radians
    by astropy's ``Longitude`` and ``Latitude``, as in ``SkyCoord``: float32 values (event
    lists, as gammapy transforms them) are wrapped and converted in float32, so that events on
    pixel borders land where gammapy puts them. Other frames go through ``SkyCoord``.
    Longitudes are in [0, 360).
    """
    if frame_in == frame_out:
        from astropy.coordinates import Longitude

        # wrapped into [0, 360) as by ``SkyCoord``, in the values' own precision: float32
        # event coordinates (CTA's RA in [-180, 180)) are wrapped in float32, as gammapy
        # bins them
        lon = Longitude(lon_deg, unit="deg").to_value("deg")
        return np.asarray(lon, dtype=float), np.asarray(lat_deg, dtype=float)
    if {frame_in, frame_out} != set(FRAMES):
        coord = SkyCoord(lon_deg, lat_deg, unit="deg", frame=frame_in).transform_to(frame_out)
        sph = coord.spherical
        return sph.lon.deg, sph.lat.deg
    from astropy.coordinates import Latitude, Longitude

    matrix = _rotation(frame_in, frame_out)
    lon = np.asarray(Longitude(lon_deg, unit="deg").to_value("rad"), dtype=float)
    lat = np.asarray(Latitude(lat_deg, unit="deg").to_value("rad"), dtype=float)
    cos_lat = np.cos(lat)
    v = (cos_lat * np.cos(lon), cos_lat * np.sin(lon), np.sin(lat))
    x, y, z = (matrix[k, 0] * v[0] + matrix[k, 1] * v[1] + matrix[k, 2] * v[2] for k in range(3))
    lon_out = np.degrees(np.arctan2(y, x))
    lon_out = np.where(lon_out < 0, lon_out + 360.0, lon_out)[()]
    return lon_out, np.degrees(np.arctan2(z, np.hypot(x, y)))


@lru_cache(maxsize=None)
def _rotation(frame_in, frame_out):
    """The 3x3 matrix taking unit vectors of ``frame_in`` to ``frame_out`` (astropy's)."""
    from astropy.coordinates import CartesianRepresentation

    axes = CartesianRepresentation(np.eye(3), unit="")  # the three unit vectors
    coord = SkyCoord(axes, frame=frame_in, representation_type="cartesian")
    return coord.transform_to(frame_out).cartesian.xyz.value  # columns


def offset_frame_lonlat(lon_deg, lat_deg, lon0_deg, lat0_deg):
    """Longitude and latitude (deg) in the offset frame centred on (lon0, lat0).

    The offset frame is the sky rotated so that the centre is at (0, 0) with the
    longitude growing toward increasing sky longitude (astropy's ``SkyOffsetFrame``).
    """
    lon = np.radians(np.asarray(lon_deg, dtype=float) - lon0_deg)
    lat = np.radians(lat_deg)
    lat0 = np.radians(lat0_deg)
    cos_lat = np.cos(lat)
    v1 = cos_lat * np.cos(lon)
    v2 = cos_lat * np.sin(lon)
    v3 = np.sin(lat)
    x = v1 * np.cos(lat0) + v3 * np.sin(lat0)
    z = -v1 * np.sin(lat0) + v3 * np.cos(lat0)
    return np.degrees(np.arctan2(v2, x)), np.degrees(np.arcsin(np.clip(z, -1, 1)))


def angular_separation_deg(lon1_deg, lat1_deg, lon2_deg, lat2_deg):
    """Angular separation (Vincenty formula, as astropy) in degrees."""
    lon1, lat1, lon2, lat2 = (np.radians(x) for x in (lon1_deg, lat1_deg, lon2_deg, lat2_deg))
    return np.degrees(_separation_rad(lon2 - lon1, (np.sin(lat1), np.cos(lat1)),
                                      (np.sin(lat2), np.cos(lat2))))


def _separation_rad(dlon, trig1, trig2):
    """Vincenty's separation (rad) from the longitude difference (rad) and the points'
    ``(sin, cos)`` of latitude."""
    (slat1, clat1), (slat2, clat2) = trig1, trig2
    sdlon, cdlon = np.sin(dlon), np.cos(dlon)
    num1 = clat2 * sdlon
    num2 = clat1 * slat2 - slat1 * clat2 * cdlon
    denominator = slat1 * slat2 + clat1 * clat2 * cdlon
    return np.arctan2(np.hypot(num1, num2), denominator)


def _position_angle_rad(dlon, trig1, trig2):
    """Position angle (rad) at point 1 toward point 2 (astropy's formula), from the
    longitude difference (rad) and the points' ``(sin, cos)`` of latitude."""
    (slat1, clat1), (slat2, clat2) = trig1, trig2
    y = np.sin(dlon) * clat2
    x = clat1 * slat2 - slat1 * clat2 * np.cos(dlon)
    return np.arctan2(y, x)


def point_lookup_pixel(wcs, shape, position):
    """``(j, i)`` of the pixel gammapy reads a map at for a sky ``position``
    (``Map.to_region_nd_map`` of a point, e.g. ``get_spectrum`` or ``get_edisp_kernel``).

    The point's pixel bounding box (regions' ``RegionBoundingBox``) has its centre at the
    nearest pixel centre, or at the point itself on a pixel edge (the centre of an
    even-sized grid); that centre is taken back to the sky and to pixels, and the nearest
    pixel taken, ties down (scipy's nearest interpolator). The same astropy calls as there
    give the same floats: on an edge, which neighbour is read depends on their last bits.
    """
    from astropy.wcs.utils import pixel_to_skycoord

    px, py = (float(v) for v in wcs.world_to_pixel(position))
    qx, qy = (0.5 * (np.ceil(p + 0.5) - 1 + np.floor(p + 0.5)) for p in (px, py))
    centre = pixel_to_skycoord(qx, qy, wcs, origin=0)
    lon, lat = centre.spherical.lon.deg, centre.spherical.lat.deg
    x, y = wcs.wcs_world2pix(np.atleast_1d(lon), np.atleast_1d(lat), 0)
    return _nearest(float(y[0]), shape[0]), _nearest(float(x[0]), shape[1])


def _nearest(pos, n):
    """Index scipy's ``RegularGridInterpolator(method="nearest")`` picks on ``arange(n)``."""
    if n == 1:
        return 0
    i = int(np.clip(np.searchsorted(np.arange(n), pos, side="right") - 1, 0, n - 2))
    return i if pos - i <= 0.5 else i + 1


@dataclass(frozen=True, eq=False)
class Geom:
    """A celestial WCS image with a reconstructed-energy axis.

    Parameters
    ----------
    wcs : `~astropy.wcs.WCS`
        Two-dimensional celestial WCS.
    shape : tuple of int
        Image shape ``(ny, nx)``.
    energy_edges_tev : `~numpy.ndarray`
        Reconstructed-energy bin edges in TeV.
    frame : {"icrs", "galactic"}
        Sky frame of the WCS.
    """

    wcs: WCS
    shape: tuple
    energy_edges_tev: np.ndarray
    frame: str

    @classmethod
    def create(cls, lon_deg, lat_deg, frame, width_deg, binsize_deg, projection, energy_edges):
        """Create a geometry centred on (lon, lat), as gammapy's ``WcsGeom.create``.

        Parameters
        ----------
        lon_deg, lat_deg : float
            Centre in ``frame``.
        frame : {"icrs", "galactic"}
            Sky frame.
        width_deg : float or (float, float)
            Width (and height) in degrees.
        binsize_deg : float
            Pixel size in degrees.
        projection : str
            WCS projection code (``CAR``, ``TAN``, ``AIT``, ...).
        energy_edges : array-like
            Energy bin edges in TeV.
        """
        if frame not in FRAMES:
            raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
        width = np.broadcast_to(np.asarray(width_deg, dtype=float), (2,))
        nx, ny = (int(n) for n in np.rint(width / binsize_deg).astype(int))
        if nx < 1 or ny < 1:
            raise ValueError(f"width {width_deg} deg is smaller than one pixel of {binsize_deg} deg")
        sky_frame = SkyCoord(np.nan, np.nan, frame=frame, unit="deg").frame
        wcs = celestial_frame_to_wcs(sky_frame, projection=projection)
        wcs.wcs.crpix = ((nx + 1) / 2.0, (ny + 1) / 2.0)
        wcs.wcs.crval = (lon_deg, lat_deg)
        wcs.wcs.cdelt = (-binsize_deg, binsize_deg)
        wcs.array_shape = (ny, nx)
        wcs.wcs.datfix()
        return cls(wcs=wcs, shape=(ny, nx), energy_edges_tev=np.asarray(energy_edges, float),
                   frame=frame)

    def __reduce__(self):
        # a worker unpickles every task's geometry: it gets the one it already has, by key,
        # with its WCS and cached pixel coordinates (unpickling a WCS alone costs ~5 ms)
        return (_geom_from_pickle, (self.key, self._wcs_pickle, self.shape,
                                    self.energy_edges_tev, self.frame))

    @cached_property
    def _wcs_pickle(self):
        import pickle

        return pickle.dumps(self.wcs, protocol=pickle.HIGHEST_PROTOCOL)

    @cached_property
    def key(self):
        """A string identifying the geometry (WCS, shape, energy edges)."""
        edges = ",".join(repr(float(e)) for e in self.energy_edges_tev)
        return f"{self.image_header().tostring()}|{self.shape}|{edges}|{self.frame}"

    @property
    def binsize_deg(self):
        """Pixel size in degrees (``|CDELT2|``)."""
        return abs(float(self.wcs.wcs.cdelt[1]))

    @property
    def energy_center_tev(self):
        """Geometric bin centres of the energy axis in TeV."""
        edges = self.energy_edges_tev
        return np.sqrt(edges[:-1] * edges[1:])

    @property
    def n_energy(self):
        return len(self.energy_edges_tev) - 1

    def pix_to_world(self, x, y):
        """0-based pixel coordinates to (lon, lat) in degrees in the geometry's frame."""
        lon, lat = self.wcs.wcs_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
        return lon, lat

    def world_to_pix(self, lon_deg, lat_deg, frame="icrs"):
        """Sky coordinates in ``frame`` to 0-based continuous pixel coordinates (x, y)."""
        lon, lat = to_frame(lon_deg, lat_deg, frame, self.frame)
        x, y = self.wcs.wcs_world2pix(np.atleast_1d(lon), np.atleast_1d(lat), 0)
        return x, y

    @cached_property
    def _centers(self):
        ny, nx = self.shape
        y, x = np.mgrid[0:ny, 0:nx].astype(float)
        return self.pix_to_world(x, y)

    @property
    def lonlat_deg(self):
        """Pixel-centre (lon, lat) arrays of shape (ny, nx) in the geometry's frame."""
        return self._centers

    @cached_property
    def radec_deg(self):
        """Pixel-centre (ra, dec) arrays of shape (ny, nx) in ICRS."""
        lon, lat = self._centers
        return to_frame(lon, lat, self.frame, "icrs")

    @cached_property
    def unit_vectors(self):
        """Pixel-centre ICRS unit vectors, shape (3, ny, nx)."""
        ra, dec = (np.radians(a) for a in self.radec_deg)
        return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])

    def pointing_frame(self, slices, ra0_deg, dec0_deg):
        """Offset-frame (lon, lat) and separation (deg) of cutout pixels from an ICRS position.

        The same quantities as `offset_frame_lonlat` and `angular_separation_deg` on
        ``radec_deg[slices]``, from one rotation of the cached unit vectors.

        Returns
        -------
        lon_deg, lat_deg, offset_deg : `~numpy.ndarray`
            Arrays of the cutout's shape.
        """
        sy, sx = slices
        v = self.unit_vectors[:, sy, sx]
        a, d = np.radians(ra0_deg), np.radians(dec0_deg)
        # rows: toward (ra0, dec0), local east, local north
        rotation = np.array([
            [np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)],
            [-np.sin(a), np.cos(a), 0.0],
            [-np.sin(d) * np.cos(a), -np.sin(d) * np.sin(a), np.cos(d)],
        ])
        x, y, z = np.tensordot(rotation, v, axes=1)
        lon = np.degrees(np.arctan2(y, x))
        lat = np.degrees(np.arcsin(np.clip(z, -1.0, 1.0)))
        offset = np.degrees(np.arctan2(np.hypot(y, z), x))
        return lon, lat, offset

    @cached_property
    def solid_angle_sr(self):
        """Pixel solid angles (sr), from the four sky corners as gammapy computes them.

        The corners' sines and cosines are taken once on the corner grid (each is shared
        by four pixels), for the formulas of `angular_separation_deg` and `_position_angle_rad`.
        """
        ny, nx = self.shape
        yc, xc = np.mgrid[0 : ny + 1, 0 : nx + 1].astype(float) - 0.5
        lon, lat = (np.radians(v) for v in self.pix_to_world(xc, yc))
        # the separation takes degrees: the corners through degrees and back, as it sees them
        lon_s, lat_s = (np.radians(np.degrees(v)) for v in (lon, lat))
        trig_s = (np.sin(lat_s), np.cos(lat_s))
        trig = (np.sin(lat), np.cos(lat))
        # corners: A=(i-.5,j-.5) B=(i-.5,j+.5) C=(i+.5,j-.5) D=(i+.5,j+.5); arrays are [j, i]
        corner = {"a": (slice(None, -1), slice(None, -1)), "b": (slice(1, None), slice(None, -1)),
                  "c": (slice(None, -1), slice(1, None)), "d": (slice(1, None), slice(1, None))}

        def sep(p, q):
            p, q = corner[p], corner[q]
            pair = (lon_s[q] - lon_s[p], [v[p] for v in trig_s], [v[q] for v in trig_s])
            return np.radians(np.degrees(_separation_rad(*pair)))

        def position_angle(p, q):
            p, q = corner[p], corner[q]
            return _position_angle_rad(lon[q] - lon[p], [v[p] for v in trig], [v[q] for v in trig])

        low, left, up, right = sep("a", "b"), sep("a", "c"), sep("c", "d"), sep("b", "d")
        t1 = position_angle("b", "d") - position_angle("b", "a")
        t2 = position_angle("c", "d") - position_angle("a", "c")
        return np.abs(0.5 * low * right * np.sin(t1) + 0.5 * up * left * np.sin(t2))

    def cutout_slices(self, lon_deg, lat_deg, width_deg, frame="icrs"):
        """Slices of the aligned cutout of ``width_deg`` centred on a position ('trim' mode).

        Returns
        -------
        slices : tuple of slice or None
            ``(slice_y, slice_x)`` into the image, or None when the cutout misses the image.
        """
        x, y = self.world_to_pix(lon_deg, lat_deg, frame)
        npix = int(np.round(width_deg / self.binsize_deg))
        out = []
        for pos, size in ((y[0], self.shape[0]), (x[0], self.shape[1])):
            if not np.isfinite(pos):
                return None
            lo = int(np.ceil(pos - npix / 2.0))
            hi = lo + npix
            if hi <= 0 or lo >= size:
                return None
            lo, hi = max(lo, 0), min(hi, size)
            out.append(slice(lo, hi))
        return tuple(out)

    def sub_wcs(self, slices):
        """The WCS of an aligned cutout given by ``(slice_y, slice_x)``."""
        return self.wcs.slice(slices)

    def image_header(self):
        """FITS header of the 2D celestial WCS."""
        return self.wcs.to_header()


#: the geometries this process unpickled, by key (a few: the map's and its IRF grid's)
_UNPICKLED = {}


def _geom_from_pickle(key, wcs_pickle, shape, energy_edges_tev, frame):
    """The `Geom` of ``key`` this process already has, else a new one from its pickled WCS."""
    geom = _UNPICKLED.get(key)
    if geom is None:
        import pickle

        geom = Geom(pickle.loads(wcs_pickle), tuple(shape), energy_edges_tev, frame)
        geom.__dict__["key"] = key
        geom.__dict__["_wcs_pickle"] = wcs_pickle
        if len(_UNPICKLED) >= 8:
            _UNPICKLED.clear()
        _UNPICKLED[key] = geom
    return geom
