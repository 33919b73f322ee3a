"""The output folder: what may be written or replaced, and the atomic move into place.

Rules (the README's "Safety" section says the same to users):

* OUTDIR is resolved first (symlinks followed): the results go where the path points, a
  symlink named by ``-o`` stays and points at the new folder. A dangling symlink or a symlink
  loop is refused.
* Never replaced: ``/``, the home folder, the current folder, any of their ancestors, a mount
  point, a file, a folder that holds (or lies inside) the data store, or that holds the config
  file, an exclusion file or the cache.
* A missing OUTDIR, or an existing *empty* folder, is written without ``--overwrite`` (an
  empty folder holds nothing to lose; it is removed with ``rmdir``, which fails on anything
  else).
* ``--overwrite`` replaces only a folder a previous ringbg run wrote: it holds the
  `MARKER` file ringbg writes into every OUTDIR, and nothing but the files that run listed
  in it (desktop clutter such as ``.DS_Store`` aside). Anything else is refused with one line.
* Everything is written into ``.NAME.tmp-PID@HOST`` beside OUTDIR, and renamed into place
  without replacing anything (``renameat2(RENAME_NOREPLACE)`` where available): the state of
  OUTDIR is checked again at that moment, so a folder that appeared during the run is never
  deleted.
* Temporary folders of killed runs are removed only if they hold a marker (or are empty, or
  hold nothing but a partly written marker: killed while the folder was created).
"""

import contextlib
import ctypes
import errno
import glob
import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import threading
import time
from pathlib import Path

from .errors import OutputError
from .version import __version__

__all__ = ["MARKER", "Target", "check_outdir", "prepare_outdir", "temporary_path",
           "create_temporary", "finish_temporary", "discard_temporary", "move_into_place",
           "remove_output", "remove_stale_temporaries", "is_ringbg_output", "read_marker",
           "deferred_interrupt"]

log = logging.getLogger(__name__)

#: the file that marks a folder as written by ringbg (JSON: ringbg version, files written)
MARKER = ".ringbg-output"
#: files the desktop or the OS add to a folder that was looked at; never a reason to refuse
CLUTTER = {".DS_Store", "Thumbs.db", "desktop.ini", ".directory"}
_MARKER_MAX_BYTES = 16 * 2**20


class Target:
    """A checked output folder: its resolved ``path`` and its ``state`` when checked.

    ``state`` is ``"absent"``, ``"empty"`` (an existing empty folder) or ``"ringbg"`` (a
    previous ringbg output that ``--overwrite`` allows to replace).
    """

    def __init__(self, given, path, state):
        self.given, self.path, self.state = Path(given), Path(path), state

    def __repr__(self):
        return f"Target({str(self.path)!r}, {self.state!r})"


# --------------------------------------------------------------------------------------------
# resolving and checking


def _resolve(outdir):
    """OUTDIR with every symlink resolved; the part that does not exist yet appended."""
    given = Path(os.path.expanduser(str(outdir)))
    path = given if given.is_absolute() else Path(os.getcwd()) / given
    missing = []
    probe = path
    while not os.path.lexists(probe):
        if probe.parent == probe:
            break
        missing.append(probe.name)
        probe = probe.parent
    try:
        real = Path(os.path.realpath(probe, strict=True))
    except OSError as exc:
        what = "OUTDIR" if probe == path else f"{probe} (in OUTDIR)"
        if exc.errno == errno.ELOOP:
            raise OutputError(f"output folder {outdir}: {what} is a symlink loop; fix the link "
                              "or choose another folder with -o") from None
        if os.path.islink(probe):
            raise OutputError(
                f"output folder {outdir}: {what} is a symlink to {os.readlink(probe)}, which "
                "does not exist; create that folder or choose another one with -o") from None
        raise OutputError(f"output folder {outdir}: {exc.strerror}") from None
    tail = os.path.normpath(os.path.join(*reversed(missing))) if missing else ""
    if tail == ".." or tail.startswith("../"):
        raise OutputError(f"output folder {outdir}: '..' after a folder that does not exist")
    return real / tail if tail and tail != "." else real


def _real(path):
    return Path(os.path.realpath(os.path.expanduser(str(path))))


def _is_within(inner, outer):
    """``inner`` is ``outer`` or lies below it (both resolved)."""
    return inner == outer or outer in inner.parents


