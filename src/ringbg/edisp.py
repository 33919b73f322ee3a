"""Energy dispersion for the flux maps, as gammapy 2.1's map datasets carry and use it.

gammapy's high-level ``Analysis`` keeps, per observation, an energy-dispersion kernel map on a
coarse IRF grid (``binsize_irf`` = 0.2 deg, with the map's centre and width), cut out around
the pointing like the other maps. ``to_image`` sums each kernel over the safe reconstructed-energy
bins (the fine safe mask looked up at the coarse pixel centres), ``MapDatasetOnOff.stack``
averages the kernels weighted by each observation's exposure on that grid and its on/off safe
mask (here: its safe mask before the ring, see `stack_terms`), and ``ExcessMapEstimator``
folds the power law through the stacked kernel of *one* pixel, the grid's centre (or the
nearest pixel with a kernel), for the whole map.

Here the same numbers on arrays: `observation_response` per observation (in the worker),
`EdispStack` for the running sums, `EdispStack.kernel` for gammapy's choice of pixel.
The kernel itself is `ringbg.irf.edisp_kernel`.
"""

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs.utils import pixel_to_skycoord

from .geom import Geom, point_lookup_pixel
from .irf import aeff_values_m2, edisp_kernel

__all__ = [
    "BINSIZE_IRF_DEG",
    "EdispResponse",
    "EdispStack",
    "IrfGrid",
    "diagonal_kernel",
    "diagonal_response",
    "stack_terms",
    "gammapy_bin_pix",
    "irf_grid",
    "mask_at",
    "observation_response",
]

#: gammapy's ``binsize_irf`` default (``AnalysisConfig`` and ``MapDataset.create``)
BINSIZE_IRF_DEG = 0.2


@dataclass(frozen=True, eq=False)
class IrfGrid:
    """The coarse IRF grid of the energy dispersion.

    Attributes
    ----------
    geom : `~ringbg.geom.Geom`
        The grid (`irf_grid`).
    energy_pix : `~numpy.ndarray`
        Where gammapy looks the safe mask up along the reconstructed-energy axis, for each bin
        (`gammapy_bin_pix`): the bin index up to rounding, which decides whether a bin next to
        safe ones counts as safe in the kernel (see `mask_at`).
    """

    geom: Geom
    energy_pix: np.ndarray

    @property
    def key(self):
        """A string identifying the grid (for cache keys)."""
        return f"{self.geom.key}|{','.join(repr(float(p)) for p in self.energy_pix)}"


def irf_grid(geom, energy_min_tev, energy_max_tev, binsize_deg=BINSIZE_IRF_DEG):
    """The `IrfGrid` of a geometry, as gammapy's ``WcsGeom.to_binsz``.

    Centred on the sky position of the geometry's central pixel, with the geometry's width
    (``n_pix * binsize``) and projection. ``energy_min_tev``, ``energy_max_tev``: the
    configured reconstructed-energy range (``geom.energy``), with ``geom.n_energy`` bins.
    """
    ny, nx = geom.shape
    centre = pixel_to_skycoord((nx - 1) / 2.0, (ny - 1) / 2.0, geom.wcs, origin=0)
    sph = centre.spherical
    width = (nx * geom.binsize_deg, ny * geom.binsize_deg)
    projection = geom.wcs.wcs.ctype[0][5:8]
    grid = Geom.create(float(sph.lon.deg), float(sph.lat.deg), geom.frame, width, binsize_deg,
                       projection, geom.energy_edges_tev)
    return IrfGrid(grid, gammapy_bin_pix(energy_min_tev, energy_max_tev, geom.n_energy))


