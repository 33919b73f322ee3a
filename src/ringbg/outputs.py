"""Output files: ``stacked_onoff.fits``, ``maps.fits``, ``summary.json``, figures, report.

Everything is written into a temporary folder beside OUTDIR and renamed into place at the
end, so an interrupted run leaves either the previous OUTDIR or the complete new one. What
OUTDIR may be, and what ``--overwrite`` may replace, is decided in `ringbg.outdir`.
"""

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from .datastore import cached_datastore
from .errors import OutputError
from .outdir import (
    create_temporary,
    deferred_interrupt,
    discard_temporary,
    finish_temporary,
    move_into_place,
    prepare_outdir,
    remove_output,
    remove_stale_temporaries,  # noqa: F401 (part of this module's interface before ringbg.outdir)
    temporary_path,
)
from .products import BAND_PRODUCTS, PRODUCTS
from .progress import stage
from .version import __version__

__all__ = ["write_outputs", "write_onoff", "write_maps", "start_figures", "OutputError",
           "prepare_outdir"]

log = logging.getLogger(__name__)


def _bands_hdu(name, edges_tev, true_energy=False):
    """The ``<NAME>_BANDS`` table of the energy axis, as gammapy writes it."""
    edges = np.asarray(edges_tev, float)
    prefix = "ENERGY_TRUE" if true_energy else "ENERGY"
    lo_name, hi_name = (f"{prefix}_MIN", f"{prefix}_MAX") if true_energy else ("E_MIN", "E_MAX")
    columns = [
        fits.Column("CHANNEL", "K", array=np.arange(len(edges) - 1, dtype=np.int64)),
        fits.Column(prefix, "D", unit="TeV", array=np.sqrt(edges[:-1] * edges[1:])),
        fits.Column(lo_name, "D", unit="TeV", array=edges[:-1]),
        fits.Column(hi_name, "D", unit="TeV", array=edges[1:]),
    ]
    hdu = fits.BinTableHDU.from_columns(columns, name=f"{name}_BANDS")
    hdu.header["AXCOLS1"] = f"{lo_name},{hi_name}"
    hdu.header["INTERP1"] = "log"
    return hdu


def _cube_hdus(name, data, wcs_header, edges_tev, unit="", meta=None, true_energy=False):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    header = wcs_header.copy()
    lo, hi = ("ENERGY_TRUE_MIN,ENERGY_TRUE_MAX" if true_energy else "E_MIN,E_MAX").split(",")
    header["AXCOLS1"] = f"{lo},{hi}"
    header["INTERP1"] = "log"
    header["WCSSHAPE"] = f"({data.shape[2]},{data.shape[1]},{data.shape[0]})"
    header["BANDSHDU"] = f"{name}_BANDS"
    header["META"] = json.dumps(meta or {})
    header["BUNIT"] = unit
    image = fits.ImageHDU(data, header=header, name=name)
    return [image, _bands_hdu(name, edges_tev, true_energy)]


def write_onoff(path, counts, counts_off, acceptance, acceptance_off, mask, exposure, wcs_header,
                energy_edges_tev, livetime_s, name="stacked", energy_true_edges_tev=None,
                gti_tt_s=None):
    """An on/off dataset that gammapy's ``MapDatasetOnOff.read`` loads.

    Images carry one reconstructed-energy bin spanning the whole range; the exposure keeps its
    true-energy bins (``energy_true_edges_tev``, by default the reconstructed-energy edges).
    ``gti_tt_s``, (n, 2) TT seconds since `ringbg.dl3.GTI_REF_MJD_TT`, is written as the
    ``GTI`` table (gammapy's ``dataset.gti``).
    """
    edges = np.asarray(energy_edges_tev, float)
    squashed = np.array([edges[0], edges[-1]])
    if energy_true_edges_tev is not None:
        edges = np.asarray(energy_true_edges_tev, float)
    primary = fits.PrimaryHDU()
    primary.header["NAME"] = name
    primary.header["CREATOR"] = "ringbg"
    hdus = [primary]
    hdus += _cube_hdus("COUNTS", np.asarray(counts, np.float32), wcs_header, squashed)
    hdus += _cube_hdus("EXPOSURE", np.asarray(exposure, np.float32), wcs_header, edges, "m2 s",
                       {"livetime": f"{livetime_s} s"}, true_energy=True)
    hdus += _cube_hdus("MASK_SAFE", np.asarray(mask, np.int64), wcs_header, squashed)
    hdus += _cube_hdus("COUNTS_OFF", np.asarray(counts_off, np.float32), wcs_header, squashed)
    hdus += _cube_hdus("ACCEPTANCE", np.asarray(acceptance, np.float32), wcs_header, squashed)
    hdus += _cube_hdus("ACCEPTANCE_OFF", np.asarray(acceptance_off, np.float32), wcs_header,
                       squashed)
    if gti_tt_s is not None:
        hdus.append(_gti_hdu(gti_tt_s))
    fits.HDUList(hdus).writeto(path, overwrite=True)


