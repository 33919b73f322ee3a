"""Reference results from gammapy 2.1 for the ring-background workflow.

A test helper, not a test module: the reference tests import it as
``from gammapy_ref import run_gammapy``. It is the only place where gammapy is
imported (gammapy is a test-only dependency of ringbg).

`run_gammapy` runs the workflow of the seed tutorial (``ring_background_tutorial``)
with gammapy's own classes, for any ringbg config dict, and returns the
intermediate and final maps as plain numpy arrays:

    Analysis (datasets.type 3d, stack false, energy_true = geom.energy_true or
    energy, cutout 'trim' of width 2 * offset_max, safe mask; energy dispersion
    maps unless excess.edisp is false) -> per observation ``dataset.to_image()``
    -> RingBackgroundMaker (or `CorrectedAdaptiveRingBackgroundMaker`)
    -> ``MapDatasetOnOff.stack`` onto the full geometry -> ExcessMapEstimator.

Two deliberate differences from a literal copy of the tutorial:

* The exclusion mask and the stacked dataset live on the full analysis geometry.
  The tutorial takes that geometry from ``datasets[0]``'s cutout, which is the
  same thing when the cutouts are not trimmed (as in the tutorial), and wrong
  when they are.
* ``Analysis`` has no projection setting (it always builds CAR). A thin subclass
  passes ``geom.projection`` on to ``WcsGeom.create``; for CAR the geometry is
  exactly the one ``Analysis`` builds.
"""

import copy
import logging
import os
import time
import warnings

import astropy.units as u
import numpy as np
from astropy.coordinates import Angle, SkyCoord
from astropy.units import UnitsWarning
from gammapy.analysis import Analysis, AnalysisConfig
from gammapy.datasets import MapDatasetOnOff
from gammapy.estimators import ExcessMapEstimator
from gammapy.makers import AdaptiveRingBackgroundMaker, RingBackgroundMaker
from gammapy.maps import WcsGeom
from gammapy.modeling.models import PowerLawSpectralModel
from regions import CircleSkyRegion

__all__ = ["run_gammapy", "CorrectedAdaptiveRingBackgroundMaker", "DEFAULTS"]

log = logging.getLogger(__name__)

#: Defaults for the optional config keys, as in ``docs/DESIGN.md``.
#: ``datastore`` and ``geom.skydir`` have no default. No ``obs_ids`` means all
#: observations; no ``cone`` means no cone selection; no exclusion regions
#: means nothing is excluded.
DEFAULTS = {
    "observations": {"obs_ids": None, "cone": None},
    "geom": {
        "width": "5 deg",
        "binsize": "0.02 deg",
        "projection": "CAR",
        "energy": {"min": "1 TeV", "max": "10 TeV", "nbins": 5},
        "offset_max": "2.5 deg",
    },
    "safe_mask": {"methods": ["aeff-default"], "parameters": {}},
    "exclusion": {"regions": [], "files": [], "auto": None},
    "ring": {"r_in": "0.5 deg", "width": "0.3 deg", "adaptive": None},
    "excess": {
        "correlation_radius": "0.1 deg",
        "correlate_off": True,
        "n_sigma_ul": 2,
        "spectral_index": 2.0,
        "edisp": True,
    },
}

#: Defaults of the ``ring.adaptive`` block (gammapy's own defaults).
ADAPTIVE_DEFAULTS = {
    "stepsize": "0.02 deg",
    "threshold_alpha": 0.1,
    "theta": "0.22 deg",
    "method": "fixed_width",
}

#: Quantities taken from the ExcessMapEstimator result, when it has them.
EXCESS_QUANTITIES = (
    "sqrt_ts",
    "ts",
    "npred",
    "npred_excess",
    "npred_background",
    "norm",
    "norm_err",
    "norm_errn",
    "norm_errp",
    "norm_ul",
    "flux",
    "flux_err",
    "flux_errn",
    "flux_errp",
    "flux_ul",
    "flux_sensitivity",
)


