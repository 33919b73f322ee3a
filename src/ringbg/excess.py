"""Correlated excess, significance, error, upper-limit and flux maps of a stacked on/off image.

Counts are summed in a top-hat of ``correlation_radius`` around each pixel, as gammapy 2.1's
``ExcessMapEstimator``. With ``correlate_off=False`` (the right choice for ring backgrounds,
whose off counts are already ring sums) ``n_off`` is the pixel's own off count and
``alpha = sum_tophat(acceptance) / acceptance_off``; with ``correlate_off=True`` the off counts
are summed too and ``alpha = sum_tophat(alpha * off) / sum_tophat(off)``.
"""

import functools

import numpy as np

from . import stats
from .kernels import convolve, nan_to_num, tophat_kernel

__all__ = ["excess_maps", "excess_map_steps", "flux_weights", "power_law_integral",
           "SENSITIVITY_DEFAULTS"]


def power_law_integral(e_lo_tev, e_hi_tev, index):
    """Integral of ``(E / 1 TeV) ** -index`` between the energies (TeV)."""
    e_lo, e_hi = np.asarray(e_lo_tev, float), np.asarray(e_hi_tev, float)
    if np.isclose(index, 1.0):
        return np.log(e_hi / e_lo)
    g = 1.0 - index
    return (e_hi**g - e_lo**g) / g


#: gammapy 2.1's ExcessMapEstimator defaults of the sensitivity options
SENSITIVITY_DEFAULTS = {"n_sigma": 5.0, "gamma_min": 10.0, "bkg_syst_fraction": 0.05,
                        "apply_threshold": False}


def excess_maps(
    counts,
    counts_off,
    acceptance,
    acceptance_off,
    mask,
    radius_px,
    *,
    correlate_off=False,
    exposure=None,
    energy_edges_tev=None,
    spectral_index=2.0,
    n_sigma=1.0,
    n_sigma_ul=2.0,
    errors=True,
    response=None,
    energy_range_tev=None,
    sensitivity=None,
    jobs=1,
):
    """Correlated maps of a stacked on/off image.

    Parameters
    ----------
    counts, counts_off, acceptance, acceptance_off : `~numpy.ndarray`
        Stacked images.
    mask : `~numpy.ndarray`
        Pixels to use (the safe mask, optionally and-ed with the exclusion mask).
    radius_px : float
        Correlation radius in pixels.
    correlate_off : bool
        Also sum the off counts in the top-hat.
    exposure : `~numpy.ndarray`, optional
        (n_true, ny, nx) stacked exposure in m2 s, for flux maps.
    energy_edges_tev : `~numpy.ndarray`, optional
        True-energy edges of the exposure bins.
    spectral_index : float
        Power-law index assumed for the flux conversion.
    n_sigma, n_sigma_ul : float
        Confidence of the asymmetric errors and of the upper limits.
    errors : bool
        Compute the asymmetric errors and upper limits (root finds).
    response : `~numpy.ndarray`, optional
        (n_true,) probability that a photon of each true-energy bin is counted (reconstructed
        in the range, safe): the energy dispersion; None: 1 (no dispersion).
    energy_range_tev : (float, float), optional
        Reconstructed-energy range of the counts: the flux is the integral flux in it. By
        default the range of ``energy_edges_tev``.
    sensitivity : dict, optional
        Make ``flux_sensitivity``, the flux detected at ``n_sigma`` (default 5) given each
        pixel's background and alpha (gammapy's ``selection_optional=["sensitivity"]``);
        with ``apply_threshold``, at least ``gamma_min`` counts and ``bkg_syst_fraction``
        of the pixel's background (`SENSITIVITY_DEFAULTS`).
    jobs : int
        Local processes for the per-pixel root searches of a large map (same bits).

    Returns
    -------
    maps : dict of `~numpy.ndarray`
        ``counts`` (n_on), ``background``, ``excess``, ``significance``, ``ts``, ``alpha``,
        ``n_off``, ``excess_err``, and when asked ``excess_errn``, ``excess_errp``,
        ``excess_ul``, ``flux``, ``flux_err``, ``flux_ul`` (cm-2 s-1), ``flux_sensitivity``.
        NaN outside ``mask``.
    """
    *_, maps = excess_map_steps(
        counts, counts_off, acceptance, acceptance_off, mask, radius_px,
        correlate_off=correlate_off, exposure=exposure, energy_edges_tev=energy_edges_tev,
        spectral_index=spectral_index, n_sigma=n_sigma, n_sigma_ul=n_sigma_ul, errors=errors,
        response=response, energy_range_tev=energy_range_tev, sensitivity=sensitivity,
        jobs=jobs)
    return maps