def _gti_hdu(gti_tt_s):
    """The GADF ``GTI`` table of (n, 2) TT seconds since `ringbg.dl3.GTI_REF_MJD_TT`."""
    from .dl3 import GTI_REF_MJD_TT

    gti = np.asarray(gti_tt_s, dtype=float).reshape(-1, 2)
    hdu = fits.BinTableHDU.from_columns(
        [fits.Column("START", "D", unit="s", array=gti[:, 0]),
         fits.Column("STOP", "D", unit="s", array=gti[:, 1])], name="GTI")
    header = hdu.header
    header["MJDREFI"] = (GTI_REF_MJD_TT[0], "integer part of the reference MJD")
    header["MJDREFF"] = (GTI_REF_MJD_TT[1], "fraction of the reference MJD")
    header["TIMESYS"] = ("TT", "time scale")
    header["TIMEUNIT"] = ("s", "unit of START and STOP")
    header["TIMEREF"] = ("LOCAL", "reference position")
    return hdu


def write_maps(path, maps, wcs_header, extra_header=None):
    """One named 2D image HDU per map, each with the celestial WCS and BUNIT."""
    hdus = [fits.PrimaryHDU()]
    hdus[0].header["CREATOR"] = "ringbg"
    for key, value in (extra_header or {}).items():
        hdus[0].header[key] = value
    for name, data in maps.items():
        header = wcs_header.copy()
        product = PRODUCTS.get(name)
        header["BUNIT"] = product.unit if product else ""
        if product:
            header["COMMENT"] = product.comment
        dtype = np.uint8 if name == "EXCLUSION" else np.float32
        hdus.append(fits.ImageHDU(np.asarray(data, dtype=dtype), header=header, name=name))
    fits.HDUList(hdus).writeto(path, overwrite=True)


