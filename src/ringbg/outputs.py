"""Output files: ``stacked_onoff.fits``, ``maps.fits``, ``summary.json``, figures, report.

Everything is written into a temporary folder beside OUTDIR and renamed into place at the
end, so an interrupted run leaves either the previous OUTDIR or the complete new one.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from .errors import OutputError
from .products import BAND_PRODUCTS, PRODUCTS

__all__ = ["write_outputs", "write_onoff", "write_maps", "OutputError", "prepare_outdir"]

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
                energy_edges_tev, livetime_s, name="stacked"):
    """An on/off dataset that gammapy's ``MapDatasetOnOff.read`` loads.

    Images carry one reconstructed-energy bin spanning the whole range; the exposure keeps its
    true-energy bins.
    """
    edges = np.asarray(energy_edges_tev, float)
    squashed = np.array([edges[0], edges[-1]])
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
    fits.HDUList(hdus).writeto(path, overwrite=True)


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
    return {name: np.stack([b[name] for b in result.band_maps]) for name in BAND_PRODUCTS}


def _sha256(path, limit=None):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_checksums(result):
    """SHA-256 of the index files and of the observations' files."""
    from .pipeline import _datastore

    store = _datastore(result.config.datastore)
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


def prepare_outdir(outdir, overwrite):
    """Check OUTDIR can be (re)written; raises `OutputError` with one line."""
    outdir = Path(outdir)
    if outdir.exists() and not overwrite:
        raise OutputError(f"output folder {outdir} exists; use --overwrite (or output.overwrite)")
    parent = outdir.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write into {parent}")
    return outdir


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _temporary(outdir, kind):
    """``.NAME.KIND-PID@HOST`` beside OUTDIR: the host tells runs on a shared filesystem apart."""
    outdir = Path(outdir)
    return outdir.resolve().parent / f".{outdir.name}.{kind}-{os.getpid()}@{socket.gethostname()}"


def remove_stale_temporaries(outdir):
    """Delete ``.NAME.tmp-PID@HOST`` / ``.NAME.old-PID@HOST`` folders left by killed runs.

    Only folders of this host whose process is gone are touched (another host's run may be
    alive). A ``.old`` folder without OUTDIR (a run killed between its two renames) holds the
    previous results: it is renamed back to OUTDIR.
    """
    outdir = Path(outdir)
    parent = outdir.resolve().parent
    if not parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(outdir.name)}\.(tmp|old)-(\d+)(?:@(.+))?$")
    removed = []
    for path in parent.glob(f".{outdir.name}.*-*"):
        match = pattern.match(path.name)
        if not match:
            continue
        kind, pid, host = match.group(1), int(match.group(2)), match.group(3)
        if host not in (None, socket.gethostname()):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            if kind == "old" and not outdir.exists():
                # killed between the two renames: these are the previous results
                os.replace(path, outdir)
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def write_outputs(result, outdir=None, overwrite=None, figures=None):
    """Write every output of ``result`` into ``outdir`` atomically; returns the folder."""
    cfg = result.config
    outdir = Path(outdir if outdir is not None else cfg.output.dir)
    overwrite = cfg.output.overwrite if overwrite is None else overwrite
    figures = cfg.output.figures if figures is None else figures
    prepare_outdir(outdir, overwrite)
    for path in remove_stale_temporaries(outdir):
        log.info("removed %s, left by an interrupted run", path)
    t0 = time.perf_counter()
    tmp = _temporary(outdir, "tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _write_all(result, tmp, figures)
        result.summary["timings"]["write"] = round(time.perf_counter() - t0, 4)
        _write_summary(result, tmp)
        if outdir.exists():
            old = _temporary(outdir, "old")
            os.replace(outdir, old)
            try:
                os.replace(tmp, outdir)
            except BaseException:
                os.replace(old, outdir)  # put the previous results back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return outdir


def _write_summary(result, folder):
    text = json.dumps(_clean_json(result.summary), indent=2, default=_json_default)
    (folder / "summary.json").write_text(text + "\n")


def _write_all(result, folder, figures):
    geom, stack, cfg = result.geom, result.stack, result.config
    header = geom.image_header()
    write_onoff(folder / "stacked_onoff.fits", stack.counts, stack.counts_off, stack.acceptance,
                stack.acceptance_off, stack.mask, stack.exposure, header, geom.energy_edges_tev,
                stack.livetime_s)
    extra = {"EMIN_TEV": float(geom.energy_edges_tev[0]),
             "EMAX_TEV": float(geom.energy_edges_tev[-1]),
             "CORR_RAD": (cfg.excess.correlation_radius, "correlation radius (deg)"),
             "SPEC_IDX": (cfg.excess.spectral_index, "power-law index of the flux maps")}
    write_maps(folder / "maps.fits", result.maps, header, extra)
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
                        onoff.livetime_s, name=str(onoff.obs_id))
    result.summary["inputs"] = input_checksums(result)
    if figures:
        _write_figures_and_report(result, folder)


def _write_figures_and_report(result, folder):
    import yaml

    from .figures import make_figures
    from .report import write_report

    cfg, geom = result.config, result.geom
    maps = dict(result.maps, EXCLUSION=result.exclusion, OFF_SIGNIFICANCE=result.off_significance)
    radius = cfg.excess.correlation_radius
    radius = radius[0] if isinstance(radius, (list, tuple)) else radius
    adaptive = cfg.ring.adaptive
    paths = make_figures(folder, maps, geom.wcs, result.summary, cfg.ring.r_in,
                         cfg.ring.r_in + cfg.ring.width,
                         energy_range_tev=(geom.energy_edges_tev[0], geom.energy_edges_tev[-1]),
                         correlation_radius_deg=radius,
                         r_out_max_deg=adaptive.r_out_max if adaptive is not None else None)
    config_text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    write_report(folder / "report.html", result.summary, config_text, paths,
                 result.observations)