def gammapy_bin_pix(energy_min_tev, energy_max_tev, nbins):
    """Pixel coordinates of the bin centres of gammapy's log energy axis, as it computes them.

    gammapy's ``MapAxis`` has the edges ``geomspace(min, max, n + 1)``, finds a bin's centre by
    interpolating ``ln E`` at ``index + 0.5`` of the edges and the pixel of a coordinate by
    interpolating back, less 0.5, both with scipy's ``interp1d(kind=1)``: a linear B-spline,
    whose arithmetic is repeated here. The result is the bin index to within rounding (a few
    1e-16, of either sign, or exactly).
    """
    edges = np.geomspace(energy_min_tev, energy_max_tev, nbins + 1)
    x = np.log(edges)
    y = np.arange(nbins + 1, dtype=float)

    def interp1d(xp, fp, xn):
        # de Boor's recursion for degree 1 on the knots (xp[0], xp..., xp[-1])
        i = np.clip(np.searchsorted(xp, xn, side="right") - 1, 0, len(xp) - 2)
        xa, xb = xp[i], xp[i + 1]
        w = 1.0 / (xb - xa)
        return fp[i] * (w * (xb - xn)) + fp[i + 1] * (w * (xn - xa))

    centres = np.exp(interp1d(y, x, np.arange(nbins) + 0.5))
    return interp1d(x, y, np.log(centres)) - 0.5


def diagonal_response(energy_true_edges_tev, energy_min_tev, energy_max_tev):
    """Fraction of each true-energy bin inside ``[energy_min, energy_max]`` (linear in E).

    gammapy's response without energy dispersion (``EDispKernel.from_diagonal_response``
    onto the one reconstructed-energy bin of the range): 1 for bins inside the range.
    """
    e = np.asarray(energy_true_edges_tev, dtype=float)
    lo, hi = e[:-1], e[1:]
    overlap = np.fmin(energy_max_tev, hi) - np.fmax(energy_min_tev, lo)
    return np.clip(overlap, 0.0, None) / (hi - lo)


def diagonal_kernel(energy_true_edges_tev, energy_edges_tev):
    """(n_true, n_reco) kernel without dispersion: the fraction of each true-energy bin in each
    reconstructed-energy bin (gammapy's ``EDispKernelMap.from_diagonal_response``)."""
    e = np.asarray(energy_edges_tev, dtype=float)
    return np.stack([diagonal_response(energy_true_edges_tev, lo, hi)
                     for lo, hi in pairwise(e)], axis=1)


def _linear_weights(pos, n):
    """``[(index, weight), ...]`` of scipy's linear interpolation (extrapolating) on
    ``arange(n)`` at ``pos``; an axis of length one is dropped (gammapy's interpolator)."""
    pos = np.asarray(pos, float)
    if n == 1:
        return [(np.zeros(pos.shape, int), np.ones(pos.shape))]
    i = np.clip(np.searchsorted(np.arange(n), pos, side="right") - 1, 0, n - 2)
    t = pos - i
    return [(i, 1.0 - t), (i + 1, t)]


def mask_at(mask, x, y, energy_pix=None):
    """A boolean image (or cube) looked up at continuous pixel positions, as gammapy's
    ``interp_to_geom(fill_value=None)`` of a mask does it: multilinear in pixel index
    (extrapolating beyond the edges), True where the interpolated value is not zero.

    So a position between a True and a False pixel, or an energy pixel a rounding error away
    from a safe bin, counts as True.

    Parameters
    ----------
    mask : `~numpy.ndarray`
        (ny, nx) or (n, ny, nx) boolean.
    x, y : `~numpy.ndarray`
        0-based positions (any common shape ``s``).
    energy_pix : `~numpy.ndarray`, optional
        (n,) positions along the first axis of a cube (default: exactly the bin indices).

    Returns
    -------
    values : `~numpy.ndarray`
        Shape ``s`` or ``(n,) + s``, boolean.
    """
    m = np.asarray(mask, dtype=float)
    planes = m if m.ndim == 3 else m[None]
    spatial = np.zeros((planes.shape[0],) + np.shape(x))
    for iy, wy in _linear_weights(y, planes.shape[1]):
        for ix, wx in _linear_weights(x, planes.shape[2]):
            spatial += planes[:, iy, ix] * (wy * wx)
    if m.ndim == 2:
        return spatial[0] != 0
    n = planes.shape[0]
    pix = np.arange(n, dtype=float) if energy_pix is None else np.asarray(energy_pix, float)
    value = np.zeros_like(spatial)
    for ie, we in _linear_weights(pix, n):
        value += spatial[ie] * we.reshape((n,) + (1,) * (spatial.ndim - 1))
    return value != 0


