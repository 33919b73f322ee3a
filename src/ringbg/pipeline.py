"""The whole workflow: data store -> per-observation reduction and ring -> stack -> maps.

`run` is the Python API behind ``ringbg run``: it returns a `Result` holding the stacked
images, the correlated maps (arrays with their WCS), the summary and a ``write`` method.
"""

import copy
import itertools
import logging
import os
import time
from dataclasses import dataclass, field, replace

import numpy as np

from .background import template_name
from .background import template_parameters as background_parameters
from .config import load_config
from .datastore import DataStore, DataStoreError, cached_datastore
from .edisp import EdispStack, diagonal_response, irf_grid
from .edisp import stack_terms as edisp_terms
from .errors import DataError, RunError, one_line
from .excess import excess_map_steps, excess_maps
from .exclusion import exclusion_mask, grow_exclusion
from .files import discard_prefetched, prefetch
from .geom import Geom, angular_separation_deg, energy_edges_tev, to_frame
from .parallel import keep_freed_memory, map_ordered, one_blas_thread
from .products import assemble, band_products
from .progress import stage
from .reduce import empty_mask_reason, reduce_observation
from .result import Result
from .ring import (
    adaptive_ring_background,
    adaptive_ring_radii,
    ring_background,
    to_image,
)
from .stack import Stack, StackTerms, stack_terms
from .stats import fit_gaussian
from .version import __version__

__all__ = ["run", "Result", "RunError", "make_geom", "fit_off_distribution",
           "safe_mask_parameters", "template_parameters", "make_task", "reduce_task",
           "process_observation", "ObservationTask", "RingSpec"]

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


def make_irf_grid(config, geom):
    """The IRF grid of the energy-dispersion response (None without ``excess.edisp``)."""
    energy = config.geom.energy
    return irf_grid(geom, energy.min, energy.max) if config.excess.edisp else None


@dataclass(frozen=True)
class RingSpec:
    """The ring of a config, in pixels; calling it gives an observation's on/off image
    (`ringbg.ring.ring_background` or, with ``adaptive``, `adaptive_ring_background`)."""

    r_in_px: float
    width_px: float
    adaptive: tuple | None = None  # (candidate rings, theta_px, threshold_alpha)

    @classmethod
    def from_config(cls, config, binsize_deg):
        ring = config.ring
        r_in_px, width_px = ring.r_in / binsize_deg, ring.width / binsize_deg
        if ring.adaptive is None:
            return cls(r_in_px, width_px)
        a = ring.adaptive
        rings = adaptive_ring_radii(r_in_px, width_px, a.r_out_max / binsize_deg,
                                    a.stepsize / binsize_deg, a.method)
        if not rings:
            raise RunError("ring.adaptive: no candidate ring between r_in and r_out_max")
        return cls(r_in_px, width_px, (tuple(rings), a.theta / binsize_deg, a.threshold_alpha))

    def __call__(self, image, exclusion):
        if self.adaptive is None:
            return ring_background(image, exclusion, self.r_in_px, self.width_px)
        rings, theta_px, threshold = self.adaptive
        return adaptive_ring_background(image, exclusion, rings, theta_px, threshold)


class PackedMask:
    """A boolean image packed for sending to workers (bits, zlib), unpacked once per process.

    A survey's exclusion mask is megabytes as a bool array and a few kilobytes packed;
    ``key`` (its hash) lets a worker keep one unpacked copy for all its tasks.
    """

    def __init__(self, mask):
        import hashlib
        import zlib

        mask = np.ascontiguousarray(mask, dtype=bool)
        self.shape = mask.shape
        self.data = zlib.compress(np.packbits(mask).tobytes(), 1)
        self.key = hashlib.sha256(self.data + repr(self.shape).encode()).hexdigest()

    def unpack(self):
        import zlib

        if _UNPACKED.get("key") != self.key:
            bits = np.frombuffer(zlib.decompress(self.data), dtype=np.uint8)
            n = int(np.prod(self.shape))
            _UNPACKED.clear()
            _UNPACKED.update(key=self.key, mask=np.unpackbits(bits)[:n].reshape(self.shape)
                             .astype(bool))
        return _UNPACKED["mask"]


_UNPACKED = {}


@dataclass(frozen=True)
class ObservationTask:
    """What a worker needs to reduce one observation (`process_observation`)."""

    datastore: str
    obs_id: int
    geom: Geom
    offset_max_deg: float
    methods: tuple
    parameters: dict
    template: str = "irf"
    template_parameters: dict | None = None
    exclusion: PackedMask | None = None
    cache_dir: str | None = None
    prefetch_id: int | None = None
    ring: RingSpec | None = None
    bands: bool = False
    energy_true_edges_tev: np.ndarray | None = None
    irf: object = None  # the energy-dispersion IRF grid (`ringbg.edisp.IrfGrid`) or None
    per_observation: bool = False  # send the on/off image back (``output.per_observation``)
    images: bool = True  # send the float32 images for the report's numbers at the maximum


def make_task(config, geom, obs_id, exclusion=None, cache_dir=None, prefetch_id=None):
    """The `ObservationTask` of one observation of a config.

    ``exclusion``: the mask (an array or a `PackedMask`), for the ring and the templates
    built from the data.
    """
    if exclusion is not None and not isinstance(exclusion, PackedMask):
        exclusion = PackedMask(exclusion)
    return replace(_task_template(config, geom), obs_id=int(obs_id), exclusion=exclusion,
                   cache_dir=None if cache_dir is None else str(cache_dir),
                   prefetch_id=prefetch_id)


_TEMPLATES = {}


