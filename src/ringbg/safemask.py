"""Safe masks: which energy bins and pixels of an observation's cutout may be used.

Each method of gammapy 2.1's ``SafeMaskMaker`` is a function in `METHODS` (name -> function of
the observation, its `Cutout` and the parameters, returning a boolean mask that broadcasts to
the cutout's cube); the config's allowed ``safe_mask.methods`` are this table's keys. A new
method is a function and a row here (and a test in ``tests/test_safemask.py``).
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from .configtypes import PositiveAngle, _Model
from .errors import DL3Error
from .geom import point_lookup_pixel
from .irf import aeff_values_m2

__all__ = ["Cutout", "METHODS", "safe_mask", "cutout_center_pixel", "SafeMask", "SafeMaskParameters"]


@dataclass(frozen=True)
class Cutout:
    """What the methods may look at: the geometry and an observation's cutout of it.

    ``offset_deg`` (ny, nx): pixel offsets from the pointing; ``background`` and
    ``exposure_m2s`` (n_energy, ny, nx): the reduced cubes (exposure on the true-energy
    centres; None: computed from the IRF when a method needs it).
    """

    geom: object
    slices: tuple
    offset_deg: np.ndarray
    background: np.ndarray
    exposure_m2s: np.ndarray | None = None
    #: the true-energy bin centres of ``exposure_m2s`` (None: the geometry's energy centres)
    energy_true_center_tev: np.ndarray | None = None


def _energy_mask(edges, energy_min=None, energy_max=None):
    mask = np.ones(len(edges) - 1, dtype=bool)
    if energy_min is not None:
        mask &= edges[:-1] >= energy_min
    if energy_max is not None:
        mask &= edges[1:] <= energy_max
    return mask


def _aeff_max_threshold_dl3(aeff, percent):
    """Lowest IRF energy edge where the on-axis effective area exceeds ``percent`` of its max
    (gammapy's ``SafeMaskMaker(irfs="DL3")``)."""
    edges_tev = np.exp(aeff.energy.edges)
    values = aeff_values_m2(aeff, edges_tev, np.zeros(1))[:, 0]
    valid = edges_tev[values > percent * np.max(values) / 100]
    return float(np.min(valid)) if len(valid) else None


def _log_log_interpolant(x, y):
    """``f(x0)``: linear interpolation of ``ln y`` in ``ln x``, extrapolated beyond the ends;
    ``y`` is clipped at the float tiny before the log and results at tiny become 0 (the
    log scale of gammapy's ``TemplateSpectralModel``)."""
    tiny = np.finfo(float).tiny
    log_x = np.log(x)
    log_y = np.log(np.clip(y, tiny, None))

    def f(x0):
        lx = np.log(np.asarray(x0, float))
        if len(log_x) == 1:
            out = np.full(lx.shape, log_y[0])
        else:
            k = np.clip(np.searchsorted(log_x, lx, side="right") - 1, 0, len(log_x) - 2)
            t = (lx - log_x[k]) / (log_x[k + 1] - log_x[k])
            out = log_y[k] + t * (log_y[k + 1] - log_y[k])
        value = np.exp(out)
        return np.where(np.abs(value) - tiny <= tiny, 0.0, value)

    return f


def _first_crossing(f, level, x_min, x_max, n_grid=100):
    """Lowest root of ``f(x) = level`` in [x_min, x_max]: a sign change on ``n_grid`` log
    steps, then Brent's method in that step (gammapy's ``find_roots``); NaN without one."""
    from scipy.optimize import brentq

    grid = np.exp(np.linspace(np.log(x_min), np.log(x_max), n_grid + 1))
    signs = np.sign(f(grid) - level)
    change = np.nonzero(signs[:-1] != signs[1:])[0]
    if len(change) == 0:
        return np.nan
    k = int(change[0])
    try:
        return float(brentq(lambda x: float(f(np.array([x]))[0] - level), grid[k], grid[k + 1]))
    except (RuntimeError, ValueError):
        return np.nan


def _aeff_max_threshold_dl4(exposure_m2s, livetime_s, energy_true_center_tev, center, percent):
    """Energy where the effective area at the cutout centre pixel, from the exposure cube,
    reaches ``percent`` of its maximum (gammapy's ``SafeMaskMaker(irfs="DL4")``).

    The area spectrum is interpolated log-log between the true-energy bin centres; the
    threshold is the lowest crossing between the first non-zero centre and the last centre
    (the first non-zero centre itself when there is none). None: no area at that pixel.
    """
    j, i = center
    aeff_m2 = exposure_m2s[:, j, i] / livetime_s
    positive = np.nonzero(aeff_m2 > 0)[0]
    if len(positive) == 0:
        return None
    energy_min = float(energy_true_center_tev[positive[0]])
    level = percent / 100 * np.max(aeff_m2)
    f = _log_log_interpolant(energy_true_center_tev, aeff_m2)
    root = _first_crossing(f, level, energy_min, float(energy_true_center_tev[-1]))
    return energy_min if np.isnan(root) else root


def cutout_center_pixel(geom, slices):
    """``(j, i)`` of the cutout pixel gammapy reads the exposure at for the aeff-max DL4
    threshold: ``exposure.get_spectrum(geom.center_skydir)``, the centre's sky position
    (``SkyCoord.from_pixel``) read as a point region (`ringbg.geom.point_lookup_pixel`: on a
    cutout of even size the centre is on a pixel corner, and the neighbour read depends on
    the round trip's last bits)."""
    from astropy.coordinates import SkyCoord

    sy, sx = slices
    wcs = geom.sub_wcs(slices)
    shape = (sy.stop - sy.start, sx.stop - sx.start)
    centre = SkyCoord.from_pixel((shape[1] - 1) / 2, (shape[0] - 1) / 2, wcs)
    return point_lookup_pixel(wcs, shape, centre)


def _bkg_peak_threshold_dl3(bkg):
    """Lower edge of the IRF energy bin with the highest offset-integrated background rate,
    as gammapy's ``SafeMaskMaker(irfs="DL3")``: ``Background3D.to_2d`` (the file's values,
    without the missing-energy fill, in the FoV latitude bin that holds 0 and the longitude
    bins from the one that holds 0 on, these bins' edges as offsets), integrated over the
    offset bins as its ``integral``: the cumulative sum of ``2 pi offset d_offset`` times the
    rate, bin centres and widths, at the last edge."""
    values = np.asarray(bkg.values, dtype=float)
    if bkg.is_3d:
        lon, lat = bkg.spatial
        i, j = (_bin_holding_zero(axis.edges) for axis in (lon, lat))
        profile = values[:, i:, j]
        edges = np.asarray(lon.edges[i:], dtype=float)
    else:
        profile = values
        edges = np.asarray(bkg.spatial[0].edges, dtype=float)
    centre = (edges[:-1] + edges[1:]) / 2
    spectrum = np.cumsum(2 * np.pi * centre * (profile * np.diff(edges)), axis=1)[:, -1]
    idx = int(np.argmax(spectrum))
    return float(np.exp(bkg.energy.edges[idx]))


def _bin_holding_zero(edges):
    """Index of the bin whose [lower, upper) edges hold 0 (``MapAxis.coord_to_idx``), within
    the axis."""
    return int(np.clip(np.digitize(0.0, edges) - 1, 0, len(edges) - 2))


def _bkg_peak_threshold_dl4(background, energy_edges_tev):
    """Lower edge of the reconstructed-energy bin where the cutout's predicted background,
    summed over its pixels, peaks (gammapy's ``SafeMaskMaker(irfs="DL4")``)."""
    spectrum = np.nansum(background.reshape(background.shape[0], -1), axis=1)
    return float(energy_edges_tev[int(np.argmax(spectrum))])


def _offset_max(obs, cutout, parameters):
    """Pixels closer to the pointing than ``offset_max_deg`` (default 3, gammapy's)."""
    offset_max = float(parameters.get("offset_max_deg", 3.0))
    return (cutout.offset_deg < offset_max)[None]


def _aeff_default(obs, cutout, parameters):
    """Energy bins inside the LO_THRES / HI_THRES of the effective-area header."""
    edges = cutout.geom.energy_edges_tev
    return _energy_mask(edges, obs.aeff.lo_thres_tev or None,
                        obs.aeff.hi_thres_tev or None)[:, None, None]


def _aeff_max(obs, cutout, parameters):
    """Energy bins above the energy where the effective area reaches ``aeff_percent`` of its
    maximum: on axis from the IRF (``irfs="DL3"``) or at the cutout centre from the exposure
    (``irfs="DL4"``, gammapy's default; no area there: nothing is safe)."""
    geom = cutout.geom
    percent = float(parameters.get("aeff_percent", 10.0))
    if parameters.get("irfs", "DL4") == "DL3":
        threshold = _aeff_max_threshold_dl3(obs.aeff, percent)
    else:
        exposure, centers = cutout.exposure_m2s, cutout.energy_true_center_tev
        if centers is None:
            centers = geom.energy_center_tev
        if exposure is None:
            exposure = aeff_values_m2(obs.aeff, centers, cutout.offset_deg, scale=obs.livetime_s)
        threshold = _aeff_max_threshold_dl4(exposure, obs.livetime_s, centers,
                                            cutout_center_pixel(geom, cutout.slices), percent)
        if threshold is None:
            return np.zeros((1, 1, 1), dtype=bool)
    return _energy_mask(geom.energy_edges_tev, threshold)[:, None, None]


def _bkg_peak(obs, cutout, parameters):
    """Energy bins from the peak of the background spectrum up: of the IRF (``irfs="DL3"``)
    or of the cutout's background cube (``irfs="DL4"``, gammapy's default)."""
    edges = cutout.geom.energy_edges_tev
    if parameters.get("irfs", "DL4") == "DL3":
        if obs.bkg is None:
            raise DL3Error(f"observation {obs.obs_id}: bkg-peak with irfs DL3 needs a "
                           "background IRF (use irfs: DL4, the background template's peak)")
        threshold = _bkg_peak_threshold_dl3(obs.bkg)
    else:
        threshold = _bkg_peak_threshold_dl4(cutout.background, edges)
    return _energy_mask(edges, threshold)[:, None, None]


#: name -> method, in gammapy's order; the config's allowed values
METHODS = {
    "offset-max": _offset_max,
    "aeff-default": _aeff_default,
    "aeff-max": _aeff_max,
    "bkg-peak": _bkg_peak,
}


def safe_mask(obs, cutout, methods, parameters):
    """Safe mask (n_energy, ny, nx) as gammapy's ``SafeMaskMaker`` for ``methods``.

    Pixels without a finite positive background are never safe; each method's mask is
    and-ed in. ``parameters``: ``offset_max_deg``, ``aeff_percent``, ``irfs`` (see the
    methods).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown safe mask methods {sorted(unknown)}")
    background = cutout.background
    mask = np.isfinite(background) & (background > 0)
    for name in METHODS:
        if name in methods:
            mask &= METHODS[name](obs, cutout, parameters)
    return mask


# --------------------------------------------------------------------------------------------
# the config section


class SafeMaskParameters(_Model):
    aeff_percent: float = Field(10.0, gt=0, le=100)
    #: None: geom.offset_max (the cutout half-width)
    offset_max: PositiveAngle | None = None
    #: "DL4": aeff-max and bkg-peak from the reduced cubes (gammapy's default), "DL3": from
    #: the IRFs on axis
    irfs: Literal["DL3", "DL4"] = "DL4"


class SafeMask(_Model):
    methods: list[Literal[tuple(METHODS)]] = ["aeff-default"]
    parameters: SafeMaskParameters = SafeMaskParameters()