def _refuse_special(target, outdir):
    """Folders never to replace: /, $HOME, the current folder, ancestors, mount points."""
    if target.parent == target:
        raise OutputError(f"output folder {outdir} is the root folder; choose a folder of its "
                          "own, e.g. -o results")
    for name, folder in (("the current folder", _real(os.getcwd())),
                         ("your home folder", _real("~"))):
        if _is_within(folder, target):
            what = name if folder == target else f"a folder that contains {name}"
            raise OutputError(f"output folder {outdir} is {what}; ringbg replaces OUTDIR as a "
                              "whole, so give it a folder of its own, e.g. -o results")
    if target.is_dir() and os.path.ismount(target):
        raise OutputError(f"output folder {outdir} is a mount point, which ringbg cannot "
                          f"replace; write into a folder inside it, e.g. -o {outdir}/results")


def _refuse_inputs(target, outdir, datastore, protected):
    """A folder that holds, or is inside, the data store; one that holds another input."""
    if datastore is not None:
        store = _real(datastore)
        if _is_within(target, store):
            raise OutputError(f"output folder {outdir} is inside the data store {datastore}; "
                              "ringbg never writes into its inputs: choose another folder")
        if _is_within(store, target):
            raise OutputError(f"output folder {outdir} holds the data store {datastore}; "
                              "choose a folder of its own for the results")
    for what, path in protected:
        if path is not None and _is_within(_real(path), target):
            raise OutputError(f"output folder {outdir} holds the {what} {path}; replacing the "
                              "folder would delete it: choose another folder for the results")


def read_marker(folder):
    """The marker's content (a dict with a ``ringbg`` key), or None if there is none."""
    path = Path(folder) / MARKER
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(_MARKER_MAX_BYTES + 1)
    finally:
        os.close(fd)
    try:
        content = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(content, dict) or not isinstance(content.get("ringbg"), str):
        return None
    return content


def _foreign_entries(folder, listed):
    """Entries of ``folder`` that the marker does not list, symlinks, other filesystems."""
    folder = Path(folder)
    device = folder.lstat().st_dev
    listed = set(listed)
    foreign = []
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            st = path.lstat()
            ignorable = name in CLUTTER or name.startswith("._") or rel == MARKER
            if ignorable and not stat.S_ISDIR(st.st_mode):
                continue
            if stat.S_ISLNK(st.st_mode) or st.st_dev != device:
                foreign.append(rel)
            elif stat.S_ISDIR(st.st_mode):
                if rel + "/" not in listed:
                    foreign.append(rel + "/")
            elif rel not in listed:
                foreign.append(rel)
        dirs[:] = [d for d in dirs if (Path(root) / d).relative_to(folder).as_posix() + "/"
                   in listed and not (Path(root) / d).is_symlink()]
        if len(foreign) > 3:
            break
    return foreign


def why_not_ringbg_output(folder):
    """None if ``folder`` is an output ringbg wrote and may replace; else the reason."""
    marker = read_marker(folder)
    if marker is None:
        return f"it was not written by ringbg (no valid {MARKER} marker in it)"
    files = marker.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return f"its {MARKER} marker does not list the files ringbg wrote"
    foreign = _foreign_entries(folder, files)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        return f"it holds files ringbg did not write ({shown})"
    return None


def is_ringbg_output(folder):
    """True if ``folder`` is a complete ringbg output holding nothing else."""
    return why_not_ringbg_output(folder) is None


def check_outdir(outdir, overwrite, datastore=None, protected=()):
    """Check that OUTDIR may be written (or replaced); raises `OutputError` with one line.

    Parameters
    ----------
    outdir : str or path
        The output folder as the user gave it.
    overwrite : bool
        Whether a previous ringbg output there may be replaced.
    datastore : str or path, optional
        The data store: OUTDIR may neither hold it nor lie inside it.
    protected : iterable of (str, path)
        Other inputs (``("config file", path)``...) that OUTDIR must not hold.

    Returns
    -------
    target : `Target`
    """
    target = _resolve(outdir)
    _refuse_special(target, outdir)
    _refuse_inputs(target, outdir, datastore, protected)
    if not os.path.lexists(target):
        return Target(outdir, target, "absent")
    if not target.is_dir():
        raise OutputError(f"output folder {outdir} exists and is not a folder; remove it or "
                          "choose another path with -o")
    try:
        empty = not any(os.scandir(target))
    except OSError as exc:
        raise OutputError(f"output folder {outdir}: {exc.strerror}") from None
    if empty:
        return Target(outdir, target, "empty")
    reason = why_not_ringbg_output(target)
    if reason is not None:
        raise OutputError(f"output folder {outdir} exists and {reason}; ringbg replaces only "
                          "its own output folders: choose another folder with -o")
    if not overwrite:
        raise OutputError(f"output folder {outdir} exists; use --overwrite (or "
                          "output.overwrite) to replace it")
    return Target(outdir, target, "ringbg")