def _task_template(config, geom):
    """What the tasks of a config share (the ring, the IRF grid... made once: building the
    energy-dispersion grid costs milliseconds); one kept per process."""
    key = (id(config), geom.key)
    if key not in _TEMPLATES:
        _TEMPLATES.clear()
        _TEMPLATES[key] = (config, ObservationTask(
            config.datastore, -1, geom, config.geom.offset_max,
            tuple(config.safe_mask.methods), safe_mask_parameters(config),
            config.background.template, template_parameters(config), None, None, None,
            RingSpec.from_config(config, geom.binsize_deg), config.excess.energy_bands,
            make_energy_true_edges(config), make_irf_grid(config, geom),
            config.output.per_observation))
    return _TEMPLATES[key][1]


def _hashable(params):
    """Template parameters for a cache key: a shared radial shape by its hash."""
    if not params or "shape" not in params:
        return params
    import hashlib
    import pickle

    digest = hashlib.sha256(pickle.dumps(params["shape"])).hexdigest()
    return dict(params, shape=digest)


def reduce_task(task):
    """Load and reduce one observation; returns ``(obs_id, reduced or None, reason or None)``.

    Runs in worker processes. Bad input data (a `~ringbg.errors.DataError` of the readers:
    the observation's files or index rows cannot be used) and an empty safe mask come back
    as the reason the observation is skipped. Any other exception is a ringbg bug: it is
    raised, with a note naming the observation, and stops the run. With
    ``task.cache_dir``, a cached reduction is used when its key matches (see
    `ringbg.cache`). ``task.prefetch_id``: an observation whose files are read ahead in a
    background thread.
    """
    from . import cache

    keep_freed_memory()
    geom = task.geom  # one per process and geometry (see `ringbg.geom.Geom.__reduce__`)
    obs_id = task.obs_id
    try:
        store = cached_datastore(task.datastore)
        if task.prefetch_id is not None and task.cache_dir is None:
            prefetch(loc[0] for loc in store.hdu_locations(task.prefetch_id).values())
        locations = store.hdu_locations(obs_id)
        # "auto" resolved from the HDU index: the IRF template does not use the exclusion
        template = template_name(task.template, has_bkg_irf="bkg" in locations)
        excl = None if template == "irf" or task.exclusion is None else task.exclusion
        exclusion = None if excl is None else excl.unpack()
        key = reduced = obs = None
        if task.cache_dir is not None:
            paths = [loc[0] for loc in locations.values()]
            key = cache.cache_key(obs_id, store.index_rows(obs_id), paths, geom,
                                  task.offset_max_deg, task.methods,
                                  dict(task.parameters, template=template,
                                       template_parameters=_hashable(task.template_parameters),
                                       exclusion=None if excl is None else excl.key),
                                  task.energy_true_edges_tev, task.irf)
            reduced = cache.load(task.cache_dir, obs_id, key)
            if reduced is not None:
                reduced.template = template
        if reduced is None:
            dl3_bkg_peak = "bkg-peak" in task.methods and task.parameters.get("irfs") == "DL3"
            obs = store.load(obs_id, edisp=task.irf is not None,
                             bkg=template == "irf" or dl3_bkg_peak)
            reduced = reduce_observation(obs, geom, task.offset_max_deg, task.methods,
                                         task.parameters, template, exclusion,
                                         task.template_parameters, task.energy_true_edges_tev,
                                         task.irf)
            if key is not None and reduced is not None:
                _save_to_cache(cache, task.cache_dir, reduced, key)
    except DataError as exc:
        return obs_id, None, one_line(exc)
    except Exception as exc:
        log.debug("observation %s: internal error", obs_id, exc_info=True)
        exc.add_note(f"(ringbg: while reducing observation {obs_id})")
        raise
    if reduced is None:
        return obs_id, None, "its cutout does not overlap the map (pointing far outside it)"
    if not reduced.mask_safe.any():
        return obs_id, None, empty_mask_reason(obs, geom, task.methods)
    return obs_id, reduced, None


def _save_to_cache(cache, cache_dir, reduced, key):
    """Write a cache entry; a cache that cannot be written is warned about, not fatal."""
    try:
        cache.save(cache_dir, reduced, key)
    except OSError as exc:
        log.warning("--cache %s: cannot write the entry of observation %s (%s); it is "
                    "reduced again next time", cache_dir, reduced.obs_id, exc.strerror or exc)


@dataclass
class RingedObservation:
    """One observation after its ring, ready to stack: what it adds to the stacks (made in
    the worker, so the process that stacks only sums), its float32 images for the report's
    numbers at the map maximum, and the pixel counts of the warning about pixels without
    an off estimate."""

    terms: StackTerms
    band_terms: list
    edisp_terms: object  # `ringbg.edisp.stack_terms` of the integrated response, or None
    band_edisp_terms: list
    #: (slices, (counts, counts_off, acceptance, acceptance_off) float32, mask), or None
    images: tuple | None
    safe_pixels: int
    no_ring_pixels: int
    ring_s: float
    template: str = "irf"
    diagonal_edisp: bool = False  # no energy dispersion IRF: a diagonal response
    point_like: bool = False
    facts: dict = field(default_factory=dict)  # for the report: counts, safe threshold...
    onoff: object = None  # the `OnOffImage`, with ``output.per_observation``


def process_observation(task):
    """Reduce one observation (`reduce_task`) and make its on/off image(s) with the task's
    ring and exclusion, in the worker: only what the stacks add travels back, not the cubes.

    Returns ``(obs_id, RingedObservation or None, error or None)``.
    """
    obs_id, reduced, error = reduce_task(task)
    if error is not None:
        return obs_id, None, error
    t0 = time.perf_counter()
    exclusion = task.exclusion.unpack()
    image = to_image(reduced)
    onoff = task.ring(image, exclusion[image.slices])
    bands, band_images = [], []
    if task.bands:
        for band in range(reduced.counts.shape[0]):
            band_images.append(to_image(reduced, band))
            bands.append(task.ring(band_images[-1], exclusion[band_images[-1].slices]))
    edisp, band_edisp = reduced.edisp, []
    if edisp is not None:
        band_edisp = [edisp_terms(edisp, b.mask, k) for k, b in enumerate(band_images)]
        edisp = edisp_terms(edisp, image.mask)
    safe_bins = np.flatnonzero(reduced.mask_safe.any(axis=(1, 2)))
    facts = {"counts": float(image.counts[onoff.mask].sum()),
             "safe_energy_min_tev": float(task.geom.energy_edges_tev[safe_bins[0]]),
             "livetime_s": float(reduced.livetime_s)}
    images = None
    if task.images:
        images = (onoff.slices, tuple(np.asarray(a, np.float32) for a in (
            onoff.counts, np.nan_to_num(onoff.counts_off), onoff.acceptance,
            np.nan_to_num(onoff.acceptance_off))), onoff.mask)
    return obs_id, RingedObservation(
        stack_terms(onoff), [stack_terms(b) for b in bands], edisp, band_edisp, images,
        int(image.mask.sum()), int(np.sum(image.mask & ~onoff.mask)),
        time.perf_counter() - t0, reduced.template,
        reduced.edisp is not None and reduced.edisp.diagonal, reduced.point_like, facts,
        onoff if task.per_observation else None), None


