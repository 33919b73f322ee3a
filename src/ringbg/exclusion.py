"""Exclusion masks: circles, DS9 region files, FITS mask maps, catalogues, automatic exclusion.

Masks follow gammapy's convention: True where a pixel may be used for the background estimate,
False inside excluded regions. Sky regions become pixel regions as gammapy's
``WcsGeom.region_mask`` makes them with the ``regions`` package (circles with its arithmetic
written out, DS9 files through ``regions`` itself).
"""

from pathlib import Path
from typing import Literal

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from pydantic import Field, model_validator

from .configtypes import Circle, NonNegativeAngle, PathStr, _absolute, _Model
from .geom import angular_separation_deg, to_frame

__all__ = ["circles_mask", "region_file_mask", "fits_mask", "exclusion_mask", "dilate",
           "read_catalog", "catalog_circles", "hot_pixels", "grow_exclusion", "SOURCES",
           "CATALOG_FORMATS", "Exclusion", "Catalog", "AutoExclusion"]


def _excluded_by_regions(geom, sky_regions):
    from regions import PixCoord

    ny, nx = geom.shape
    y, x = np.mgrid[0:ny, 0:nx]
    pix = PixCoord(x=x, y=y)
    inside = np.zeros(geom.shape, dtype=bool)
    for region in sky_regions:
        inside |= region.to_pixel(geom.wcs).contains(pix)
    return inside


def circles_mask(geom, circles):
    """Mask excluding circles ``[(lon_deg, lat_deg, frame, radius_deg), ...]``.

    A circle becomes a pixel circle as ``regions`` makes one (``CircleSkyRegion.to_pixel``):
    centred on the centre's pixel position, with the radius divided by the pixel scale
    measured along the local north over one arcsecond; pixel centres strictly closer than
    the radius are inside. The same astropy operations in the same order give the same
    bits, without importing ``regions`` for the common case.
    """
    import astropy.units as u

    ny, nx = geom.shape
    y, x = np.mgrid[0:ny, 0:nx]
    inside = np.zeros(geom.shape, dtype=bool)
    offset = 1 * u.arcsec
    for lon, lat, frame, radius_deg in circles:
        centre = SkyCoord(lon, lat, unit="deg", frame=frame)
        cx, cy = geom.wcs.world_to_pixel(centre)
        north_x, north_y = geom.wcs.world_to_pixel(centre.directional_offset_by(0.0, offset))
        scale = offset.to(u.arcsec) / (np.hypot(north_x - cx, north_y - cy) * u.pixel)
        radius_px = ((radius_deg * u.deg) / scale).to(u.pixel).value
        inside |= np.hypot(x - cx, y - cy) < radius_px
    return ~inside


def region_file_mask(geom, path):
    """Mask excluding the sky regions of a DS9 region file."""
    from regions import Regions, SkyRegion

    try:
        regions = Regions.read(str(path), format="ds9")
    except Exception as exc:  # regions raises its own parser errors
        raise ValueError(f"{path}: cannot be read as a DS9 region file ({exc})") from exc
    sky = [r for r in regions if isinstance(r, SkyRegion)]
    if len(sky) != len(regions):
        raise ValueError(f"{path}: only sky regions (fk5, icrs, galactic) can be used")
    return ~_excluded_by_regions(geom, sky)


def fits_mask(geom, path):
    """Mask from a FITS image (first image HDU; nonzero = usable), nearest-pixel lookup.

    Pixels of ``geom`` outside the file's image are kept usable.
    """
    with fits.open(path) as hdul:
        hdu = next((h for h in hdul if h.is_image and h.data is not None), None)
        if hdu is None:
            raise ValueError(f"{path}: no image HDU with data")
        data = np.asarray(hdu.data)
        wcs = WCS(hdu.header).celestial
    while data.ndim > 2:
        data = data[0]
    frame = "galactic" if wcs.wcs.ctype[0].startswith("GLON") else "icrs"
    lon, lat = geom.lonlat_deg
    lon, lat = to_frame(lon, lat, geom.frame, frame)
    x, y = wcs.wcs_world2pix(lon, lat, 0)
    ix, iy = np.floor(x + 0.5), np.floor(y + 0.5)
    ok = np.isfinite(ix) & np.isfinite(iy)
    ok &= (ix >= 0) & (ix < data.shape[1]) & (iy >= 0) & (iy < data.shape[0])
    mask = np.ones(geom.shape, dtype=bool)
    mask[ok] = data[iy[ok].astype(int), ix[ok].astype(int)] != 0
    return mask


