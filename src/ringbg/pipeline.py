"""The whole workflow: data store -> per-observation reduction and ring -> stack -> maps.

`run` is the Python API behind ``ringbg run``: it returns a `Result` holding the stacked
images, the correlated maps (arrays with their WCS), the summary and a ``write`` method.
"""

import logging
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .config import load_config
from .datastore import DataStore, DataStoreError
from .errors import RunError
from .version import __version__
from .dl3 import DL3Error, discard_prefetched, prefetch
from .edisp import EdispStack, diagonal_response, irf_grid
from .exclusion import dilate, exclusion_mask
from .excess import excess_maps
from .geom import Geom, energy_edges_tev, to_frame
from .parallel import keep_freed_memory, map_ordered
from .reduce import reduce_observation
from .ring import adaptive_ring_background, adaptive_ring_radii, ring_background, to_image
from .stack import Stack
from .stats import fit_gaussian

__all__ = ["run", "Result", "RunError", "make_geom", "fit_off_distribution"]

log = logging.getLogger(__name__)


def make_geom(config):
    """The full `~ringbg.geom.Geom` of a config."""
    g = config.geom
    edges = energy_edges_tev(g.energy.min, g.energy.max, g.energy.nbins)
    return Geom.create(g.skydir.lon, g.skydir.lat, g.skydir.frame, g.width_deg, g.binsize,
                       g.projection, edges)


def make_energy_true_edges(config):
    """True-energy bin edges (TeV) of the exposure: ``geom.energy_true``, else ``geom.energy``."""
    a = config.geom.energy_true_axis
    return energy_edges_tev(a.min, a.max, a.nbins)


@lru_cache(maxsize=4)
def _datastore_cached(path, stamp):
    return DataStore.from_dir(path)


def _datastore(path):
    """The data store of ``path``, read again when its index files change."""
    stamp = []
    for name in ("obs-index.fits.gz", "obs-index.fits", "hdu-index.fits.gz", "hdu-index.fits"):
        try:
            st = os.stat(os.path.join(os.path.expandvars(str(path)), name))
            stamp.append((name, st.st_size, st.st_mtime_ns))
        except OSError:
            pass
    return _datastore_cached(path, tuple(stamp))


_GEOMS = {}


def _shared_geom(geom):
    """One `Geom` per distinct geometry in this process, so its cached pixel coordinates
    and solid angles are computed once per worker, not once per observation."""
    key = geom.key
    if key not in _GEOMS:
        _GEOMS.clear()
        _GEOMS[key] = geom
    return _GEOMS[key]


def process_observation(store_dir, obs_id, geom, offset_max_deg, methods, parameters,
                        cache_dir=None, prefetch_id=None, energy_true_edges_tev=None, irf=None):
    """Load and reduce one observation; returns ``(obs_id, reduced or None, error or None)``.

    Runs in worker processes: errors in the observation's files come back as text. With
    ``cache_dir``, a cached reduction is used when its key matches (see `ringbg.cache`).
    ``prefetch_id``: an observation whose files are read ahead in a background thread.
    ``energy_true_edges_tev``: the exposure's true-energy axis (default: the reconstructed
    one); ``irf``: the IRF grid on which to compute the energy-dispersion response (None: no
    energy dispersion is read).
    """
    from . import cache

    keep_freed_memory()
    geom = _shared_geom(geom)
    try:
        store = _datastore(store_dir)
        if prefetch_id is not None and cache_dir is None:
            prefetch(loc[0] for loc in store.hdu_locations(prefetch_id).values())
        key = None
        if cache_dir is not None:
            paths = [loc[0] for loc in store.hdu_locations(obs_id).values()]
            key = cache.cache_key(obs_id, paths, geom, offset_max_deg, methods, parameters,
                                  energy_true_edges_tev, irf)
            cached = cache.load(cache_dir, obs_id, key)
            if cached is not None:
                return obs_id, cached, None
        obs = store.load(obs_id, edisp=irf is not None)
        reduced = reduce_observation(obs, geom, offset_max_deg, methods, parameters,
                                     energy_true_edges_tev, irf)
        if key is not None and reduced is not None:
            cache.save(cache_dir, reduced, key)
    except (DL3Error, ValueError, KeyError, IndexError, OSError) as exc:
        return obs_id, None, str(exc)
    except Exception as exc:  # an unforeseen problem of one observation must not stop the run
        log.debug("observation %s", obs_id, exc_info=True)
        first = str(exc).splitlines()[0] if str(exc) else ""
        return obs_id, None, f"unexpected {type(exc).__name__}: {first}"
    if reduced is None:
        return obs_id, None, "its cutout does not overlap the map (pointing far outside it)"
    return obs_id, reduced, None