def fit_off_distribution(values):
    """Gaussian fit of significance values (`ringbg.stats.fit_gaussian`, gammapy's
    procedure) plus the plain sample mean and standard deviation."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    out = fit_gaussian(values)
    out["sample_mean"] = float(values.mean()) if values.size else np.nan
    out["sample_std"] = float(values.std()) if values.size else np.nan
    return out


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


def memory_estimate_bytes(config, geom, jobs, n_obs=1):
    """Rough peak memory of a run: full-map arrays plus the cutouts in flight (and the
    on/off images kept for ``output.per_observation``)."""
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
    # output.per_observation keeps each observation's on/off images (6 planes) and exposure
    kept = 0
    if config.output.per_observation:
        kept = n_obs * cut * (6 + n_true) * 8
    return int(full + per_obs * in_flight + kept + 300e6)


def result_bytes_estimate(config, geom):
    """The array bytes of one observation's `RingedObservation` (its cutout's planes), with
    a margin: the size of the shared-memory slots they come back in from workers."""
    side = int(np.round(2 * config.geom.offset_max / geom.binsize_deg)) + 2
    npix = min(side, geom.shape[0]) * min(side, geom.shape[1])
    n_true = len(make_energy_true_edges(config)) - 1
    terms = 4 * 8 + 1 + n_true * 8  # `StackTerms` planes
    per_px = terms + 4 * 4 + 1  # and the report's float32 images
    if config.excess.energy_bands:
        per_px += geom.n_energy * terms
    if config.output.per_observation:
        per_px += 4 * 8 + 1 + n_true * 8
    return int(1.25 * npix * per_px) + 2**20


def template_parameters(config, shape=None):
    """The parameters of the config's background template (`ringbg.background`); ``shape``
    a radial shape shared by a group of observations."""
    return background_parameters(config.background, config.geom.offset_max, shape)


def safe_mask_parameters(config):
    """The ``parameters`` of `ringbg.safemask.safe_mask` for a config: ``offset_max`` defaults
    to ``geom.offset_max``."""
    p = config.safe_mask.parameters
    offset_max = config.geom.offset_max if p.offset_max is None else p.offset_max
    return {"aeff_percent": p.aeff_percent, "offset_max_deg": offset_max, "irfs": p.irfs}


def flux_response(config, geom, edisp_stack, band=None):
    """Per true-energy bin probability that a photon is counted (reconstructed in the range,
    or in energy bin ``band``), for the flux maps: gammapy's stacked kernel
    (``excess.edisp``), else the diagonal response (None when it is one everywhere: the true
    axis is the reconstructed one and no band is asked for)."""
    if edisp_stack is not None:
        return edisp_stack.kernel()
    e, e_true = geom.energy_edges_tev, make_energy_true_edges(config)
    lo, hi = (e[0], e[-1]) if band is None else (e[band], e[band + 1])
    if band is None and len(e_true) == len(e) and np.array_equal(e_true, e):
        return None
    return diagonal_response(e_true, lo, hi)


def _maps(stack, geom, config, mask, band=None, radius_deg=None, edisp_stack=None, flux=True,
          jobs=1):
    """Correlated maps of a stack at ``radius_deg`` (default: the first correlation radius).

    ``band``: the maps of that energy bin alone; its flux is the integral flux in that bin,
    from the exposure of the runs where the bin is safe (the band's stack holds only theirs)
    and the response into that bin. ``edisp_stack``: the stacked energy dispersion.
    ``flux``: False leaves the flux maps out (point-like IRFs, `FLUX_NOTE`). ``jobs``: local
    processes for the per-pixel root searches.
    """
    *_, maps = _map_steps(stack, geom, config, mask, band, radius_deg, edisp_stack, flux, jobs)
    return maps


def _map_steps(stack, geom, config, mask, band=None, radius_deg=None, edisp_stack=None,
               flux=True, jobs=1):
    """`_maps` in the two steps of `ringbg.excess.excess_map_steps` (a generator)."""
    e = config.excess
    radius_deg = e.radii_deg[0] if radius_deg is None else radius_deg
    edges = geom.energy_edges_tev
    lo, hi = (edges[0], edges[-1]) if band is None else (edges[band], edges[band + 1])
    return excess_map_steps(
        stack.counts, stack.counts_off, stack.acceptance, stack.acceptance_off, mask,
        radius_deg / geom.binsize_deg, correlate_off=e.correlate_off,
        exposure=stack.exposure if flux else None,
        energy_edges_tev=make_energy_true_edges(config), spectral_index=e.spectral_index,
        n_sigma_ul=e.n_sigma_ul, response=flux_response(config, geom, edisp_stack, band),
        energy_range_tev=(lo, hi), sensitivity=e.sensitivity.model_dump(), jobs=jobs,
    )


def _significance(stack, geom, config, mask, radius_deg=None):
    """The significance map alone (no root searches), with ``mask`` as fit mask: with the
    exclusion, the off distribution's (as the tutorial's second estimator run)."""
    radius_deg = config.excess.radii_deg[0] if radius_deg is None else radius_deg
    return excess_maps(
        stack.counts, stack.counts_off, stack.acceptance, stack.acceptance_off, mask,
        radius_deg / geom.binsize_deg, correlate_off=config.excess.correlate_off,
        errors=False)["significance"]


def _max_significance(sig, geom):
    """Value and position of the map's maximum (None values where nothing is finite)."""
    if not np.isfinite(sig).any():
        return {"value": None, "lon": None, "lat": None, "frame": geom.frame}
    j, i = np.unravel_index(np.nanargmax(sig), sig.shape)
    lon, lat = geom.pix_to_world(float(i), float(j))
    ra, dec = to_frame(lon, lat, geom.frame, "icrs")
    return {"value": float(sig[j, i]), "lon": float(lon), "lat": float(lat),
            "frame": geom.frame, "pixel": [int(i), int(j)], "ra": float(ra),
            "dec": float(dec)}