def prepare_outdir(outdir, overwrite, datastore=None, protected=()):
    """Remove what killed runs left (`remove_stale_temporaries`: their previous results may
    come back as OUTDIR), `check_outdir`, create the parent folders; returns the `Target`."""
    for path in remove_stale_temporaries(outdir):
        log.info("removed %s, left by an interrupted run", path)
    target = check_outdir(outdir, overwrite, datastore, protected)
    parent = target.path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"output folder {outdir}: cannot create {exc.filename or parent}: "
                          f"{exc.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {outdir}: cannot write into {parent} (permission "
                          "denied or a read-only filesystem)")
    return target


# --------------------------------------------------------------------------------------------
# temporaries and the final move


def _temporary(path, kind):
    """``.NAME.KIND-PID@HOST`` beside ``path``: the host tells runs on a shared filesystem
    apart."""
    path = Path(path)
    return path.parent / f".{path.name}.{kind}-{os.getpid()}@{socket.gethostname()}"


def _marker_text(files=None):
    content = {"ringbg": __version__, "note": "written by ringbg; 'ringbg run --overwrite' "
               "may replace this folder", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "run": f"{os.getpid()}@{socket.gethostname()}/{time.time_ns()}"}
    if files is not None:
        content["files"] = files
    return json.dumps(content, indent=1) + "\n"


def temporary_path(target):
    """This process's temporary folder for ``target`` (a `Target`), not created yet."""
    return _temporary(target.path, "tmp")


def _is_ringbg_temporary(folder):
    """A folder with a marker, or nothing but (a part of) one: killed while created."""
    if os.path.islink(folder) or not os.path.isdir(folder):
        return False
    names = {entry.name for entry in os.scandir(folder)}
    return names <= {MARKER} or read_marker(folder) is not None


def create_temporary(tmp):
    """Create ``tmp`` (from `temporary_path`) holding a marker without a file list yet."""
    tmp = Path(tmp)
    if os.path.lexists(tmp):  # left by an earlier process with this pid (pids are reused)
        if not _is_ringbg_temporary(tmp):
            raise OutputError(f"{tmp} is in the way and was not written by ringbg; move it")
        _remove_output_folder(tmp)
    tmp.mkdir()
    (tmp / MARKER).write_text(_marker_text())
    return tmp


def finish_temporary(tmp):
    """Rewrite the marker with the list of everything written into ``tmp``."""
    files = []
    for root, dirs, names in os.walk(tmp):
        rel_root = Path(root).relative_to(tmp)
        files += [(rel_root / d).as_posix() + "/" for d in dirs]
        files += [(rel_root / n).as_posix() for n in names if (rel_root / n).as_posix() != MARKER]
    part = tmp / (MARKER + ".part")
    part.write_text(_marker_text(sorted(files)))
    os.replace(part, tmp / MARKER)


_renameat2 = None


def _libc_renameat2():
    global _renameat2
    if _renameat2 is None:
        _renameat2 = False
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (OSError, AttributeError, TypeError):
            pass
    return _renameat2 or None


def rename_noreplace(src, dst):
    """Rename ``src`` to ``dst``; `FileExistsError` if ``dst`` exists, never replacing it.

    Linux's ``renameat2(RENAME_NOREPLACE)`` makes the check and the rename one step. Where it
    is missing (other systems, filesystems without it) the check is done just before
    ``os.rename``, which itself refuses to replace a non-empty folder by a folder.
    """
    fn = _libc_renameat2()
    if fn is not None:
        at_fdcwd, rename_noreplace_flag = -100, 1
        if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace_flag) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