def dilate(excluded, radius_px):
    """Grow an excluded-pixels image by a disk of ``radius_px``: every pixel whose centre is
    within ``radius_px`` (inclusive) of an excluded one's, as a binary dilation with the
    top-hat kernel, from the exact Euclidean distance transform: time and memory grow with
    the image, not with the radius."""
    from scipy.ndimage import distance_transform_edt

    excluded = np.asarray(excluded, dtype=bool)
    if radius_px <= 0 or not excluded.any():
        return excluded
    distance = distance_transform_edt(~excluded)
    # squared distances are integers: rounded, they compare with radius**2 as the kernel does
    return np.rint(distance * distance) <= radius_px**2


#: column mappings of the built-in catalogue formats: position columns, their frame, the size
#: columns (deg; the largest finite one is used, none finite = point-like), the name column
CATALOG_FORMATS = {
    "hgps": {"hdu": "HGPS_SOURCES", "lon": "GLON", "lat": "GLAT", "frame": "galactic",
             "size": ("Size",), "name": "Source_Name"},
    "gammacat": {"hdu": 1, "lon": "ra", "lat": "dec", "frame": "icrs",
                 "size": ("morph_sigma", "morph_sigma2"), "name": "common_name"},
}


def _catalog_format(path, columns):
    """The built-in format that fits a file's column names, or None."""
    for name, fmt in CATALOG_FORMATS.items():
        needed = {fmt["lon"], fmt["lat"], fmt["name"]}
        if needed <= set(columns):
            return name
    return None


def read_catalog(path, fmt="auto", columns=None, hdu=None):
    """Sources of a catalogue file (FITS, CSV or ECSV) as plain arrays.

    Parameters
    ----------
    path : str or path
        The table file.
    fmt : str
        ``"hgps"``, ``"gammacat"`` (`CATALOG_FORMATS`), ``"auto"`` (recognised by its
        columns) or ``"columns"`` (``columns`` names them).
    columns : dict, optional
        ``lon``, ``lat``, ``frame`` and optionally ``size`` (one name or a list) and ``name``.
    hdu : str or int, optional
        The FITS HDU (default: the format's, or the first table).

    Returns
    -------
    sources : dict
        ``name`` (list of str), ``lon_deg``, ``lat_deg``, ``size_deg`` (NaN: point-like)
        and ``frame``.
    """
    from astropy.table import Table

    path = str(path)
    spec = dict(columns or {})
    if fmt in CATALOG_FORMATS:
        spec = {**CATALOG_FORMATS[fmt], **spec}
    read_kwargs = {}
    is_fits = path.lower().endswith((".fits", ".fits.gz", ".fit", ".fts"))
    if is_fits:
        read_kwargs["hdu"] = hdu if hdu is not None else spec.get("hdu", 1)
    try:
        table = Table.read(path, **read_kwargs)
    except Exception as exc:  # astropy raises many kinds for unreadable tables
        raise ValueError(f"{path}: cannot be read as a catalogue table ({exc})") from None
    if fmt == "auto":
        found = _catalog_format(path, table.colnames)
        if found is None and not spec:
            raise ValueError(f"{path}: not a known catalogue (hgps, gammacat); name its "
                             "columns with exclusion.catalogs[].columns")
        spec = {**CATALOG_FORMATS.get(found, {}), **spec}
    missing = [spec.get(k) for k in ("lon", "lat") if spec.get(k) not in table.colnames]
    if missing or "frame" not in spec:
        raise ValueError(f"{path}: no column {missing[0] if missing else ''} (columns: "
                         f"{', '.join(table.colnames[:12])}...); set exclusion.catalogs[]."
                         "columns lon, lat and frame")
    sizes = spec.get("size") or ()
    sizes = (sizes,) if isinstance(sizes, str) else tuple(sizes)
    n = len(table)
    size = np.full(n, np.nan)
    for name in sizes:
        if name not in table.colnames:
            raise ValueError(f"{path}: no size column {name}")
        values = np.asarray(table[name].filled(np.nan) if hasattr(table[name], "filled")
                            else table[name], float)
        size = np.fmax(size, values)
    name_col = spec.get("name")
    names = ([str(v).strip() for v in table[name_col]] if name_col in table.colnames
             else [f"source {k}" for k in range(n)])
    return {"name": names, "lon_deg": np.asarray(table[spec["lon"]], float),
            "lat_deg": np.asarray(table[spec["lat"]], float), "size_deg": size,
            "frame": spec["frame"]}