def _band_maps(result):
    """``maps_bands.fits`` content: per-band images stacked along a leading energy axis."""
    first = result.band_maps[0]  # point-like IRFs: no flux maps
    return {name: np.stack([b[name] for b in result.band_maps]) for name in BAND_PRODUCTS
            if name in first}


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_checksums(result):
    """SHA-256 of the index files and of the observations' files."""
    store = cached_datastore(result.config.datastore)
    paths = set()
    for obs_id in result.summary["obs_ids"]:
        paths.update(str(loc[0]) for loc in store.hdu_locations(obs_id).values())
    out = []
    for path in sorted(paths):
        if os.path.exists(path):
            out.append({"path": path, "sha256": _sha256(path)})
    return out


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _clean_json(obj):
    """Replace NaN and inf by None so that summary.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_json(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not np.isfinite(obj):
        return None
    return obj


def _write_error(outdir, exc, folder=None):
    """One line for an `OSError` while writing (full disk, permissions, a vanished folder).

    Libraries re-raise with their own text (astropy drops the errno of a full disk): the
    first error in the chain that has an errno is the one reported.
    """
    cause, seen, found = exc, set(), None
    while cause is not None and id(cause) not in seen and found is None:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno:
            found = cause
        cause = cause.__cause__ or cause.__context__
    if found is not None:
        exc, reason = found, found.strerror or str(found)
    elif "space on disk" in str(exc) or _disk_full(folder):
        reason = os.strerror(errno.ENOSPC)
    else:
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = f" ({exc.filename})" if exc.filename else ""
    return f"cannot write the outputs for {outdir}: {reason}{where}; {outdir} was left as it was"


def _disk_full(folder, min_free_bytes=2**20):
    try:
        return folder is not None and shutil.disk_usage(folder).free < min_free_bytes
    except OSError:
        return False


def write_outputs(result, outdir=None, overwrite=None, figures=None, protected=(),
                  progress=None, started_figures=None):
    """Write every output of ``result`` into ``outdir`` atomically; returns the folder.

    ``outdir`` is checked (`ringbg.outdir.check_outdir`: what may be written or replaced)
    before and again at the final rename. ``protected``: further ``(what, path)`` inputs
    that OUTDIR must not hold (the config file, the cache); the data store and the exclusion
    files of the config are always protected. Any `OSError` becomes an `OutputError`.
    ``progress``: told when each stage starts (`ringbg.progress.stage`).
    ``started_figures``: the figures of ``result`` already on their way (`start_figures`
    of the previews of ``ringbg.pipeline.run``'s ``on_stack`` and ``on_maps``; one or a
    list, in the order started), written instead of drawn now.
    """
    cfg = result.config
    outdir = Path(outdir if outdir is not None else cfg.output.dir)
    overwrite = cfg.output.overwrite if overwrite is None else overwrite
    figures = cfg.output.figures if figures is None else figures
    protected = [("exclusion file", f) for f in cfg.exclusion.files] + list(protected)
    started = ([] if started_figures is None else list(started_figures)
               if isinstance(started_figures, (list, tuple)) else [started_figures])
    target = prepare_outdir(outdir, overwrite, cfg.datastore, protected)
    t0 = time.perf_counter()
    tmp, old = temporary_path(target), None
    try:
        create_temporary(tmp)
        # the summary written: the run's, with the inputs' checksums and the write time (the
        # Result itself is left as it is)
        summary = {**result.summary, "timings": dict(result.summary["timings"])}
        _write_all(result, tmp, figures, summary, progress, started)
        summary["timings"]["write"] = round(time.perf_counter() - t0, 4)
        _write_summary(summary, tmp)
        finish_temporary(tmp)
        old = move_into_place(tmp, target, overwrite, cfg.datastore, protected)
    except OSError as exc:
        discard_temporary(tmp)
        raise OutputError(_write_error(outdir, exc, target.path.parent)) from None
    except BaseException:
        discard_temporary(tmp)
        for part in started:
            part.cancel()
        raise
    if old is not None:
        with deferred_interrupt():
            remove_output(old)
    return outdir


def _write_summary(summary, folder):
    summary = {"ringbg": __version__, **summary}  # tells ringbg's summary.json apart
    text = json.dumps(_clean_json(summary), indent=2, default=_json_default)
    (folder / "summary.json").write_text(text + "\n")


def maps_file_name(config, radius_deg):
    """``maps.fits`` for the first correlation radius, ``maps_<r>deg.fits`` for the others."""
    if radius_deg == config.excess.radii_deg[0]:
        return "maps.fits"
    return f"maps_{radius_deg:g}deg.fits"


def _write_all(result, folder, figures, summary, progress=None, pending=()):
    # the figures are drawn (in the renderer, when one runs) while the FITS files are written;
    # ``pending``: those already started (`start_figures`), in the order started
    pending = list(pending)
    if figures and not pending:
        pending = [start_figures(result, summary)]
    try:
        _write_fits(result, folder, summary, progress)
        if figures:
            stage(progress, "figures")
            paths = {}
            for part in pending:  # in the order they were started (the renderer's jobs)
                paths.update(part.result(folder))
            _write_report(result, folder, summary, _in_figure_order(paths), progress)
    except BaseException:
        for part in pending:
            part.cancel()  # no more drawing for figures that will not be written
        raise


def _in_figure_order(paths):
    """``{figure name: path}`` in the order of `ringbg.figures.FIGURES` (then the further
    radii's, in their order of arrival)."""
    from .figures import FIGURES

    first = [name for name in FIGURES if name in paths]
    return {name: paths[name] for name in first + [n for n in paths if n not in first]}


def _write_fits(result, folder, summary, progress=None):
    stage(progress, "writing the FITS files")
    geom, stack, cfg = result.geom, result.stack, result.config
    header = geom.image_header()
    e_true = getattr(result, "energy_true_edges_tev", None)
    write_onoff(folder / "stacked_onoff.fits", stack.counts, stack.counts_off, stack.acceptance,
                stack.acceptance_off, stack.mask, stack.exposure, header, geom.energy_edges_tev,
                stack.livetime_s, energy_true_edges_tev=e_true, gti_tt_s=stack.gti_tt_s)
    for k, radius in enumerate(cfg.excess.radii_deg):
        extra = {"EMIN_TEV": float(geom.energy_edges_tev[0]),
                 "EMAX_TEV": float(geom.energy_edges_tev[-1]),
                 "CORR_RAD": (radius, "correlation radius (deg)"),
                 "SPEC_IDX": (cfg.excess.spectral_index, "power-law index of the flux maps")}
        maps = result.maps if k == 0 else result.maps_by_radius[radius]
        write_maps(folder / maps_file_name(cfg, radius), maps, header, extra)
    (folder / "exclusion_mask.fits").unlink(missing_ok=True)
    write_maps(folder / "exclusion_mask.fits", {"EXCLUSION": result.exclusion}, header)
    if result.band_maps:
        maps = _band_maps(result)
        hdus = [fits.PrimaryHDU()]
        for name, data in maps.items():
            hdus += _cube_hdus(name, np.asarray(data, np.float32), header, geom.energy_edges_tev,
                               PRODUCTS[name].unit)
        fits.HDUList(hdus).writeto(folder / "maps_bands.fits")
    if result.per_observation:
        obs_dir = folder / "observations"
        obs_dir.mkdir()
        for onoff in result.per_observation:
            sub = geom.sub_wcs(onoff.slices).to_header()
            write_onoff(obs_dir / f"{onoff.obs_id}_onoff.fits", onoff.counts,
                        np.nan_to_num(onoff.counts_off), onoff.acceptance,
                        np.nan_to_num(onoff.acceptance_off), onoff.mask,
                        onoff.exposure * onoff.mask[None], sub, geom.energy_edges_tev,
                        onoff.livetime_s, name=str(onoff.obs_id), energy_true_edges_tev=e_true,
                        gti_tt_s=onoff.gti_tt_s)
    summary["inputs"] = input_checksums(result)


def start_figures(result, summary=None, skip=()):
    """Start drawing the figures of every correlation radius of ``result``
    (`ringbg.figures.start_render`) whose products it holds, but those named in ``skip``
    (already on their way); ``summary`` (default ``result.summary``): its fits of the off
    distribution (made now for a radius it has none for).

    Returns a `~ringbg.figures.PendingFigures`: ``result(folder)`` writes the PNG files,
    ``names`` are the figures it draws.
    """
    from .figures import FIGURES, make_figure_tasks, start_render

    summary = result.summary if summary is None else summary
    cfg, geom = result.config, result.geom
    adaptive = cfg.ring.adaptive
    common = dict(energy_range_tev=(geom.energy_edges_tev[0], geom.energy_edges_tev[-1]),
                  r_out_max_deg=adaptive.r_out_max if adaptive is not None else None)
    tasks = []
    for k, radius in enumerate(cfg.excess.radii_deg):
        maps = dict(result.maps_by_radius.get(radius, result.maps), EXCLUSION=result.exclusion,
                    OFF_SIGNIFICANCE=result.off_by_radius.get(radius, result.off_significance))
        fit = summary.get("radii", {}).get(f"{radius:g}", {}).get("off_distribution")
        radius_summary = dict(summary, off_distribution=fit or summary.get("off_distribution"))
        extra = {} if k == 0 else {"suffix": f"_{radius:g}deg", "per_radius_only": True}
        if skip:
            extra["names"] = [name for name in FIGURES if name + extra.get("suffix", "")
                              not in skip]
        tasks += make_figure_tasks(maps, geom.wcs, radius_summary, cfg.ring.r_in,
                                   cfg.ring.r_in + cfg.ring.width,
                                   correlation_radius_deg=radius, **common, **extra)
    return start_render(tasks)


def _write_report(result, folder, summary, paths, progress=None):
    import yaml

    from .report import write_report

    config_text = yaml.safe_dump(result.config.model_dump(mode="json"), sort_keys=False)
    stage(progress, "report")
    write_report(folder / "report.html", summary, config_text, paths, result.observations)