def radius_key(radius_deg):
    """The text of a correlation radius in file names and summary keys ("0.2")."""
    return f"{radius_deg:g}"


def correlated_products(passed, geom, config, exclusion, jobs=1, on_maps=None):
    """Per correlation radius (deg): the product maps, the off significance and its fit.

    The ring and the stack are done once; only the correlation is repeated. ``jobs``: local
    processes for the per-pixel root searches. ``on_maps``: called as
    ``on_maps(maps_by_radius, off_by_radius, fits_by_radius)`` with the product maps that need
    no root search (`ringbg.excess.excess_map_steps`) before the searches run.
    """
    stack = passed.stack
    n_true = stack.exposure.shape[0]
    steps = {radius: _map_steps(stack, geom, config, stack.mask, radius_deg=radius,
                                edisp_stack=passed.edisp_stack, flux=not passed.point_like,
                                jobs=jobs)
             for radius in config.excess.radii_deg}
    quick = {radius: next(step) for radius, step in steps.items()}
    off = {radius: _significance(stack, geom, config, stack.mask & exclusion, radius)
           for radius in steps}
    fits = {radius: fit_off_distribution(values) for radius, values in off.items()}
    if on_maps is not None:
        on_maps({radius: assemble(maps, stack, exclusion, n_true, geom.binsize_deg)
                 for radius, maps in quick.items()}, off, fits)
    return {radius: (assemble(next(step), stack, exclusion, n_true, geom.binsize_deg),
                     off[radius], fits[radius])
            for radius, step in steps.items()}


#: why the flux maps are not written from point-like IRFs (summary.json, report)
FLUX_NOTE = (
    "FLUX, FLUX_ERR, FLUX_UL and SENSITIVITY are not written: observations have point-like "
    "IRFs (HDUCLAS3 = POINT-LIKE), whose effective area counts only the events within RAD_MAX "
    "of a point source, so a flux would need the containment of the correlation circle (and "
    "a single-offset-bin area has no exposure map); counts, background, excess and "
    "significance are unaffected")


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


def _used_row(store, obs_id, geom, passed, at_max):
    """The report's row of a used observation: the index row, its template, the numbers the
    worker measured (counts, safe threshold, live time) and those at the map maximum."""
    row = dict(_obs_row(store, obs_id, "used"), background_template=passed.templates[obs_id])
    row.update(passed.facts.get(obs_id, {}))
    row.update(at_max)
    info = store.obs_info(obs_id)
    lon, lat = geom.pix_to_world((geom.shape[1] - 1) / 2, (geom.shape[0] - 1) / 2)
    ra0, dec0 = to_frame(lon, lat, geom.frame, "icrs")
    if np.isfinite(row["ra_deg"]) and np.isfinite(row["dec_deg"]):
        row["offset_deg"] = float(angular_separation_deg(row["ra_deg"], row["dec_deg"],
                                                         float(ra0), float(dec0)))
    mjd = _tstart_mjd(info)
    if mjd is not None:
        row["tstart_mjd"] = mjd
    return row


def _tstart_mjd(info):
    """Start of an observation (MJD) from its obs-index row (TSTART and the MJDREF of the
    index, or the H.E.S.S./GADF reference), None when unknown."""
    tstart = info.get("TSTART")
    if not isinstance(tstart, (int, float)) or not np.isfinite(tstart):
        return None
    ref = info.get("MJDREFI")
    ref = (float(ref) + float(info.get("MJDREFF", 0.0))) if isinstance(ref, (int, float)) \
        else 51910.0 + 7.428703703703703e-4
    return float(ref + tstart / 86400.0)


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


@dataclass
class Plan:
    """What the per-observation pass needs: the geometry, the tasks and the ring."""

    config: object
    store: DataStore
    geom: Geom
    obs_ids: list
    jobs: int
    cache_dir: str | None = None


@dataclass
class StackPass:
    """The result of one pass over the observations: the stacks and who was used."""

    stack: Stack
    band_stacks: list
    per_observation: list
    used: list
    skipped: list
    reduction_s: float
    ring_s: float
    safe_pixels: int = 0
    no_ring_pixels: int = 0
    stack_s: float = 0.0
    templates: dict = field(default_factory=dict)
    edisp_stack: object = None
    band_edisp: list = field(default_factory=list)
    no_edisp: list = field(default_factory=list)
    point_like: list = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    #: obs_id -> its on/off images (float32, no exposure) for the per-observation numbers at
    #: the map maximum; None when they would exceed `KEEP_IMAGES_BYTES` (`report_images_fit`)
    images: dict | None = field(default_factory=dict)
    images_bytes: int = 0


def open_datastore(config):
    """The config's `~ringbg.datastore.DataStore`; `RunError` when it cannot be opened."""
    try:
        return cached_datastore(config.datastore)
    except DataStoreError as exc:
        raise RunError(str(exc)) from None