def catalog_circles(geom, sources, min_radius_deg=0.3, size_factor=3.0, margin_deg=0.1):
    """Exclusion circles of the catalogue sources that touch the map.

    A source gets a circle of radius ``max(min_radius, size_factor * size) + margin``
    (``size`` NaN: point-like). Returns ``[(lon, lat, frame, radius_deg, name), ...]``.
    """
    size = np.nan_to_num(sources["size_deg"], nan=0.0)
    radius = np.maximum(min_radius_deg, size_factor * size) + margin_deg
    lon, lat = sources["lon_deg"], sources["lat_deg"]
    finite = np.isfinite(lon) & np.isfinite(lat)
    # the map's nearest pixel centre to each source, through the map's frame
    map_lon, map_lat = to_frame(lon[finite], lat[finite], sources["frame"], geom.frame)
    x, y = geom.world_to_pix(map_lon, map_lat, geom.frame)
    ny, nx = geom.shape
    cx, cy = np.clip(np.nan_to_num(x, nan=-1), 0, nx - 1), np.clip(np.nan_to_num(y, nan=-1),
                                                                    0, ny - 1)
    near_lon, near_lat = geom.pix_to_world(np.round(cx), np.round(cy))
    sep = angular_separation_deg(near_lon, near_lat, map_lon, map_lat)
    inside = (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)
    touches = inside | (sep < radius[finite])
    keep = np.flatnonzero(finite)[touches]
    return [(float(lon[k]), float(lat[k]), sources["frame"], float(radius[k]),
             sources["name"][k]) for k in keep]


def _regions(geom, exclusion):
    circles = [(c.lon, c.lat, c.frame, c.radius) for c in exclusion.regions]
    return (circles_mask(geom, circles) if circles else np.ones(geom.shape, bool)), []


def _files(geom, exclusion):
    mask = np.ones(geom.shape, dtype=bool)
    for path in exclusion.files:
        name = str(path).lower()
        if name.endswith((".fits", ".fits.gz", ".fit", ".fts")):
            mask &= fits_mask(geom, path)
        else:
            mask &= region_file_mask(geom, path)
    return mask, []


def _catalogs(geom, exclusion):
    circles = []
    for cat in exclusion.catalogs:
        sources = read_catalog(cat.file, cat.format, cat.columns, cat.hdu)
        circles += catalog_circles(geom, sources, cat.min_radius, cat.size_factor, cat.margin)
    mask = circles_mask(geom, [c[:4] for c in circles]) if circles else np.ones(geom.shape,
                                                                                bool)
    used = [{"name": c[4], "lon": c[0], "lat": c[1], "frame": c[2], "radius_deg": c[3]}
            for c in circles]
    return mask, used


#: config key -> function ``(geom, exclusion config) -> (mask, sources used)``; the
#: ``exclusion.auto`` step (`grow_exclusion`) comes after them
SOURCES = {"regions": _regions, "files": _files, "catalogs": _catalogs}