@dataclass
class EdispResponse:
    """One observation's energy-dispersion kernel on its cutout of the IRF grid.

    Attributes
    ----------
    slices : tuple of slice
        The cutout of the IRF grid.
    kernel : `~numpy.ndarray`
        (n_true, n_reco, ny, nx): probability of reconstruction in each reconstructed-energy
        bin, zero in the bins that are not safe at the pixel (gammapy's ``to_image`` weights).
    exposure : `~numpy.ndarray`
        (n_true, ny, nx) exposure (m2 s) at the IRF pixels: the stacking weights.
    x, y : `~numpy.ndarray`
        (ny, nx) positions of the IRF pixel centres in the observation's fine cutout (0-based
        pixels), where its safe mask is looked up when stacking.
    diagonal : bool
        The observation has no energy dispersion: the kernel is `diagonal_kernel`.
    """

    slices: tuple
    kernel: np.ndarray
    exposure: np.ndarray
    x: np.ndarray
    y: np.ndarray
    diagonal: bool = False


def observation_response(obs, geom, fine_slices, mask_safe, grid, energy_true_edges_tev,
                         cutout_width_deg):
    """The `EdispResponse` of one observation (None when its cutout misses the IRF grid).

    Parameters
    ----------
    obs : `~ringbg.dl3.Observation`
        The observation; without ``obs.edisp`` its kernel is the diagonal one.
    geom : `~ringbg.geom.Geom`
        The full (fine) geometry.
    fine_slices : tuple of slice
        The observation's cutout of ``geom``.
    mask_safe : `~numpy.ndarray`
        (n_reco, ny, nx) safe mask on the fine cutout.
    grid : `IrfGrid`
        The IRF grid.
    energy_true_edges_tev : `~numpy.ndarray`
        True-energy bin edges.
    cutout_width_deg : float
        The cutout width (2 offset_max); the IRF cutout is at least three IRF pixels wide.
    """
    irf = grid.geom
    width = max(cutout_width_deg, 3 * irf.binsize_deg)
    slices = irf.cutout_slices(obs.pointing_ra_deg, obs.pointing_dec_deg, width)
    if slices is None:
        return None
    offset = irf.pointing_frame(slices, obs.pointing_ra_deg, obs.pointing_dec_deg)[2]
    if obs.edisp is None:
        kernel = diagonal_kernel(energy_true_edges_tev, geom.energy_edges_tev)
        kernel = np.repeat(np.repeat(kernel[:, :, None, None], offset.shape[0], axis=2),
                           offset.shape[1], axis=3)
    else:
        kernel = edisp_kernel(obs.edisp, offset, energy_true_edges_tev, geom.energy_edges_tev)
        kernel = np.ascontiguousarray(np.moveaxis(kernel, (-2, -1), (0, 1)))
    centers = np.sqrt(energy_true_edges_tev[:-1] * energy_true_edges_tev[1:])
    exposure = aeff_values_m2(obs.aeff, centers, offset, scale=obs.livetime_s)
    sy, sx = slices
    lon, lat = (a[sy, sx] for a in irf.lonlat_deg)
    x, y = geom.world_to_pix(lon.ravel(), lat.ravel(), geom.frame)
    x = x.reshape(lon.shape) - fine_slices[1].start
    y = y.reshape(lon.shape) - fine_slices[0].start
    kernel *= mask_at(mask_safe, x, y, grid.energy_pix)[None]
    return EdispResponse(slices, kernel, exposure, x, y, diagonal=obs.edisp is None)


def stack_terms(response, mask, band=None):
    """What an observation's `EdispResponse` adds to an `EdispStack` (of reconstructed-energy
    bin ``band``, or all bins): ``(slices, weighted kernel, exposure)`` on the IRF grid, the
    weight being its safe ``mask`` (fine cutout) looked up on the grid.

    The pipeline passes the safe image before the ring: gammapy weights with the on/off mask,
    from which pixels whose ring lies wholly in the exclusion drop only where its FFT
    round-off is not positive (ringbg drops them all, README differences); with the mask
    before the ring they leave no hole in the response at the map centre."""
    w = mask_at(mask, response.x, response.y)[None]
    if band is None:
        # bin by bin, in order: the same bits whatever the memory layout
        kernel = np.zeros(response.exposure.shape)
        for j in range(response.kernel.shape[1]):
            kernel += response.kernel[:, j]
    else:
        kernel = response.kernel[:, band]
    return response.slices, kernel * response.exposure * w, response.exposure * w