def check_memory(config, geom, jobs, n_obs):
    """`RunError` when the run would need more memory than is available."""
    need, have = memory_estimate_bytes(config, geom, jobs, n_obs), available_memory_bytes()
    if have is not None and need > have:
        raise RunError(
            f"geom: a {geom.shape[1]} x {geom.shape[0]} pixel map with {geom.n_energy} energy "
            f"bins needs about {need / 1e9:.1f} GB, but {have / 1e9:.1f} GB are available; use "
            "a larger geom.binsize, a smaller geom.width or fewer energy bins"
        )


def initial_exclusion(config, geom):
    """The exclusion mask of the config's regions, files and catalogues (before
    ``exclusion.auto``), and the catalogue sources it excludes."""
    try:
        return exclusion_mask(geom, config.exclusion)
    except (ValueError, OSError) as exc:
        raise RunError(f"exclusion: {exc}") from None


def _tasks(plan, exclusion, shapes=None):
    config = plan.config
    in_process = plan.jobs <= 1 and config.parallel.address is None
    ids = plan.obs_ids
    following = ids[1:] + [None] if in_process else [None] * len(ids)
    packed = PackedMask(exclusion)
    images = report_images_fit(plan)
    tasks = []
    for obs_id, next_id in zip(ids, following):
        task = make_task(config, plan.geom, obs_id, packed, plan.cache_dir, next_id)
        if not images:
            task = replace(task, images=False)
        if shapes and obs_id in shapes:
            task = replace(task, template_parameters=template_parameters(config,
                                                                         shapes[obs_id]))
        tasks.append((task,))
    return tasks


def _needs_shared_shapes(config):
    d = config.background.data
    return config.background.template in ("data", "auto") and (
        d.group != "run" or bool(d.off_obs_ids))


def _histogram_task(datastore, obs_id, geom, exclusion, config):
    """`ringbg.grouping.histogram_task` of one observation, errors as text (a worker)."""
    from .grouping import common_offset_edges_deg, histogram_task

    d = config.background.data
    off = obs_id in set(d.off_obs_ids)

    def own_geom(ra_deg, dec_deg):
        local = Geom.create(ra_deg, dec_deg, "icrs", 2 * config.geom.offset_max,
                            geom.binsize_deg, "TAN", geom.energy_edges_tev)
        return local, exclusion_mask(local, config.exclusion)[0]

    try:
        store = cached_datastore(datastore)
        if "bkg" in store.hdu_locations(obs_id) and config.background.template == "auto" \
                and not off:
            return obs_id, None, None  # the IRF template: no shape needed
        edges = common_offset_edges_deg(config.geom.offset_max, d.fine_width)
        result = histogram_task(store, obs_id, geom, exclusion, config.geom.offset_max, edges,
                                own_geom if off else None)
    except DataError as exc:  # anything else is a ringbg bug: it stops the run
        return obs_id, None, one_line(exc)
    return obs_id, result, None


def shared_shapes(plan, exclusion):
    """Radial shapes of the data template shared by groups of observations (None when each
    observation makes its own): a first pass histogramming the events of the observations
    and of ``background.data.off_obs_ids``."""
    config = plan.config
    if not _needs_shared_shapes(config):
        return None
    from .grouping import common_offset_edges_deg, group_shapes

    d = config.background.data
    ids = list(dict.fromkeys(list(plan.obs_ids) + list(d.off_obs_ids)))
    args = [(config.datastore, i, plan.geom, exclusion, config) for i in ids]
    histograms = {}
    for obs_id, result, error in map_ordered(_histogram_task, args, plan.jobs,
                                             config.parallel.address):
        if error is not None:
            log.warning("observation %s: no radial histogram for the background shape (%s)",
                        obs_id, error)
        elif result is not None:
            histograms[obs_id] = result
    if not histograms:
        return None
    edges = common_offset_edges_deg(config.geom.offset_max, d.fine_width)
    sources = list(d.off_obs_ids) or list(histograms)
    try:
        shapes = group_shapes(histograms, d.group, d.zenith_bin, edges, sources,
                              {"min_counts_node": d.min_counts_node,
                               "min_counts_group": d.min_counts_group,
                               "smoothing": d.smoothing})
    except DataError as exc:
        raise RunError(f"background.data: {exc}") from None
    return {i: s for i, s in shapes.items() if i in set(plan.obs_ids)}


#: modules imported after the observation pass (the off-distribution fit's curve_fit), which
#: take ~0.17 s to import: imported while it waits for the worker processes
AFTER_STACK_MODULES = ("scipy.optimize",)


def import_in_background(modules):
    """Import ``modules`` in a daemon thread, returned started (an import the caller then
    makes waits for it to finish, or finds the module there); an import that fails is made
    again, and fails with its error, where the module is used. Join the thread before the
    process forks."""
    import importlib
    import threading

    def load():
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - raised again where it is used
                log.debug("background import of %s failed", name, exc_info=True)

    thread = threading.Thread(target=load, daemon=True, name="ringbg-import")
    thread.start()
    return thread