def exclusion_mask(geom, exclusion):
    """The combined mask of the config's exclusion sources (`SOURCES`).

    Returns
    -------
    mask : `~numpy.ndarray`
        True where a pixel may be used for the background.
    sources : list of dict
        The catalogue sources excluded (name, position, radius).
    """
    mask = np.ones(geom.shape, dtype=bool)
    used = []
    for fn in SOURCES.values():
        part, listed = fn(geom, exclusion)
        mask &= part
        used += listed
    return mask, used


def hot_pixels(significance, threshold, grow_threshold=None):
    """Pixels above ``threshold``, grown by hysteresis: with ``grow_threshold`` (lower), the
    connected pixels above it that hold a seed above ``threshold`` (as in image
    segmentation, so that extended sources are excluded whole)."""
    from scipy.ndimage import label

    sig = np.nan_to_num(significance, nan=0.0)
    seeds = sig > threshold
    if grow_threshold is None or grow_threshold >= threshold:
        return seeds
    regions, _ = label(sig > grow_threshold)
    keep = np.unique(regions[seeds])
    return np.isin(regions, keep[keep > 0])


def grow_exclusion(auto, exclusion, state, binsize_deg, significance, restack):
    """Automatic exclusion: exclude every pixel above ``auto.threshold`` (grown down to
    ``auto.grow_threshold``, see `hot_pixels`), dilated by ``auto.dilate``, and redo the
    background with the grown mask, until it stops changing or after ``auto.iterations``
    rounds.

    Parameters
    ----------
    auto : `~ringbg.config.AutoExclusion`
        ``threshold``, ``grow_threshold``, ``iterations`` and ``dilate`` (deg).
    exclusion : `~numpy.ndarray`
        The starting mask (True = usable).
    state : object
        What ``significance`` takes: the current stack(s).
    binsize_deg : float
        Pixel size, for the dilation radius.
    significance : callable
        ``significance(state)`` -> significance image.
    restack : callable
        ``restack(mask)`` -> the new state with that mask.

    Returns
    -------
    state, exclusion, iterations
        The last state, its mask and the number of rounds made.
    """
    iterations = 0
    for _ in range(auto.iterations):
        hot = hot_pixels(significance(state), auto.threshold, auto.grow_threshold)
        new = exclusion & ~dilate(hot, auto.dilate / binsize_deg)
        iterations += 1
        if np.array_equal(new, exclusion):
            break
        exclusion = new
        state = restack(exclusion)
    return state, exclusion, iterations


# --------------------------------------------------------------------------------------------
# the config section


class AutoExclusion(_Model):
    threshold: float = Field(5.0, gt=0)
    #: hysteresis: pixels above this, connected to one above ``threshold``, are excluded
    #: too (None: no hysteresis)
    grow_threshold: float | None = Field(None, gt=0)
    iterations: int = Field(3, ge=1, le=50)
    dilate: NonNegativeAngle = 0.1


class Catalog(_Model):
    """A source catalogue whose sources in the map are excluded."""

    file: PathStr
    #: hgps, gammacat, auto (recognised by its columns) or columns (named in ``columns``)
    format: Literal["auto", "hgps", "gammacat", "columns"] = "auto"
    columns: dict[str, str | list[str]] | None = None
    hdu: str | int | None = None
    #: a source's circle: max(min_radius, size_factor * size) + margin
    min_radius: NonNegativeAngle = 0.3
    size_factor: float = Field(3.0, ge=0)
    margin: NonNegativeAngle = 0.1

    @model_validator(mode="after")
    def _file_exists(self):
        if not Path(self.file).is_file():
            raise ValueError(f"file {_absolute(self.file)} does not exist")
        if self.format == "columns" and not self.columns:
            raise ValueError("format 'columns' needs columns: {lon: ..., lat: ..., frame: ...}")
        return self


class Exclusion(_Model):
    regions: list[Circle] = []
    files: list[PathStr] = []
    catalogs: list[Catalog] = []
    auto: AutoExclusion | None = None

    @model_validator(mode="after")
    def _files_exist(self):
        for path in self.files:
            if not Path(path).is_file():
                raise ValueError(f"file {_absolute(path)} does not exist")
        return self
