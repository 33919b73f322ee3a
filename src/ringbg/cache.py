"""Per-observation cache: reduced cubes kept on disk so an interrupted or extended run
reuses them (``ringbg run --cache DIR``).

An entry's key hashes everything the reduction depends on: ringbg's version and the source
of its reading and reduction modules, the geometry, the true-energy axis, the
energy-dispersion grid (or none), the cutout size, the safe mask settings, every column of
the observation's rows in the observation and HDU index tables, and the identity of each
input file of the observation (absolute path, size, modification time in ns, inode). A
changed config, index row or input file gives another key. Entries are written to a
temporary file and renamed, so a killed run never leaves a partial entry.
"""

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .edisp import EdispResponse
from .reduce import ReducedObservation
from .version import __version__

__all__ = ["cache_key", "file_identity", "load", "save"]

#: modules whose code decides the reduction (their source is part of the key)
_CODE = ("background", "cache", "datastore", "dl3", "edisp", "fitsfile", "geom", "irf",
         "kernels", "reduce", "safemask")


@functools.lru_cache(maxsize=1)
def _code_digest():
    """SHA-256 of the source of the modules in `_CODE` (a module's name where it cannot be
    read)."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in _CODE:
        try:
            digest.update((here / f"{name}.py").read_bytes())
        except OSError:
            digest.update(name.encode())
    return digest.hexdigest()


def file_identity(path):
    """``[absolute path, size, mtime_ns, inode]`` of a file (size etc. None if it cannot be
    stat'ed: reading it then reports the problem)."""
    try:
        st = os.stat(path)
        return [os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino]
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return [os.path.abspath(path), None, None, None]


def _json_value(value):
    """Fallback of `json.dumps` for what it cannot write (numpy values, paths...)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)


def cache_key(obs_id, index_rows, paths, geom, offset_max_deg, methods, parameters,
              energy_true_edges_tev=None, irf=None):
    """Hex digest identifying one observation's reduction.

    Parameters
    ----------
    obs_id : int
        The observation.
    index_rows : dict
        Its index rows, `ringbg.datastore.DataStore.index_rows`.
    paths : iterable of path
        Its input files.
    geom : `~ringbg.geom.Geom`
        The full geometry.
    offset_max_deg : float
        Cutout half-width.
    methods : sequence of str
        Safe mask methods.
    parameters : dict
        Safe mask (and any other reduction) parameters: any values JSON can write, or
        whose ``repr`` identifies them.
    energy_true_edges_tev : array-like, optional
        The exposure's true-energy axis (None: the reconstructed one).
    irf : object, optional
        The IRF grid of the energy-dispersion response (its ``key``; None: no response).
    """
    text = json.dumps({
        "version": __version__,
        "code": _code_digest(),
        "obs_id": int(obs_id),
        "index": index_rows,
        "geom": geom.key,
        "offset_max": float(offset_max_deg),
        "methods": list(methods),
        "parameters": {str(k): v for k, v in parameters.items()},
        "files": [file_identity(p) for p in sorted({str(p) for p in paths})],
        "energy_true": None if energy_true_edges_tev is None
        else [float(e) for e in energy_true_edges_tev],
        "edisp_irf_grid": None if irf is None else irf.key,
    }, sort_keys=True, default=_json_value)
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
                ontime_s=float(f["ontime_s"]), edisp=edisp, template=str(f["template"]),
                point_like=bool(f["point_like"]),
                gti_tt_s=f["gti_tt_s"] if "gti_tt_s" in f else None)
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
    if reduced.gti_tt_s is not None:
        edisp["gti_tt_s"] = reduced.gti_tt_s
    try:
        with open(tmp, "wb") as f:
            np.savez(f, obs_id=reduced.obs_id, slices=slices, counts=reduced.counts,
                     exposure=reduced.exposure, background=reduced.background,
                     mask_safe=reduced.mask_safe, livetime_s=reduced.livetime_s,
                     ontime_s=reduced.ontime_s, template=reduced.template,
                     point_like=reduced.point_like, **edisp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