class CorrectedAdaptiveRingBackgroundMaker(AdaptiveRingBackgroundMaker):
    """Adaptive ring background as published, i.e. gammapy 2.1's with two fixes.

    The adaptive ring (Berge, Funk & Hinton 2007) picks, for every pixel, the
    first ring (growing inner radius for ``fixed_width``, growing width for
    ``fixed_r_in``) for which the approximate exposure ratio

        alpha_approx = sum_{|x - x0| <= theta} bkg(x)
                       / sum_{x in ring(x0)} bkg(x) * excl(x)

    is at most ``threshold_alpha``: the on region of radius ``theta`` must see at
    most ``threshold_alpha`` times the background acceptance of the ring.

    gammapy 2.1 gets two things wrong, which this subclass overrides:

    1. `make_cubes` builds the on-region top-hat with radius
       ``theta * pixel_scale`` (deg * deg, e.g. 0.22 * 0.02 = 0.0044) instead of
       ``theta / pixel_scale`` (11 px), so the top-hat is a single pixel and
       alpha_approx compares one pixel with a whole ring. Here the ``acceptance``
       cube, which is used *only* for alpha_approx, is recomputed with the
       ``theta / pixel_scale`` top-hat (peak-normalised, i.e. a sum over the
       disc; no exclusion applied to the on region).
    2. `_reduce_cubes` returns that (theta-integrated) ``acceptance`` cube slice
       as the dataset's acceptance. The acceptance of the on/off dataset must be
       the per-pixel background, as for `RingBackgroundMaker`, so that
       alpha = acceptance / acceptance_off is the per-pixel exposure ratio.
       (In gammapy the two bugs cancel here because the top-hat is 1 px.)

    Also, where no ring reaches ``threshold_alpha`` gammapy leaves NaN counts_off
    and acceptance_off and keeps the pixel in ``mask_safe`` (``NaN <= 0`` is
    False). Here such pixels get ``counts_off = acceptance_off = 0``, which the
    unchanged `run` then removes from ``mask_safe`` (``acceptance_off <= 0``),
    the same path as pixels without off acceptance in `RingBackgroundMaker`.

    Everything else (ring kernels, FFT convolutions, exclusion lookup with
    ``interp_to_geom``, the selection loop, `run`) is gammapy's unchanged.
    """

    tag = "CorrectedAdaptiveRingBackgroundMaker"

    def make_cubes(self, dataset):
        """Make the off and acceptance cubes, with the on-region top-hat fixed.

        Parameters
        ----------
        dataset : `~gammapy.datasets.MapDataset`
            Input (image) map dataset.

        Returns
        -------
        cubes : dict of `~numpy.ndarray`
            ``counts_off``, ``acceptance_off`` (one ring per last-axis index,
            as in gammapy) and ``acceptance``: the background summed over the
            disc of radius ``theta`` around each pixel, repeated per ring.
        """
        from astropy.convolution import Tophat2DKernel

        cubes = super().make_cubes(dataset)
        background = dataset.npred_background()
        scale = background.geom.pixel_scales[0]
        tophat = Tophat2DKernel((self.theta / scale).to_value(""))
        tophat.normalize("peak")
        acceptance_theta = background.convolve(tophat.array).data[0]
        n_kernels = cubes["counts_off"].shape[-1]
        cubes["acceptance"] = np.repeat(
            acceptance_theta[..., np.newaxis], n_kernels, axis=2
        )
        return cubes

    def _reduce_cubes(self, cubes, dataset):
        """Select the ring per pixel; keep the per-pixel acceptance.

        Parameters
        ----------
        cubes : dict of `~numpy.ndarray`
            Output of `make_cubes`.
        dataset : `~gammapy.datasets.MapDataset`
            Input (image) map dataset.

        Returns
        -------
        acceptance, acceptance_off, counts_off : `~gammapy.maps.WcsNDMap`
            ``acceptance`` is the dataset's background image; where no ring
            qualifies ``counts_off`` and ``acceptance_off`` are 0.
        """
        _, acceptance_off, counts_off = super()._reduce_cubes(cubes, dataset)
        no_ring = ~np.isfinite(acceptance_off.data)
        acceptance_off.data[no_ring] = 0
        counts_off.data[no_ring] = 0
        acceptance = dataset.npred_background()
        return acceptance, acceptance_off, counts_off