def stack_observations(plan, exclusion, progress=False):
    """Reduce, ring and stack every observation of the plan with ``exclusion``: one pass.

    Reduced cubes are not kept: memory does not grow with the number of observations
    (only the on/off images of ``output.per_observation`` are kept).
    """
    config, geom = plan.config, plan.geom
    n_bands = geom.n_energy if config.excess.energy_bands else 0
    n_true = len(make_energy_true_edges(config)) - 1
    irf = make_irf_grid(config, geom)
    out = StackPass(Stack(geom.shape, n_true),
                    [Stack(geom.shape, n_true) for _ in range(n_bands)], [], [], [], 0.0, 0.0)
    if irf is not None:
        out.edisp_stack = EdispStack(irf, n_true)
        out.band_edisp = [EdispStack(irf, n_true, band) for band in range(n_bands)]
    t_start = time.perf_counter()
    if _needs_shared_shapes(config):
        stage(progress, "radial background shapes (a first pass over the observations)")
    tasks = _tasks(plan, exclusion, shared_shapes(plan, exclusion))
    # the arrays of the results are views into shared memory: what is kept is copied
    results = map_ordered(process_observation, tasks, plan.jobs, config.parallel.address,
                          result_bytes=result_bytes_estimate(config, geom))
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=len(tasks), unit="obs", desc="observations")
    stack_s = 0.0
    # this process mostly waits for the workers' results: it imports meanwhile what it
    # needs after them; once the local workers are forked (the first result is there), and
    # done before anything else forks (a fork during an import inherits its locks, held)
    importer = None
    in_workers = plan.jobs > 1 or config.parallel.address is not None
    for obs_id, ringed, error in results:
        if importer is None and in_workers:
            importer = import_in_background(AFTER_STACK_MODULES)
        if error is not None:
            out.skipped.append((obs_id, error))
            continue
        t1 = time.perf_counter()
        out.safe_pixels += ringed.safe_pixels
        out.no_ring_pixels += ringed.no_ring_pixels
        out.stack.add(ringed.terms)
        if out.edisp_stack is not None:
            if ringed.diagonal_edisp:
                out.no_edisp.append(obs_id)
            if ringed.edisp_terms is not None:
                out.edisp_stack.add_terms(ringed.edisp_terms)
        if config.output.per_observation:
            out.per_observation.append(copy.deepcopy(ringed.onoff))
        for band_stack, terms in zip(out.band_stacks, ringed.band_terms):
            band_stack.add(terms)
        for band_edisp, terms in zip(out.band_edisp, ringed.band_edisp_terms):
            band_edisp.add_terms(terms)
        stack_s += time.perf_counter() - t1
        out.ring_s += ringed.ring_s
        out.used.append(obs_id)
        out.templates[obs_id] = ringed.template
        out.facts[obs_id] = ringed.facts
        _keep_images(out, obs_id, ringed.images)
        if ringed.point_like:
            out.point_like.append(obs_id)
    discard_prefetched()
    if importer is not None:
        importer.join()
    # the ring's time is measured where it runs (a worker, or here in-process)
    out.reduction_s = time.perf_counter() - t_start - stack_s - (
        out.ring_s if plan.jobs <= 1 and config.parallel.address is None else 0.0)
    out.stack_s = stack_s
    return out


def _warn_ring_beyond_cutout(config):
    """Warn when the ring reaches beyond geom.offset_max: rings are clipped to each cutout."""
    ring = config.ring
    r_out, key = ring.r_in + ring.width, "ring.r_in + ring.width"
    if ring.adaptive is not None and ring.adaptive.r_out_max > r_out:
        r_out, key = ring.adaptive.r_out_max, "ring.adaptive.r_out_max"
    if r_out > config.geom.offset_max:
        log.warning("%s = %g deg is beyond geom.offset_max = %g deg: each observation's ring "
                    "is clipped to its cutout (2 x offset_max wide); raise geom.offset_max "
                    "or use a smaller ring", key, r_out, config.geom.offset_max)


#: at most this much memory for the observations' on/off images of the report's numbers at
#: the map maximum (beyond, a survey: the report shows dashes there)
KEEP_IMAGES_BYTES = 256 * 2**20
#: their bytes per cutout pixel: four float32 planes and the mask
IMAGE_BYTES_PER_PIXEL = 4 * 4 + 1


def report_images_fit(plan):
    """Whether the on/off images of the plan's observations fit in `KEEP_IMAGES_BYTES`, their
    cutouts (trimmed by the map's edges) placed at the index's pointings.

    When they do not, the workers do not make them at all: before, they were made, sent and
    copied until the sum passed the limit, then all dropped (a survey spent most of the limit's
    256 MB of copies in the process that stacks, for nothing).
    """
    geom = plan.geom
    ny, nx = geom.shape
    side = int(np.round(2 * plan.config.geom.offset_max / geom.binsize_deg))
    per_obs = min(side, ny) * min(side, nx) * IMAGE_BYTES_PER_PIXEL
    if len(plan.obs_ids) * per_obs <= KEEP_IMAGES_BYTES:
        return True
    table = plan.store.obs_table
    row = {}
    for k, obs_id in enumerate(np.asarray(table["OBS_ID"], dtype=np.int64)):
        row.setdefault(int(obs_id), k)
    rows = [row[int(i)] for i in plan.obs_ids]
    ra, dec = (np.asarray(table[c], dtype=float)[rows] for c in ("RA_PNT", "DEC_PNT"))
    x, y = geom.world_to_pix(ra, dec, "icrs")
    pixels = np.ones(len(rows))
    for pos, size in ((y, ny), (x, nx)):
        # as `Geom.cutout_slices`; a pointing off the map's projection gives no cutout
        with np.errstate(invalid="ignore"):
            lo = np.ceil(pos - side / 2.0)
            pixels *= np.nan_to_num(np.clip(lo + side, 0, size) - np.clip(lo, 0, size))
    return float(pixels.sum()) * IMAGE_BYTES_PER_PIXEL <= KEEP_IMAGES_BYTES


def _keep_images(out, obs_id, images):
    if out.images is None:
        return
    if images is None:  # not made (`report_images_fit`)
        out.images = None
        return
    slices, planes, mask = images
    out.images[obs_id] = (slices, tuple(np.array(p) for p in planes), np.array(mask))
    out.images_bytes += sum(p.nbytes for p in planes) + mask.nbytes
    if out.images_bytes > KEEP_IMAGES_BYTES:
        out.images = None