def excess_map_steps(counts, counts_off, acceptance, acceptance_off, mask, radius_px, *,
                     correlate_off=False, exposure=None, energy_edges_tev=None,
                     spectral_index=2.0, n_sigma=1.0, n_sigma_ul=2.0, errors=True,
                     response=None, energy_range_tev=None, sensitivity=None, jobs=1):
    """`excess_maps` in two steps: a generator that yields the maps that need no per-pixel
    root search first (``counts``, ``background``, ``excess``, ``significance``, ``ts``,
    ``alpha``, ``n_off``, ``excess_err``, ``flux``, ``flux_err``), then every map of
    `excess_maps` (the same arrays, plus the root searches'), with the same bits.

    Something else can start from the first (figures), while the searches run.
    """
    with np.errstate(all="ignore"):
        quick, later = _quick_maps(counts, counts_off, acceptance, acceptance_off, mask,
                                   radius_px, correlate_off, exposure, energy_edges_tev,
                                   spectral_index, n_sigma, response, energy_range_tev)
    yield dict(quick)
    with np.errstate(all="ignore"):  # not around a yield: the caller's state is its own
        maps = _searched_maps(quick, *later, n_sigma=n_sigma, n_sigma_ul=n_sigma_ul,
                              errors=errors, sensitivity=sensitivity, jobs=jobs)
    yield maps


def flux_weights(energy_edges_tev, spectral_index, response=None, energy_range_tev=None):
    """Expected counts per unit exposure (m2 s) in each true-energy bin, for a power law of
    unit integral flux in the reconstructed-energy range.

    The power law's share of each true-energy bin, times the probability that its photons are
    counted (``response``; 1 without energy dispersion), over the integral in the range:
    gammapy's ``estimate_exposure_reco_energy`` divided by the model's integral flux.
    """
    edges = np.asarray(energy_edges_tev, float)
    fractions = power_law_integral(edges[:-1], edges[1:], spectral_index)
    lo, hi = (edges[0], edges[-1]) if energy_range_tev is None else energy_range_tev
    weights = fractions / power_law_integral(lo, hi, spectral_index)
    if response is not None:
        weights = weights * np.asarray(response, float)
    return weights


#: pixels per call of the per-pixel root searches: their temporaries stay ~100 MB
CHUNK_PIXELS = 1 << 18
#: fewer pixels are not worth starting processes for (~0.15 s of searches)
MIN_PROCESS_PIXELS = 1 << 16