class EdispStack:
    """Running exposure-weighted sums of observation kernels on the IRF grid.

    ``band``: stack only that reconstructed-energy bin (per-band maps); otherwise the kernels
    are summed over the reconstructed-energy bins (gammapy's image datasets).
    """

    def __init__(self, grid, n_true, band=None):
        self.irf = irf = grid.geom
        self.band = band
        shape = (n_true,) + tuple(irf.shape)
        self.weighted = np.zeros(shape)
        self.exposure = np.zeros(shape)

    def add(self, response, mask):
        """Add an observation's `EdispResponse`; ``mask``: its safe mask (fine cutout)."""
        if response is not None:
            self.add_terms(stack_terms(response, mask, self.band))

    def add_terms(self, terms):
        """Add what `stack_terms` made of an observation's response."""
        slices, weighted, exposure = terms
        sl = (slice(None),) + tuple(slices)
        self.weighted[sl] += weighted
        self.exposure[sl] += exposure

    def kernel_map(self):
        """The stacked kernel (n_true, ny, nx) on the IRF grid (0 where nothing was stacked)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nan_to_num(self.weighted / self.exposure)

    def kernel(self):
        """The response (n_true,) that gammapy's ``ExcessMapEstimator`` uses for the map.

        The stacked kernel at the centre of the IRF grid; where no observation left a kernel
        there, at the nearest pixel that has one (``IRFMap._get_nearest_valid_position``).
        gammapy reads it at a point region (``to_region_nd_map``): at the centre of the
        point's pixel bounding box (regions' ``RegionBoundingBox``: the nearest pixel centre,
        or the point itself on a pixel edge, as the centre of an even-sized grid is), taken
        back to the sky and to pixels, then the nearest pixel (ties down, scipy's
        interpolator). The same astropy calls give the same floats: on an edge, which
        neighbour is taken depends on their last bits. Where the pixel read has no kernel
        (gammapy tested the one rounded up), ringbg reads the nearest that has one; gammapy
        reads zeros (README, differences).
        """
        kernel = self.kernel_map()
        valid = (kernel > 0).any(axis=0)
        ny, nx = self.irf.shape
        wcs = self.irf.wcs
        centre = pixel_to_skycoord((nx - 1) / 2.0, (ny - 1) / 2.0, wcs, origin=0)
        x, y = _sky_to_pix(wcs, centre)
        # the validity test rounds to the closest pixel (ties up) ...
        ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        inside = 0 <= ix < nx and 0 <= iy < ny
        position = centre
        if not (inside and valid[iy, ix]) and valid.any():
            position = self._nearest_valid(valid, centre)
        # ... and the lookup is gammapy's at a point region
        j, i = point_lookup_pixel(wcs, (ny, nx), position)
        if not valid[j, i] and valid.any():
            # the pixel tested (ties up) has a kernel, the one read (ties down) has none:
            # gammapy reads zeros there (and its flux maps are NaN); ringbg the nearest pixel
            # that has one
            j, i = point_lookup_pixel(wcs, (ny, nx), self._nearest_valid(valid, centre))
        return kernel[:, j, i]

    def _nearest_valid(self, valid, position):
        """The centre of the pixel with a kernel nearest to ``position`` by astropy's
        separation, as gammapy's ``mask_nearest_position``: when two are at the same
        distance (a centre on a pixel corner), the first in the flattened order with the
        smallest of astropy's floats."""
        plon, plat = self.irf.lonlat_deg
        sep = SkyCoord(plon, plat, unit="deg", frame=position.frame).separation(position).deg
        sep[~valid] = np.inf
        j = int(np.argmin(sep))
        return SkyCoord(float(plon.flat[j]), float(plat.flat[j]), unit="deg",
                        frame=position.frame)


def _sky_to_pix(wcs, position):
    """Pixel (x, y) of a sky position as gammapy's ``WcsGeom.coord_to_pix``."""
    lon, lat = position.spherical.lon.deg, position.spherical.lat.deg
    x, y = wcs.wcs_world2pix(np.atleast_1d(lon), np.atleast_1d(lat), 0)
    return float(x[0]), float(y[0])