def numbers_at(images, pixel, radius_px, correlate_off):
    """Per observation: counts, excess and Li & Ma significance in the correlation circle
    around ``pixel`` (j, i) of the full map, from each observation's own on/off images."""
    j, i = pixel
    half = int(np.ceil(radius_px)) + 1
    out = {}
    for obs_id, (slices, (counts, off, acc, acc_off), mask) in images.items():
        sy, sx = slices
        jj, ii = j - sy.start, i - sx.start
        if not (0 <= jj < counts.shape[0] and 0 <= ii < counts.shape[1]) or not mask[jj, ii]:
            continue
        win = (slice(max(jj - half, 0), jj + half + 1), slice(max(ii - half, 0), ii + half + 1))
        maps = excess_maps(counts[win], off[win], acc[win], acc_off[win], mask[win], radius_px,
                           correlate_off=correlate_off, errors=False)
        cj, ci = jj - win[0].start, ii - win[1].start
        out[obs_id] = {"counts_at_max": float(maps["counts"][cj, ci]),
                       "excess_at_max": float(maps["excess"][cj, ci]),
                       "significance_at_max": float(maps["significance"][cj, ci])}
    return out


def _report_pass(config, result, skipped):
    """Warnings of a pass: skipped observations, pixels without an off estimate; the
    background template of each observation (at INFO level)."""
    for obs_id, error in result.skipped:
        log.warning("observation %s skipped: %s", obs_id, error)
    for obs_id, name in result.templates.items():
        log.info("observation %s: background template %s", obs_id, name)
    if result.no_edisp:
        ids = ", ".join(str(i) for i in result.no_edisp[:20])
        ids += ", ..." if len(result.no_edisp) > 20 else ""
        log.warning("observation%s %s: no energy dispersion (no 'edisp' HDU in the HDU index); "
                    "%s the flux maps without dispersion (excess.edisp)",
                    "s" if len(result.no_edisp) > 1 else "", ids,
                    "they enter" if len(result.no_edisp) > 1 else "it enters")
    skipped.extend(result.skipped)
    if not result.used:
        reasons = "; ".join(f"{i}: {r}" for i, r in skipped[:3])
        raise RunError(f"no observation could be used ({reasons})")
    if result.no_ring_pixels > 0.5 * result.safe_pixels:
        log.warning(
            "%.0f%% of the observations' safe pixels have no off estimate: no ring has enough "
            "acceptance outside the exclusion mask%s",
            100 * result.no_ring_pixels / result.safe_pixels,
            " (ring.adaptive: raise threshold_alpha or r_out_max, or lower theta)"
            if config.ring.adaptive is not None else " (ring: widen it or shrink the exclusion)")


def _selected(config):
    """The data store and the selected observations (`RunError` when none)."""
    store = open_datastore(config)
    obs_ids, skipped = select_observations(store, config)
    if not obs_ids:
        raise RunError(
            f"no observation selected in {config.datastore} (check observations.obs_ids and "
            "observations.cone)"
        )
    return store, obs_ids, skipped


def make_plan(config, store, obs_ids, jobs, cache_dir):
    """The `Plan` of a run, its starting exclusion mask and the catalogue sources in it;
    the memory, ring and exclusion checks before any work."""
    geom = make_geom(config)
    jobs = config.parallel.jobs if jobs is None else jobs
    check_memory(config, geom, jobs, len(obs_ids))
    exclusion, excluded_sources = initial_exclusion(config, geom)
    RingSpec.from_config(config, geom.binsize_deg)  # a config error before any work
    _warn_ring_beyond_cutout(config)
    return Plan(config, store, geom, obs_ids, jobs, cache_dir), exclusion, excluded_sources


def _auto_exclusion(plan, passed, exclusion, progress=False):
    """``exclusion.auto``: the pass again with the grown mask (`grow_exclusion`)."""
    config, geom = plan.config, plan.geom
    if config.exclusion.auto is None:
        return passed, exclusion, 0
    passes = itertools.count(2)

    def restack(mask):
        stage(progress, f"automatic exclusion: pass {next(passes)} over the observations")
        return stack_observations(plan, mask, progress)

    return grow_exclusion(
        config.exclusion.auto, exclusion, passed, geom.binsize_deg,
        significance=lambda p: _significance(p.stack, geom, config, p.stack.mask),
        restack=restack)


def _band_maps(passed, geom, config, jobs=1):
    band_edisp = passed.band_edisp or [None] * len(passed.band_stacks)
    return [band_products(_maps(b, geom, config, b.mask, band=k, edisp_stack=be,
                                flux=not passed.point_like, jobs=jobs), b)
            for k, (b, be) in enumerate(zip(passed.band_stacks, band_edisp))]


def run(config, jobs=None, progress=False, cache_dir=None, on_maps=None, on_stack=None):
    """Run the ring-background workflow of a config (path, YAML text, dict or `Config`).

    The stages: select the observations, plan (geometry, memory, exclusion, ring), reduce,
    ring and stack every observation, the automatic exclusion (when configured: the pass
    again with the grown mask), the correlated maps (per correlation radius and energy
    band), the result and its summary.

    Parameters
    ----------
    config : str, dict or `~ringbg.config.Config`
        The configuration.
    jobs : int, optional
        Overrides ``parallel.jobs``.
    progress : bool or object
        Show a progress bar over observations; an object with a ``stage(name)`` method is
        also told when each later stage starts (`ringbg.progress.stage`).
    cache_dir : str or path, optional
        Keep per-observation reductions there and reuse them on the next run.
    on_maps : callable, optional
        Called with a preview `Result` as soon as the maps that need no per-pixel root
        search are made (the searches, the off distribution's fit and the energy bands
        follow): its ``maps``, ``maps_by_radius`` and ``off_by_radius`` lack the errors,
        upper limits and sensitivity; its summary holds ``n_obs``, ``excluded_sources`` and
        the off distributions' fits only. The figures start from it
        (`ringbg.outputs.start_figures`).
    on_stack : callable, optional
        Called before, with a preview `Result` of the stack alone, as soon as the stack and
        the exclusion are final: its ``maps`` hold the products taken from the stack
        (``EXPOSURE``, ``LIVETIME``, ``EXCLUSION``...), its summary ``n_obs`` and
        ``excluded_sources``. Their figures start from it.

    Returns
    -------
    result : `Result`
    """
    config = load_config(config)
    keep_freed_memory()
    with one_blas_thread():  # (its idle threads took a CPU from the figure renderer)
        return _run(config, jobs, progress, cache_dir, on_maps, on_stack)