class _ProjectionAnalysis(Analysis):
    """`~gammapy.analysis.Analysis` whose WCS geometry has a chosen projection.

    ``AnalysisConfig`` has no projection key; this mirrors
    ``Analysis._create_wcs_geometry`` and adds ``proj``. With ``proj="CAR"``
    (``WcsGeom.create``'s default) the geometry is the one ``Analysis`` makes.
    """

    def __init__(self, config, proj="CAR"):
        self._proj = proj
        super().__init__(config)

    def _create_geometry(self):
        settings = self.config.datasets.geom
        wcs = settings.wcs
        axes = [self._make_energy_axis(settings.axes.energy)]
        skydir = SkyCoord(wcs.skydir.lon, wcs.skydir.lat, frame=wcs.skydir.frame)
        return WcsGeom.create(
            skydir=skydir,
            frame=wcs.skydir.frame,
            axes=axes,
            binsz=wcs.binsize,
            width=(wcs.width.width.to_value("deg"), wcs.width.height.to_value("deg")),
            proj=self._proj,
        )


def _merge_defaults(cfg, defaults):
    """Return ``cfg`` with missing keys filled from ``defaults`` (recursively)."""
    out = copy.deepcopy(defaults)
    for key, value in (cfg or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_defaults(value, out[key])
        else:
            out[key] = copy.deepcopy(value)
    return out


def _angle(value):
    """Parse ``"0.5 deg"`` (or a Quantity) into an `~astropy.coordinates.Angle`."""
    return Angle(value)


def _skycoord(spec):
    """SkyCoord from a ``{frame, lon, lat}`` mapping."""
    return SkyCoord(_angle(spec["lon"]), _angle(spec["lat"]), frame=spec["frame"])


def _analysis_config(cfg):
    """Translate a ringbg config (defaults filled) into an ``AnalysisConfig``.

    Parameters
    ----------
    cfg : dict
        ringbg config with defaults filled in.

    Returns
    -------
    config : `~gammapy.analysis.AnalysisConfig`
        The tutorial's settings for this config.
    """
    geom = cfg["geom"]
    obs = cfg["observations"]

    config = AnalysisConfig()
    config.general.log = {"level": "warning"}
    config.observations.datastore = os.path.expandvars(str(cfg["datastore"]))
    if obs.get("obs_ids"):
        config.observations.obs_ids = [int(i) for i in obs["obs_ids"]]
    cone = obs.get("cone")
    if cone:
        config.observations.obs_cone = {
            "frame": cone["frame"],
            "lon": _angle(cone["lon"]),
            "lat": _angle(cone["lat"]),
            "radius": _angle(cone["radius"]),
        }

    config.datasets.type = "3d"
    config.datasets.stack = False
    skydir = geom["skydir"]
    config.datasets.geom.wcs.skydir = {
        "frame": skydir["frame"],
        "lon": _angle(skydir["lon"]),
        "lat": _angle(skydir["lat"]),
    }
    width = geom["width"]
    if isinstance(width, (list, tuple)):
        width, height = width
    else:
        height = width
    config.datasets.geom.wcs.width = {"width": _angle(width), "height": _angle(height)}
    config.datasets.geom.wcs.binsize = _angle(geom["binsize"])
    config.datasets.geom.selection.offset_max = _angle(geom["offset_max"])

    def axis(spec):
        return {
            "min": u.Quantity(spec["min"]),
            "max": u.Quantity(spec["max"]),
            "nbins": int(spec["nbins"]),
        }

    config.datasets.geom.axes.energy = axis(geom["energy"])
    # as in the tutorial, the true-energy axis is the reconstructed one unless given
    config.datasets.geom.axes.energy_true = axis(geom.get("energy_true") or geom["energy"])
    if not cfg["excess"].get("edisp", True):
        # no energy-dispersion maps: the flux maps use the diagonal response
        config.datasets.map_selection = ["counts", "exposure", "background", "psf"]

    config.datasets.safe_mask.methods = list(cfg["safe_mask"]["methods"])
    parameters = dict(cfg["safe_mask"]["parameters"] or {})
    # ringbg's contract (DESIGN.md, issue 11): the offset-max cut defaults to the geometry's
    # offset_max; gammapy's bare SafeMaskMaker default is 3 deg, so it is passed on explicitly
    parameters.setdefault("offset_max", geom["offset_max"])
    config.datasets.safe_mask.parameters = parameters
    return config


def _exclusion_mask(geom_image, exclusion):
    """Exclusion mask as the tutorial builds it: ``~geom_image.region_mask(regions)``.

    Parameters
    ----------
    geom_image : `~gammapy.maps.WcsGeom`
        Full image geometry with the squashed energy axis.
    exclusion : dict
        The config's ``exclusion`` block. ``regions`` are circles; ``files`` may
        hold DS9 region files (every region in them is excluded).

    Returns
    -------
    mask : `~gammapy.maps.WcsNDMap`
        Boolean mask, True = not excluded.
    """
    if exclusion.get("auto"):
        raise NotImplementedError("gammapy_ref: automatic exclusion is not supported")
    regions = [
        CircleSkyRegion(center=_skycoord(r), radius=_angle(r["radius"]))
        for r in exclusion.get("regions") or []
    ]
    for path in exclusion.get("files") or []:
        path = os.path.expandvars(str(path))
        if path.lower().endswith((".fits", ".fits.gz", ".fit")):
            raise NotImplementedError("gammapy_ref: FITS exclusion maps are not supported")
        from regions import Regions

        regions.extend(Regions.read(path, format="ds9"))
    if not regions:
        return _all_true(geom_image)
    return ~geom_image.region_mask(regions)


def _all_true(geom):
    """An all-True boolean mask on ``geom``."""
    from gammapy.maps import Map

    return Map.from_geom(geom, data=np.ones(geom.data_shape, dtype=bool))


def _ring_maker(ring, exclusion_mask):
    """RingBackgroundMaker or CorrectedAdaptiveRingBackgroundMaker for ``ring``."""
    adaptive = ring.get("adaptive")
    if not adaptive:
        return RingBackgroundMaker(
            r_in=ring["r_in"], width=ring["width"], exclusion_mask=exclusion_mask
        )
    adaptive = _merge_defaults(adaptive, ADAPTIVE_DEFAULTS)
    return CorrectedAdaptiveRingBackgroundMaker(
        r_in=ring["r_in"],
        width=ring["width"],
        r_out_max=adaptive["r_out_max"],
        stepsize=adaptive["stepsize"],
        threshold_alpha=float(adaptive["threshold_alpha"]),
        theta=adaptive["theta"],
        method=adaptive["method"],
        exclusion_mask=exclusion_mask,
    )


def _cutout_slices(full_geom, cutout_geom):
    """Where a per-observation cutout lies in the full geometry.

    Parameters
    ----------
    full_geom, cutout_geom : `~gammapy.maps.WcsGeom`
        The full geometry and an aligned cutout of it.

    Returns
    -------
    slices : tuple of slice
        ``(slice_y, slice_x)`` such that ``full[..., slice_y, slice_x]`` is the
        cutout's footprint.
    """
    crpix_full = full_geom.wcs.wcs.crpix
    crpix_cut = cutout_geom.wcs.wcs.crpix
    offset = crpix_full - crpix_cut
    ix, iy = (int(round(v)) for v in offset)
    if not np.allclose(offset, (ix, iy), atol=1e-6):
        raise ValueError(f"cutout is not pixel-aligned: CRPIX offset {offset}")
    ny, nx = (int(n) for n in cutout_geom.data_shape[-2:])
    return slice(iy, iy + ny), slice(ix, ix + nx)


def _obs_id(dataset):
    """Observation id of a reduced dataset (from its meta table)."""
    return int(np.atleast_1d(dataset.meta_table["OBS_ID"])[0])


def _livetime_s(dataset):
    """Livetime of a dataset's exposure in seconds (0 if not set)."""
    livetime = dataset.exposure.meta.get("livetime")
    return 0.0 if livetime is None else float(u.Quantity(livetime).to_value("s"))


def _gti_tt_s(gti):
    """A gammapy GTI as (n, 2) TT seconds since MJD 51910 + 7.4287e-4 (ringbg's reference),
    or None."""
    from astropy.time import Time

    if gti is None or len(gti.table) == 0:
        return None
    ref = Time(51910, 7.428703703703703e-4, format="mjd", scale="tt")
    return np.column_stack([(gti.time_start.tt - ref).to_value("s"),
                            (gti.time_stop.tt - ref).to_value("s")])


def _image(map_):
    """A gammapy image map (one energy bin) as a 2D float64 array."""
    data = np.asarray(map_.data, dtype=np.float64)
    return data[0] if data.ndim == 3 else data


def _excess_maps(result, quantities=EXCESS_QUANTITIES):
    """Pick the 2D maps out of an ExcessMapEstimator result.

    Parameters
    ----------
    result : `~gammapy.estimators.FluxMaps`
        Estimator result with one energy bin.
    quantities : sequence of str
        Names to try; those the result cannot provide are left out.

    Returns
    -------
    maps : dict of `~numpy.ndarray`
        2D float64 arrays.
    """
    maps = {}
    for name in quantities:
        try:
            map_ = result[name]
        except Exception:  # not available for this result / selection
            continue
        maps[name] = _image(map_)
    return maps


def run_gammapy(cfg, *, per_obs=True, selection_optional=("errn-errp", "ul"), bands=False):
    """Run gammapy 2.1's ring-background workflow for a ringbg config.

    Parameters
    ----------
    cfg : dict
        Config shaped like the YAML contract in ``docs/DESIGN.md`` (values as
        strings with units). Missing optional keys take the DESIGN defaults
        (`DEFAULTS`). ``$VARS`` in ``datastore`` are expanded.
    per_obs : bool, optional
        Keep the per-observation arrays (the default). False saves memory.
    selection_optional : sequence of str, optional
        Passed to ``ExcessMapEstimator``. The default ``("errn-errp", "ul")``
        adds ``norm_errn``/``norm_errp``/``norm_ul`` (and the flux ones); their
        per-pixel root finds take about 150 s for 150 x 150 pixels, whereas
        ``()`` takes a fraction of a second. The ``sqrt_ts_off`` run always
        uses ``()`` (sqrt_ts does not depend on it).

    Returns
    -------
    ref : dict
        Plain numpy arrays and python numbers:

        ``obs_ids``
            list of int, processing order.
        ``per_obs``
            ``{obs_id: {...}}`` with the 3D cubes of the reduced MapDataset
            (``counts``, ``exposure`` (E_true), ``background``, ``mask_safe``;
            shape (E, ny, nx) on the cutout), the 2D maps of the on/off dataset
            after the ring maker (``counts_off``, ``acceptance``,
            ``acceptance_off``, ``alpha``, ``mask_safe_image``), ``cutout_slices``
            (``(slice_y, slice_x)`` into the full geometry) and ``livetime_s``.
        ``stacked``
            ``counts``, ``counts_off``, ``acceptance``, ``acceptance_off``,
            ``alpha``, ``mask_safe`` as 2D float64 arrays, ``exposure`` (3D,
            E_true, float64), ``livetime_s``, ``edisp_kernel_map`` (the stacked
            energy-dispersion kernel on the 0.2 deg IRF grid, (E_true, y, x): the
            probability of reconstruction in the energy range) and
            ``edisp_response`` (E_true,), the kernel ExcessMapEstimator uses.
        ``excess``
            2D maps of ExcessMapEstimator on the stacked dataset (``sqrt_ts``,
            ``ts``, ``npred``, ``npred_excess``, ``npred_background``, ``norm``,
            ``norm_err``, ``norm_errn``, ``norm_errp``, ``norm_ul``, ``flux``,
            ``flux_err``, ``flux_errn``, ``flux_errp``, ``flux_ul``, where
            available) plus ``sqrt_ts_off``: sqrt_ts of a second run with
            ``mask_fit`` = exclusion mask (the tutorial's off distribution).
        ``exclusion``
            2D bool array on the full geometry, True = not excluded.
        ``wcs_header``
            dict, the full geometry's 2D WCS header.
        ``timings``
            seconds: ``reduction`` (observations + Analysis.get_datasets),
            ``ring`` (to_image + ring + stack), ``excess`` (first estimator
            run), ``total``.
    """
    cfg = _merge_defaults(cfg, DEFAULTS)
    timings = {}
    t_start = time.perf_counter()

    config = _analysis_config(cfg)
    analysis = _ProjectionAnalysis(config, proj=cfg["geom"]["projection"])
    # Analysis logs a warning "No background maker set": that is intended
    # (the ring maker runs afterwards, per observation, as in the tutorial).
    analysis_log = logging.getLogger("gammapy.analysis.core")
    level = analysis_log.level
    analysis_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            # CTA 1DC IRFs: BKG unit '1/s/MeV/sr' is not FITS-standard
            warnings.simplefilter("ignore", UnitsWarning)
            analysis.get_observations()
            analysis.get_datasets()
    finally:
        analysis_log.setLevel(level)
    datasets = [d for d in analysis.datasets if d is not None]
    if not datasets:
        raise RuntimeError("gammapy_ref: no dataset was reduced")
    timings["reduction"] = time.perf_counter() - t_start

    geom = analysis._create_geometry()
    energy_axis = geom.axes["energy"]
    geom_image = geom.to_image().to_cube([energy_axis.squash()])
    exclusion_mask = _exclusion_mask(geom_image, cfg["exclusion"])
    ring_maker = _ring_maker(cfg["ring"], exclusion_mask)

    t0 = time.perf_counter()
    energy_axis_true = datasets[0].exposure.geom.axes["energy_true"]
    stacked = MapDatasetOnOff.create(
        geom=geom_image, energy_axis_true=energy_axis_true, name="stacked"
    )
    obs_ids = []
    per_obs_out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for dataset in datasets:
            dataset_on_off = ring_maker.run(dataset.to_image())
            stacked.stack(dataset_on_off)
            obs_id = _obs_id(dataset)
            obs_ids.append(obs_id)
            if per_obs:
                per_obs_out[obs_id] = {
                    "counts": np.asarray(dataset.counts.data, dtype=np.float64),
                    "exposure": np.asarray(dataset.exposure.data, dtype=np.float64),
                    "background": np.asarray(dataset.background.data, dtype=np.float64),
                    "mask_safe": np.asarray(dataset.mask_safe.data, dtype=bool),
                    "counts_off": _image(dataset_on_off.counts_off),
                    "acceptance": _image(dataset_on_off.acceptance),
                    "acceptance_off": _image(dataset_on_off.acceptance_off),
                    "alpha": _image(dataset_on_off.alpha),
                    "mask_safe_image": np.asarray(
                        dataset_on_off.mask_safe.data[0], dtype=bool
                    ),
                    "cutout_slices": _cutout_slices(geom, dataset.counts.geom),
                    "livetime_s": _livetime_s(dataset),
                }
    timings["ring"] = time.perf_counter() - t0

    excess_cfg = cfg["excess"]
    estimator_kwargs = dict(
        correlation_radius=excess_cfg["correlation_radius"],
        correlate_off=bool(excess_cfg["correlate_off"]),
        n_sigma_ul=float(excess_cfg["n_sigma_ul"]),
        spectral_model=PowerLawSpectralModel(index=float(excess_cfg["spectral_index"])),
    )
    sens = excess_cfg.get("sensitivity") or {}
    sens_kwargs = {k: v for k, v in (
        ("n_sigma_sensitivity", sens.get("n_sigma")),
        ("gamma_min_sensitivity", sens.get("gamma_min")),
        ("bkg_syst_fraction_sensitivity", sens.get("bkg_syst_fraction")),
        ("apply_threshold_sensitivity", sens.get("apply_threshold"))) if v is not None}
    estimator = ExcessMapEstimator(**sens_kwargs,
        selection_optional=list(selection_optional), **estimator_kwargs
    )
    estimator_off = ExcessMapEstimator(selection_optional=[], **estimator_kwargs)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = estimator.run(stacked)
        timings["excess"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start
        excess = _excess_maps(result)

        # the tutorial's off distribution: same estimator, mask_fit = exclusion
        stacked_off = stacked.copy(name="stacked-off")
        stacked_off.mask_fit = exclusion_mask
        excess["sqrt_ts_off"] = _image(estimator_off.run(stacked_off)["sqrt_ts"])
        if bands:
            # per reconstructed-energy bin: the ring on each run's cube, stacked as cubes,
            # then ExcessMapEstimator with energy_edges (gammapy's per-band workflow)
            band_mask = exclusion_mask.interp_to_geom(geom)
            band_ring = _ring_maker(cfg["ring"], band_mask)
            stacked_bands = MapDatasetOnOff.create(
                geom=geom, energy_axis_true=energy_axis_true, name="stacked-bands")
            for dataset in datasets:
                stacked_bands.stack(band_ring.run(dataset))
            band_estimator = ExcessMapEstimator(selection_optional=[],
                                                energy_edges=energy_axis.edges,
                                                **estimator_kwargs)
            band_result = band_estimator.run(stacked_bands)
            excess["bands"] = {name: np.asarray(band_result[name].data, dtype=np.float64)
                               for name in ("sqrt_ts", "npred_excess", "flux", "flux_err")}

    stacked_out = {
        name: _image(getattr(stacked, name))
        for name in ("counts", "counts_off", "acceptance", "acceptance_off", "alpha")
    }
    stacked_out["mask_safe"] = np.asarray(stacked.mask_safe.data[0], dtype=bool)
    stacked_out["exposure"] = np.asarray(stacked.exposure.data, dtype=np.float64)
    stacked_out["livetime_s"] = _livetime_s(stacked)
    stacked_out["gti_tt_s"] = _gti_tt_s(stacked.gti)
    # the stacked energy-dispersion kernel on the IRF grid (E_true, y, x), and the one
    # ExcessMapEstimator folds the power law through (at the grid's centre)
    stacked_out["edisp_kernel_map"] = np.asarray(stacked.edisp.edisp_map.data[:, 0], float)
    kernel = stacked.edisp.get_edisp_kernel(energy_axis=stacked._geom.axes["energy"])
    stacked_out["edisp_response"] = np.asarray(kernel.pdf_matrix[:, 0], dtype=np.float64)

    return {
        "obs_ids": obs_ids,
        "per_obs": per_obs_out,
        "stacked": stacked_out,
        "excess": excess,
        "exclusion": np.asarray(exclusion_mask.data[0], dtype=bool),
        "wcs_header": dict(geom.wcs.to_header()),
        "timings": timings,
    }