@contextlib.contextmanager
def deferred_interrupt():
    """Hold Ctrl-C back while the block runs (the renames), deliver it afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def move_into_place(tmp, target, overwrite, datastore=None, protected=()):
    """Move the finished ``tmp`` folder to OUTDIR, checking OUTDIR again at this moment.

    Returns the previous output moved aside (to delete with `remove_output`), or None.
    """
    try:
        now = check_outdir(target.given, overwrite, datastore, protected)
    except OutputError as exc:
        if target.state == "ringbg":
            raise
        raise OutputError(f"{exc} (it appeared or changed during the run; nothing was "
                          "replaced)") from None
    if now.path != target.path:
        raise OutputError(f"output folder {target.given} now points at {now.path} (it was "
                          f"{target.path} when the run started); nothing was replaced")
    outdir, old = target.given, None
    with deferred_interrupt():
        if now.state == "empty":
            try:
                os.rmdir(now.path)
            except OSError:
                raise OutputError(f"output folder {outdir} got files during the run; nothing "
                                  "was replaced") from None
        elif now.state == "ringbg":
            old = _temporary(now.path, "old")
            if os.path.lexists(old) and read_marker(old) is not None:
                _remove_output_folder(old)  # left by an earlier process with this pid
            rename_noreplace(now.path, old)
            reason = why_not_ringbg_output(old)
            if reason is not None:  # swapped between the check and the rename
                rename_noreplace(old, now.path)
                raise OutputError(f"output folder {outdir} changed during the run and {reason};"
                                  " nothing was replaced")
        try:
            rename_noreplace(tmp, now.path)
        except FileExistsError:
            raise OutputError(f"output folder {outdir} appeared during the run (another run?);"
                              " it was not replaced: rerun with another -o") from None
        except BaseException:
            if old is not None:
                rename_noreplace(old, now.path)  # put the previous results back
            raise
    return old


def _remove_output_folder(path):
    """Delete a ringbg folder (or a temporary), the marker last, so that what a kill leaves
    is still recognised as ringbg's."""
    path = Path(path)
    for entry in os.scandir(path):
        if entry.name == MARKER:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path / MARKER)
    os.rmdir(path)


def remove_output(path):
    """Delete a folder ringbg wrote; a failure is logged, not raised (results are in place)."""
    try:
        _remove_output_folder(path)
    except OSError as exc:
        log.warning("could not remove the previous results %s: %s", path, exc.strerror or exc)


def discard_temporary(tmp):
    """Delete this run's temporary folder after a failure (also one interrupted while it was
    created), quietly; anything else at that path is left alone."""
    with contextlib.suppress(OSError):
        if _is_ringbg_temporary(tmp):
            _remove_output_folder(tmp)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temporaries(outdir):
    """Delete ``.NAME.tmp-PID@HOST`` / ``.NAME.old-PID@HOST`` folders left by killed runs.

    Only folders of this host whose process is gone are touched (another host's run may be
    alive), and only if they hold ringbg's marker (or nothing but a part of one: a run killed
    while creating its folder): anything else with such a name is left alone. A ``.old`` folder without OUTDIR (a run killed between its two renames)
    holds the previous results: it is renamed back to OUTDIR. Returns the removed paths.
    """
    try:
        path = _resolve(outdir)
    except OutputError:
        return []
    parent = path.parent
    if not parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(tmp|old)-(\d+)(?:@(.+))?$")
    removed = []
    for candidate in sorted(parent.glob(f".{glob.escape(path.name)}.*-*")):
        match = pattern.match(candidate.name)
        if not match or candidate.is_symlink() or not candidate.is_dir():
            continue
        kind, pid, host = match.group(1), int(match.group(2)), match.group(3)
        if host not in (None, socket.gethostname()) or pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            if not _is_ringbg_temporary(candidate):
                log.warning("left %s alone: it looks like a ringbg temporary folder but has no "
                            "%s marker", candidate, MARKER)
                continue
            if kind == "old" and read_marker(candidate) and not os.path.lexists(path):
                # killed between the two renames: these are the previous results
                rename_noreplace(candidate, path)
                continue
            _remove_output_folder(candidate)
            removed.append(candidate)
        except OSError as exc:
            log.warning("could not remove %s: %s", candidate, exc.strerror or exc)
    return removed