def _run(config, jobs, progress, cache_dir, on_maps, on_stack):
    clock = _Clock()
    store, obs_ids, skipped = _selected(config)
    clock.lap("observations")
    plan, exclusion, excluded_sources = make_plan(config, store, obs_ids, jobs, cache_dir)
    clock.lap("setup")
    passed = stack_observations(plan, exclusion, progress)
    _report_pass(config, passed, skipped)
    clock.lap(None)
    clock.timings.update(reduction=passed.reduction_s, ring=passed.ring_s, stack=passed.stack_s)
    passed, exclusion, auto_iterations = _auto_exclusion(plan, passed, exclusion, progress)
    clock.lap("auto_exclusion")
    if on_stack is not None:
        on_stack(_stack_preview(plan, passed, exclusion, excluded_sources))
    stage(progress, "correlated maps")
    # local processes for the root searches of big maps (not a Dask cluster's workers)
    jobs = plan.jobs if config.parallel.address is None else 1
    preview = None if on_maps is None else (lambda maps, off, fits: on_maps(
        _preview(plan, passed, exclusion, maps, off, fits, excluded_sources)))
    by_radius = correlated_products(passed, plan.geom, config, exclusion, jobs, preview)
    band_maps = _band_maps(passed, plan.geom, config, jobs)
    clock.lap("excess")
    clock.timings["total"] = clock.elapsed()
    summary = _summary(config, plan.geom, passed.stack, by_radius, passed.used, skipped,
                       clock.timings, auto_iterations)
    summary.update(_run_notes(passed, excluded_sources))
    return _result(plan, passed, exclusion, by_radius, band_maps, summary, skipped)


class _Clock:
    """Stage timings of a run (s): ``lap(name)`` books the time since the previous lap."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.timings = {}

    def lap(self, name):
        now = time.perf_counter()
        if name is not None:
            self.timings[name] = now - self.last
        self.last = now

    def elapsed(self):
        return time.perf_counter() - self.start


def _run_notes(passed, excluded_sources):
    """summary.json entries of a pass: catalogue sources, templates, the flux note."""
    notes = {"excluded_sources": excluded_sources,
             "background_templates": {str(i): passed.templates[i] for i in passed.used}}
    if passed.point_like:
        notes["flux_note"] = FLUX_NOTE
        log.warning("flux maps not written: %d observation(s) have point-like IRFs",
                    len(passed.point_like))
    return notes


def _stack_preview(plan, passed, exclusion, excluded_sources):
    """The `Result` given to ``run``'s ``on_stack``."""
    maps = assemble({}, passed.stack, exclusion, passed.stack.exposure.shape[0],
                    plan.geom.binsize_deg)
    return Result(config=plan.config, geom=plan.geom, stack=passed.stack, maps=maps,
                  exclusion=exclusion, observations=[],
                  summary={"n_obs": len(passed.used), "excluded_sources": excluded_sources},
                  energy_true_edges_tev=make_energy_true_edges(plan.config))


def _preview(plan, passed, exclusion, maps_by_radius, off_by_radius, fits_by_radius,
             excluded_sources):
    """The `Result` given to ``run``'s ``on_maps``."""
    first = plan.config.excess.radii_deg[0]
    summary = {"n_obs": len(passed.used), "excluded_sources": excluded_sources,
               "off_distribution": fits_by_radius[first],
               "radii": {radius_key(r): {"off_distribution": fit}
                         for r, fit in fits_by_radius.items()}}
    return Result(config=plan.config, geom=plan.geom, stack=passed.stack,
                  maps=maps_by_radius[first], exclusion=exclusion, summary=summary,
                  observations=[], off_significance=off_by_radius[first],
                  maps_by_radius=maps_by_radius, off_by_radius=off_by_radius,
                  energy_true_edges_tev=make_energy_true_edges(plan.config))


def _result(plan, passed, exclusion, by_radius, band_maps, summary, skipped):
    config, geom, store = plan.config, plan.geom, plan.store
    at_max = {}
    pixel = summary["max_significance"].get("pixel")
    if passed.images is not None and pixel is not None:
        at_max = numbers_at(passed.images, (pixel[1], pixel[0]),
                            config.excess.radii_deg[0] / geom.binsize_deg,
                            config.excess.correlate_off)
    observations = [_used_row(store, i, geom, passed, at_max.get(i, {})) for i in passed.used]
    observations += [_obs_row(store, i, "skipped", r) for i, r in skipped]
    maps, off_significance, _ = by_radius[config.excess.radii_deg[0]]
    return Result(config=config, geom=geom, stack=passed.stack, maps=maps, exclusion=exclusion,
                  summary=summary, observations=observations,
                  off_significance=off_significance, band_maps=band_maps,
                  per_observation=passed.per_observation,
                  maps_by_radius={r: v[0] for r, v in by_radius.items()},
                  off_by_radius={r: v[1] for r, v in by_radius.items()},
                  energy_true_edges_tev=make_energy_true_edges(config),
                  flux_response=flux_response(config, geom, passed.edisp_stack))


def _summary(config, geom, stack, by_radius, used, skipped, timings, auto_iterations):
    import astropy
    import scipy

    radii = {radius_key(r): {"max_significance": _max_significance(maps["SIGNIFICANCE"], geom),
                             "off_distribution": fit}
             for r, (maps, _, fit) in by_radius.items()}
    first = radii[radius_key(config.excess.radii_deg[0])]
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
        "max_significance": first["max_significance"],
        "off_distribution": first["off_distribution"],
        "correlation_radius_deg": config.excess.radii_deg[0],
        "radii": radii,
        "n_pixels_no_off": int(np.sum(~m)),
        "auto_exclusion_iterations": auto_iterations,
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "versions": {"ringbg": __version__, "numpy": np.__version__,
                     "astropy": astropy.__version__, "scipy": scipy.__version__},
    }