def _by_chunks(fn, *arrays, jobs=1):
    """``fn(*arrays)`` of 1D arrays, element-wise along the last axis of its result,
    `CHUNK_PIXELS` elements at a time; with ``jobs`` > 1 the chunks run on that many local
    processes (``fn`` picklable), with the same bits."""
    from .parallel import map_ordered

    n = arrays[0].size
    # the values do not depend on the chunks: a chunk per process when that is smaller
    chunk = CHUNK_PIXELS if jobs <= 1 else min(CHUNK_PIXELS, max(-(-n // jobs),
                                                                 MIN_PROCESS_PIXELS))
    if n <= chunk:
        return fn(*arrays)
    starts = range(0, n, chunk)
    parts = map_ordered(fn, [tuple(a[s:s + chunk] for a in arrays) for s in starts],
                        jobs=jobs, result_bytes=None)
    return np.concatenate(list(parts), axis=-1)


def _root_searches(n_on, n_off, alpha, pixel_background, n_sigma, n_sigma_ul, errors,
                   sensitivity):
    """The maps that need a root search per pixel, (k, n): ``excess_errn``, ``excess_errp``,
    ``excess_ul`` (with ``errors``) and the sensitivity's excess counts (with
    ``sensitivity``), in that order."""
    out = []
    with np.errstate(all="ignore"):
        if errors:
            out += [stats.excess_errn(n_on, n_off, alpha, n_sigma),
                    stats.excess_errp(n_on, n_off, alpha, n_sigma),
                    stats.excess_upper_limit(n_on, n_off, alpha, n_sigma_ul)]
        if sensitivity is not None:
            out.append(_sensitivity_counts(n_off, alpha, pixel_background, sensitivity))
    return np.array(out).reshape(len(out), -1)


def _sensitivity_counts(n_off, alpha, pixel_background, options):
    """Excess counts of the sensitivity (see `excess_maps`), NaN where alpha is not finite."""
    o = {**SENSITIVITY_DEFAULTS, **(options or {})}
    counts = stats.excess_matching_significance(n_off, alpha, o["n_sigma"])
    if o["apply_threshold"]:
        counts = np.maximum(counts, o["gamma_min"])
        counts = np.maximum(counts, o["bkg_syst_fraction"] * np.nan_to_num(pixel_background))
    return counts


def _quick_maps(counts, counts_off, acceptance, acceptance_off, mask, radius_px, correlate_off,
                exposure, energy_edges_tev, spectral_index, n_sigma, response, energy_range_tev):
    """The maps of `excess_map_steps`' first step (NaN outside ``mask``), and what the
    second needs: ``(mask, pixel background, reco)`` (the pixel background is
    ``alpha_stack * off`` with an exposure, else ``off``; ``reco`` is None without one)."""
    kernel = tophat_kernel(radius_px)
    m = np.asarray(mask, dtype=bool)
    counts = nan_to_num(counts)
    off = nan_to_num(counts_off)
    n_on = convolve(counts * m, kernel, integer=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha_stack = np.where(acceptance_off > 0, acceptance / acceptance_off, 0.0)
        if correlate_off:
            bkg = np.where(acceptance_off == 0, 0.0, alpha_stack * off) * m
            n_off = convolve(off * m, kernel, integer=True)
            alpha = convolve(bkg, kernel) / n_off
        else:
            acc_on = convolve(nan_to_num(acceptance) * m, kernel)
            # gammapy resamples acceptance_off as acc * off / (alpha * off): NaN where off == 0
            acc_off = np.where(off > 0, acceptance_off, np.nan)
            n_off = off * m
            alpha = acc_on / (acc_off * m)
    excess = stats.excess(n_on, n_off, alpha)
    ts = stats.ts(n_on, n_off, alpha)
    out = {
        "counts": n_on,
        "n_off": n_off,
        "alpha": alpha,
        "background": alpha * n_off,
        "excess": excess,
        "ts": ts,
        "significance": np.sign(excess) * np.sqrt(ts),  # `stats.significance`
        "excess_err": n_sigma * stats.excess_error(n_on, n_off, alpha),
    }
    reco = None
    if exposure is not None:
        weights = flux_weights(energy_edges_tev, spectral_index, response, energy_range_tev)
        # expected counts per unit integral flux (cm-2 s-1) in each pixel
        npred_unit = np.tensordot(weights, nan_to_num(exposure), axes=1) * 1e4
        with np.errstate(divide="ignore", invalid="ignore"):
            reco = convolve(npred_unit * m, kernel) / convolve(m.astype(float), kernel)
            # no exposure around the pixel (beyond the IRF's offsets): no flux, NaN (gammapy
            # divides by its FFT's round-off there)
            reco = np.where(reco > 0, reco, np.nan)
            out["flux"] = out["excess"] / reco
            out["flux_err"] = out["excess_err"] / reco
    for name, values in out.items():
        out[name] = np.where(m, values, np.nan)
    return out, (m, alpha_stack * off if exposure is not None else off, reco)


def _searched_maps(out, m, pixel_background, reco, *, n_sigma, n_sigma_ul, errors, sensitivity,
                   jobs):
    """``out`` (the first step's maps, NaN outside ``m``) with the root searches' maps."""
    with_sensitivity = reco is not None and sensitivity is not None
    names = (["excess_errn", "excess_errp", "excess_ul"] if errors else []) + (
        ["sensitivity_counts"] if with_sensitivity else [])
    if not names:
        return out
    # the inputs are NaN outside m already; gammapy's sensitivity threshold takes the
    # background of the pixel (pixel_background), not the correlated one
    valid = m & np.isfinite(out["alpha"])
    searched = _by_chunks(
        functools.partial(_root_searches, n_sigma=n_sigma, n_sigma_ul=n_sigma_ul,
                          errors=errors, sensitivity=sensitivity if with_sensitivity else None),
        out["counts"][valid], out["n_off"][valid], out["alpha"][valid],
        pixel_background[valid], jobs=jobs)
    found = {}
    for name, values in zip(names, searched):
        found[name] = np.full(m.shape, np.nan)
        found[name][valid] = values
    n_sig = found.pop("sensitivity_counts", None)
    if reco is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            if errors:
                found["flux_ul"] = found["excess_ul"] / reco
            if n_sig is not None:
                found["flux_sensitivity"] = n_sig / reco
    for name, values in found.items():
        out[name] = np.where(m, values, np.nan)
    return out
