"""Per-observation cache: reduced cubes kept on disk so an interrupted or extended run
reuses them (``ringbg run --cache DIR``).

An entry's key hashes everything the reduction depends on: ringbg's version, the geometry,
the true-energy axis, the energy-dispersion grid (or none), the cutout size, the safe mask
settings, and the path, size and modification time of each input file of the observation. A
changed config or input file gives another key. Entries are written to a temporary file and
renamed, so a killed run never leaves a partial entry.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .version import __version__
from .edisp import EdispResponse
from .reduce import ReducedObservation

__all__ = ["cache_key", "load", "save"]


def cache_key(obs_id, paths, geom, offset_max_deg, methods, parameters,
              energy_true_edges_tev=None, irf=None):
    """Hex digest identifying one observation's reduction.

    ``energy_true_edges_tev``: the exposure's true-energy axis (None: the reconstructed one);
    ``irf``: the IRF grid of the energy-dispersion response (None: no response).
    """
    files = []
    for path in sorted({str(p) for p in paths}):
        st = os.stat(path)
        files.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
    text = json.dumps({
        "version": __version__,
        "obs_id": int(obs_id),
        "wcs": geom.image_header().tostring(),
        "shape": list(geom.shape),
        "energy": [float(e) for e in geom.energy_edges_tev],
        "offset_max": float(offset_max_deg),
        "methods": list(methods),
        "parameters": dict(sorted(parameters.items())),
        "files": files,
        "energy_true": None if energy_true_edges_tev is None
        else [float(e) for e in energy_true_edges_tev],
        "edisp_irf_grid": None if irf is None else irf.key,
    }, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _path(cache_dir, obs_id, key):
    return Path(cache_dir) / f"obs{int(obs_id)}-{key[:20]}.npz"


def load(cache_dir, obs_id, key):
    """The cached `ReducedObservation`, or None (missing or unreadable entry)."""
    path = _path(cache_dir, obs_id, key)
    if not path.exists():
        return None
    try:
        with np.load(path) as f:
            sy, sx = (slice(int(a), int(b)) for a, b in f["slices"])
            edisp = None
            if "edisp_slices" in f:
                ey, ex = (slice(int(a), int(b)) for a, b in f["edisp_slices"])
                edisp = EdispResponse((ey, ex), f["edisp_kernel"], f["edisp_exposure"],
                                      f["edisp_x"], f["edisp_y"], bool(f["edisp_diagonal"]))
            return ReducedObservation(
                obs_id=int(f["obs_id"]), slices=(sy, sx), counts=f["counts"],
                exposure=f["exposure"], background=f["background"],
                mask_safe=f["mask_safe"], livetime_s=float(f["livetime_s"]),
                ontime_s=float(f["ontime_s"]), edisp=edisp)
    except Exception:  # any unreadable entry (truncated zip, bad arrays) is a cache miss
        return None


def save(cache_dir, reduced, key):
    """Write an entry atomically (temporary file renamed into place)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = _path(cache_dir, reduced.obs_id, key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    slices = np.array([[s.start, s.stop] for s in reduced.slices])
    edisp = {}
    if reduced.edisp is not None:
        r = reduced.edisp
        edisp = {"edisp_slices": np.array([[s.start, s.stop] for s in r.slices]),
                 "edisp_kernel": r.kernel, "edisp_exposure": r.exposure, "edisp_x": r.x,
                 "edisp_y": r.y, "edisp_diagonal": r.diagonal}
    with open(tmp, "wb") as f:
        np.savez(f, obs_id=reduced.obs_id, slices=slices, counts=reduced.counts,
                 exposure=reduced.exposure, background=reduced.background,
                 mask_safe=reduced.mask_safe, livetime_s=reduced.livetime_s,
                 ontime_s=reduced.ontime_s, **edisp)
    os.replace(tmp, path)
    return path