def fit_off_distribution(values):
    """Gaussian fit of significance values (`ringbg.stats.fit_gaussian`, gammapy's
    procedure) plus the plain sample mean and standard deviation."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    out = fit_gaussian(values)
    out["sample_mean"] = float(values.mean()) if values.size else np.nan
    out["sample_std"] = float(values.std()) if values.size else np.nan
    return out


@dataclass
class Result:
    """What a run produced: stacked images, maps (2D arrays on ``geom``), summary."""

    config: object
    geom: Geom
    stack: Stack
    maps: dict
    exclusion: np.ndarray
    summary: dict
    observations: list
    off_significance: np.ndarray | None = None
    band_maps: list = field(default_factory=list)
    per_observation: list = field(default_factory=list)
    #: true-energy bin edges (TeV) of ``stack.exposure`` (None: the geometry's energy edges)
    energy_true_edges_tev: np.ndarray | None = None
    #: the response folded into the flux maps, per true-energy bin (None: one)
    flux_response: np.ndarray | None = None

    @property
    def wcs(self):
        return self.geom.wcs

    def write(self, outdir=None, overwrite=None, figures=None):
        """Write all outputs into ``outdir`` (atomically: a temporary folder renamed at the end)."""
        from .outputs import write_outputs

        return write_outputs(self, outdir, overwrite=overwrite, figures=figures)


def available_memory_bytes():
    """Memory available to this run (MemAvailable on Linux, physical memory elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_estimate_bytes(config, geom, jobs):
    """Rough peak memory of a run: full-map arrays plus the cutouts in flight."""
    npix = geom.shape[0] * geom.shape[1]
    n_e = geom.n_energy
    n_true = config.geom.energy_true_axis.nbins
    bands = n_e if config.excess.energy_bands else 0
    # stack sums and exposure, ~40 full-size float64 maps in the excess step, band stacks
    full = npix * 8 * (6 + n_true + 40 + bands * (6 + n_true))
    cut = int(np.round(2 * config.geom.offset_max / geom.binsize_deg)) ** 2
    cut = min(cut, npix)
    # cubes of one reduced observation (counts, background, mask, temporaries; exposure)
    per_obs = cut * (n_e * (4 + 8 + 1 + 3 * 8) + n_true * 8)
    in_flight = 2 * max(jobs, 1) + 1
    return int(full + per_obs * in_flight + 300e6)


def _ring_fn(config, binsize_deg):
    ring = config.ring
    r_in_px, width_px = ring.r_in / binsize_deg, ring.width / binsize_deg
    if ring.adaptive is None:
        return lambda image, excl: ring_background(image, excl, r_in_px, width_px)
    a = ring.adaptive
    rings = adaptive_ring_radii(r_in_px, width_px, a.r_out_max / binsize_deg,
                                a.stepsize / binsize_deg, a.method)
    if not rings:
        raise RunError("ring.adaptive: no candidate ring between r_in and r_out_max")
    theta_px = a.theta / binsize_deg
    return lambda image, excl: adaptive_ring_background(image, excl, rings, theta_px,
                                                        a.threshold_alpha)


def _stack_images(images, responses, exclusion, ring_fn, geom, edisp_stack):
    stack = Stack(geom.shape, images[0].exposure.shape[0])
    for image, response in zip(images, responses):
        onoff = ring_fn(image, exclusion[image.slices])
        stack.add(onoff)
        if edisp_stack is not None:
            edisp_stack.add(response, onoff.mask)
    return stack


def _flux_response(config, geom, e_true, edisp_stack):
    """Per true-energy bin probability of reconstruction in the range, for the flux maps:
    gammapy's stacked kernel (``excess.edisp``), else the diagonal response (None when it is
    one everywhere, i.e. the true axis is the reconstructed one)."""
    if edisp_stack is not None:
        return edisp_stack.kernel()
    e = geom.energy_edges_tev
    if len(e_true) == len(e) and np.array_equal(e_true, e):
        return None
    return diagonal_response(e_true, e[0], e[-1])


def _maps(stack, geom, config, mask, e_true=None, response=None):
    e = config.excess
    e_true = geom.energy_edges_tev if e_true is None else e_true
    return excess_maps(
        stack.counts, stack.counts_off, stack.acceptance, stack.acceptance_off, mask,
        e.correlation_radius / geom.binsize_deg, e.correlate_off, stack.exposure,
        e_true, e.spectral_index, 1.0, e.n_sigma_ul, response=response,
        energy_range_tev=(geom.energy_edges_tev[0], geom.energy_edges_tev[-1]),
    )


def _obs_row(store, obs_id, status, reason=""):
    info = store.obs_info(obs_id)
    return {
        "obs_id": int(obs_id),
        "object": str(info.get("OBJECT", "")),
        "ra_deg": float(info.get("RA_PNT", np.nan)),
        "dec_deg": float(info.get("DEC_PNT", np.nan)),
        "livetime_s": float(info.get("LIVETIME", np.nan)),
        "zenith_deg": float(info.get("ZEN_PNT", np.nan)),
        "status": status,
        "reason": reason,
    }


def select_observations(store, config):
    """Observation ids of the config, and the skipped ids with reasons."""
    o = config.observations
    skipped = []
    if o.obs_ids is not None:
        for obs_id in store.missing_ids(o.obs_ids):
            log.warning("observation %s is not in the observation index: skipped", obs_id)
            skipped.append((obs_id, "not in the observation index"))
    cone = None
    if o.cone is not None:
        cone = (o.cone.lon, o.cone.lat, o.cone.frame, o.cone.radius)
    ids = store.select(o.obs_ids, cone)
    return ids, skipped


def run(config, jobs=None, progress=False, cache_dir=None):
    """Run the ring-background workflow of a config (path, YAML text, dict or `Config`).

    Parameters
    ----------
    config : str, dict or `~ringbg.config.Config`
        The configuration.
    jobs : int, optional
        Overrides ``parallel.jobs``.
    progress : bool
        Show a progress bar over observations.
    cache_dir : str or path, optional
        Keep per-observation reductions there and reuse them on the next run.

    Returns
    -------
    result : `Result`
    """
    config = load_config(config)
    keep_freed_memory()
    timings = {}
    t_start = time.perf_counter()
    try:
        store = _datastore(config.datastore)
    except DataStoreError as exc:
        raise RunError(str(exc)) from None
    obs_ids, skipped = select_observations(store, config)
    if not obs_ids:
        raise RunError(
            f"no observation selected in {config.datastore} (check observations.obs_ids and "
            "observations.cone)"
        )
    timings["observations"] = time.perf_counter() - t_start

    t0 = time.perf_counter()
    geom = make_geom(config)
    jobs = config.parallel.jobs if jobs is None else jobs
    need, have = memory_estimate_bytes(config, geom, jobs), available_memory_bytes()
    if have is not None and need > have:
        raise RunError(
            f"geom: a {geom.shape[1]} x {geom.shape[0]} pixel map with {geom.n_energy} energy "
            f"bins needs about {need / 1e9:.1f} GB, but {have / 1e9:.1f} GB are available; use "
            "a larger geom.binsize, a smaller geom.width or fewer energy bins"
        )
    circles = [(c.lon, c.lat, c.frame, c.radius) for c in config.exclusion.regions]
    try:
        exclusion = exclusion_mask(geom, circles, config.exclusion.files)
    except (ValueError, OSError) as exc:
        raise RunError(f"exclusion.files: {exc}") from None
    ring_fn = _ring_fn(config, geom.binsize_deg)
    timings["setup"] = time.perf_counter() - t0

    n_bands = geom.n_energy if config.excess.energy_bands else 0
    keep_images = config.exclusion.auto is not None
    e_true = make_energy_true_edges(config)
    n_true = len(e_true) - 1
    energy = config.geom.energy
    irf = irf_grid(geom, energy.min, energy.max) if config.excess.edisp else None
    stack = Stack(geom.shape, n_true)
    band_stacks = [Stack(geom.shape, n_true) for _ in range(n_bands)]
    edisp_stack = None if irf is None else EdispStack(irf, n_true)
    band_edisp = [None if irf is None else EdispStack(irf, n_true, band) for band in
                  range(n_bands)]
    images, band_images, responses, per_obs = [], [[] for _ in range(n_bands)], [], []
    used, no_edisp = [], []
    t_reduce = time.perf_counter()
    sm = config.safe_mask
    params = {"aeff_percent": sm.parameters.aeff_percent,
              "offset_max_deg": sm.parameters.offset_max}
    in_process = jobs <= 1 and config.parallel.address is None
    following = obs_ids[1:] + [None] if in_process else [None] * len(obs_ids)
    tasks = [(config.datastore, obs_id, geom, config.geom.offset_max, tuple(sm.methods), params,
              None if cache_dir is None else str(cache_dir), next_id, e_true, irf)
             for obs_id, next_id in zip(obs_ids, following)]
    results = map_ordered(process_observation, tasks, jobs, config.parallel.address)
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=len(tasks), unit="obs", desc="observations")
    ring_time = 0.0
    safe_pixels = no_ring_pixels = 0
    for obs_id, reduced, error in results:
        if error is not None:
            log.warning("observation %s skipped: %s", obs_id, error)
            skipped.append((obs_id, error))
            continue
        t1 = time.perf_counter()
        image = to_image(reduced)
        onoff = ring_fn(image, exclusion[image.slices])
        safe_pixels += int(image.mask.sum())
        no_ring_pixels += int(np.sum(image.mask & ~onoff.mask))
        stack.add(onoff)
        if edisp_stack is not None:
            if reduced.edisp is not None and reduced.edisp.diagonal:
                no_edisp.append(obs_id)
            edisp_stack.add(reduced.edisp, onoff.mask)
        if config.output.per_observation:
            per_obs.append(onoff)
        if keep_images:
            images.append(image)
            responses.append(reduced.edisp)
        for band in range(n_bands):
            band_image = to_image(reduced, band)
            band_onoff = ring_fn(band_image, exclusion[band_image.slices])
            band_stacks[band].add(band_onoff)
            if band_edisp[band] is not None:
                band_edisp[band].add(reduced.edisp, band_onoff.mask)
            if keep_images:
                band_images[band].append(band_image)
        ring_time += time.perf_counter() - t1
        used.append(obs_id)
    if not used:
        reasons = "; ".join(f"{i}: {r}" for i, r in skipped[:3])
        raise RunError(f"no observation could be used ({reasons})")
    discard_prefetched()
    if no_edisp:
        ids = ", ".join(str(i) for i in no_edisp[:20]) + (", ..." if len(no_edisp) > 20 else "")
        log.warning("observation%s %s: no energy dispersion (no 'edisp' HDU in the HDU index); "
                    "%s the flux maps without dispersion (excess.edisp)",
                    "s" if len(no_edisp) > 1 else "", ids,
                    "they enter" if len(no_edisp) > 1 else "it enters")
    if no_ring_pixels > 0.5 * safe_pixels:
        log.warning(
            "%.0f%% of the observations' safe pixels have no off estimate: no ring has enough "
            "acceptance outside the exclusion mask%s", 100 * no_ring_pixels / safe_pixels,
            " (ring.adaptive: raise threshold_alpha or r_out_max, or lower theta)"
            if config.ring.adaptive is not None else " (ring: widen it or shrink the exclusion)")
    timings["reduction"] = time.perf_counter() - t_reduce - ring_time
    timings["ring"] = ring_time

    t0 = time.perf_counter()
    auto_iterations = 0
    if config.exclusion.auto is not None:
        auto = config.exclusion.auto
        for _ in range(auto.iterations):
            sig = _maps(stack, geom, config, stack.mask, e_true)["significance"]
            hot = np.nan_to_num(sig, nan=0.0) > auto.threshold
            new = exclusion & ~dilate(hot, auto.dilate / geom.binsize_deg)
            auto_iterations += 1
            if np.array_equal(new, exclusion):
                break
            exclusion = new
            edisp_stack = None if irf is None else EdispStack(irf, n_true)
            stack = _stack_images(images, responses, exclusion, ring_fn, geom, edisp_stack)
            band_edisp = [None if irf is None else EdispStack(irf, n_true, band) for band in
                          range(n_bands)]
            band_stacks = [_stack_images(b, responses, exclusion, ring_fn, geom, be)
                           for b, be in zip(band_images, band_edisp)]
    timings["auto_exclusion"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    flux_response = _flux_response(config, geom, e_true, edisp_stack)
    maps = _maps(stack, geom, config, stack.mask, e_true, flux_response)
    off_maps = excess_maps(
        stack.counts, stack.counts_off, stack.acceptance, stack.acceptance_off,
        stack.mask & exclusion, config.excess.correlation_radius / geom.binsize_deg,
        config.excess.correlate_off, errors=False,
    )
    band_maps = [_maps(b, geom, config, b.mask, e_true, _flux_response(config, geom, e_true, be))
                 for b, be in zip(band_stacks, band_edisp)]
    timings["excess"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    images_out = {
        "SIGNIFICANCE": maps["significance"],
        "EXCESS": maps["excess"],
        "BACKGROUND": maps["background"],
        "COUNTS": maps["counts"],
        "ALPHA": maps["alpha"],
        "FLUX": maps["flux"],
        "FLUX_ERR": maps["flux_err"],
        "FLUX_UL": maps["flux_ul"],
        "EXPOSURE": stack.exposure.sum(axis=0) / n_true,
        "EXCLUSION": exclusion.astype(np.uint8),
        "EXCESS_ERRN": maps["excess_errn"],
        "EXCESS_ERRP": maps["excess_errp"],
        "EXCESS_UL": maps["excess_ul"],
        "TS": maps["ts"],
    }
    off_fit = fit_off_distribution(off_maps["significance"])
    summary = _summary(config, geom, stack, maps, off_fit, used, skipped, timings,
                       auto_iterations)
    observations = [_obs_row(store, i, "used") for i in used]
    observations += [_obs_row(store, i, "skipped", r) for i, r in skipped]
    result = Result(config=config, geom=geom, stack=stack, maps=images_out, exclusion=exclusion,
                    summary=summary, observations=observations,
                    off_significance=off_maps["significance"], band_maps=band_maps,
                    per_observation=per_obs, energy_true_edges_tev=e_true,
                    flux_response=flux_response)
    return result


def _summary(config, geom, stack, maps, off_fit, used, skipped, timings, auto_iterations):
    import astropy
    import scipy

    sig = maps["significance"]
    if np.isfinite(sig).any():
        j, i = np.unravel_index(np.nanargmax(sig), sig.shape)
        lon, lat = geom.pix_to_world(float(i), float(j))
        max_sig = {"value": float(sig[j, i]), "lon": float(lon), "lat": float(lat),
                   "frame": geom.frame, "pixel": [int(i), int(j)]}
        ra, dec = to_frame(lon, lat, geom.frame, "icrs")
        max_sig["ra"], max_sig["dec"] = float(ra), float(dec)
    else:
        max_sig = {"value": None, "lon": None, "lat": None, "frame": geom.frame}
    m = stack.mask
    totals = {
        "counts": float(stack.counts.sum()),
        "counts_off": float(stack.counts_off.sum()),
        "acceptance": float(stack.acceptance.sum()),
        "acceptance_off": float(np.nansum(np.where(m, stack.acceptance_off, 0.0))),
        "background": float(stack.background.sum()),
        "excess": float(stack.counts.sum() - stack.background.sum()),
        "livetime_s": float(stack.livetime_s),
    }
    return {
        "obs_ids": [int(i) for i in used],
        "n_obs": len(used),
        "skipped": [{"obs_id": int(i), "reason": r} for i, r in skipped],
        "totals": totals,
        "max_significance": max_sig,
        "off_distribution": off_fit,
        "n_pixels_no_off": int(np.sum(~m)),
        "auto_exclusion_iterations": auto_iterations,
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "versions": {"ringbg": __version__, "numpy": np.__version__,
                     "astropy": astropy.__version__, "scipy": scipy.__version__},
    }
