"""Running the per-observation work: in-process, on local processes, or on a Dask cluster.

Results are yielded in the order of the inputs, so the stack adds them in the same order and
gives the same bits with any number of workers. At most ``window`` tasks are in flight or
waiting to be consumed, so memory does not grow with the number of observations.

Local workers hand back the arrays of their results through shared memory (`ResultSlots`)
rather than through the executor's pipe: receiving a 3 MB result through the pipe costs the
receiving process ~7 ms of CPU (it reads 64 kB at a time and copies it several times), about
the stacking process's whole budget per observation in a survey.
"""

import contextlib
import ctypes
import ctypes.util
import logging
import mmap
import os
import pickle
import secrets
import socket
import sys
import threading
from concurrent.futures import ProcessPoolExecutor

from .errors import RunError

__all__ = ["map_ordered", "keep_freed_memory", "one_blas_thread"]

log = logging.getLogger(__name__)

#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_malloc_tuned = False


def keep_freed_memory(mmap_threshold_bytes=32 * 2**20, trim_threshold_bytes=256 * 2**20):
    """Let glibc keep freed memory for reuse instead of returning it to the system at once.

    Each observation allocates and frees a few megabytes of cube temporaries; with glibc's
    defaults the heap is trimmed after each and the next allocation takes a page fault per
    4 kB again (about 35000 faults, ~15 % of the run time, on the 20-run MSH 15-52 config).
    Blocks below ``mmap_threshold_bytes`` come from the heap, which keeps up to
    ``trim_threshold_bytes`` of free memory. Once per process; a no-op without glibc.
    """
    global _malloc_tuned
    if _malloc_tuned or not sys.platform.startswith("linux"):
        return
    _malloc_tuned = True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold_bytes))
    mallopt(_M_TRIM_THRESHOLD, int(trim_threshold_bytes))


@contextlib.contextmanager
def one_blas_thread():
    """Limit the BLAS libraries loaded in this process (OpenBLAS, MKL...) to one thread
    while the block runs; their settings are restored after it.

    ringbg's matrix products (the exposure cube's sum over true energy, the rotation of
    pixel coordinates into the field of view, the energy dispersion's sums) are small or
    limited by memory: a second thread gains nothing, and OpenBLAS's idle threads spin for
    a while after each call, taking a CPU from the figure renderer and from other work. On
    2 CPUs, the tutorial's stack took 0.53 s of CPU for 0.31 s of wall time, 0.35 s with one
    thread (its wall time 0.29 s). Processes forked meanwhile inherit the limit.
    """
    from threadpoolctl import ThreadpoolController

    with ThreadpoolController().limit(limits=1, user_api="blas"):
        yield


def _in_order(submit, n, window):
    """Submit tasks ``0..n-1`` through ``submit(i) -> future``, yield results in order."""
    futures = {}
    next_index = 0
    for expected in range(n):
        while next_index < n and next_index < expected + window:
            futures[next_index] = submit(next_index)
            next_index += 1
        yield futures.pop(expected).result()


def map_ordered(fn, arg_tuples, jobs=1, address=None, retries=2, window=None,
                result_bytes=None):
    """Apply ``fn(*args)`` to each tuple, yielding results in input order.

    Parameters
    ----------
    fn : callable
        A picklable top-level function.
    arg_tuples : list of tuple
        Arguments of each call.
    jobs : int
        Local worker processes (1: in this process).
    address : str or object, optional
        Address of a Dask distributed scheduler (``tcp://host:8786``), or a
        ``distributed.Client`` or cluster object; overrides ``jobs``. An address where no
        scheduler answers within `CONNECT_TIMEOUT_S` seconds raises `RunError`.
    retries : int
        Dask retries of a task whose worker died.
    window : int, optional
        Tasks in flight at once (default: twice the workers).
    result_bytes : int, optional
        With local workers: the array bytes of a typical result. The arrays of results up
        to that size come back through shared memory (`ResultSlots`), as **read-only views
        that are valid until the result after next is taken**: copy what is kept longer.
        Larger results, and all without it, come back pickled through the pipe.
    """
    arg_tuples = list(arg_tuples)
    n = len(arg_tuples)
    if address is not None:
        yield from _map_dask(fn, arg_tuples, address, retries, window)
    elif jobs <= 1 or n <= 1:
        for args in arg_tuples:
            yield fn(*args)
    else:
        window = window or 2 * jobs
        # task i writes into slot i % (window + 1): task i is submitted once result
        # i - window has been taken, so a result stays valid while the next one is used
        slots = ResultSlots.create(window + 1, result_bytes) if result_bytes else None
        try:
            with ProcessPoolExecutor(max_workers=min(jobs, n)) as pool:
                if slots is None:
                    yield from _in_order(lambda i: pool.submit(fn, *arg_tuples[i]), n, window)
                    return
                for packed in _in_order(
                        lambda i: pool.submit(_call_into_slot, fn, arg_tuples[i],
                                              slots.spec(i)), n, window):
                    yield slots.load(packed)
        finally:
            if slots is not None:
                slots.close()


class ResultSlots:
    """Shared memory for the arrays of workers' results: ``n`` slots of ``slot_bytes``.

    An anonymous memory file (``memfd_create``) that the workers open through
    ``/proc/<pid>/fd``: it has no name to leak, and goes away with the last process that
    maps it, even when this one is killed. Its pages are allocated at once
    (``posix_fallocate``), so a worker never faults on memory the system cannot give.
    Linux only: elsewhere, or when the memory cannot be had, `create` gives None and the
    results travel pickled.
    """

    def __init__(self, fd, n, slot_bytes):
        self.fd, self.n, self.slot_bytes = fd, n, slot_bytes
        self.token = secrets.token_hex(8)
        self.path = f"/proc/{os.getpid()}/fd/{fd}"
        self._map = mmap.mmap(fd, n * slot_bytes, access=mmap.ACCESS_READ)
        self.view = memoryview(self._map)

    @classmethod
    def create(cls, n, slot_bytes):
        slot_bytes = -(-int(slot_bytes) // mmap.PAGESIZE) * mmap.PAGESIZE
        if not hasattr(os, "memfd_create") or not os.path.isdir(f"/proc/{os.getpid()}/fd"):
            return None
        fd = os.memfd_create("ringbg-results", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, n * slot_bytes)
            os.posix_fallocate(fd, 0, n * slot_bytes)
            return cls(fd, n, slot_bytes)
        except OSError as exc:
            log.debug("shared memory for results not available (%s): results are pickled", exc)
            os.close(fd)
            return None

    def spec(self, i):
        """What the worker of task ``i`` needs to write its result: (path, token, offset, size)."""
        return self.path, self.token, (i % self.n) * self.slot_bytes, self.slot_bytes

    def load(self, packed):
        """A result from what `_call_into_slot` returned."""
        kind, payload, layout = packed
        if kind == "pickled":
            return payload
        return pickle.loads(payload, buffers=[self.view[a:a + size] for a, size in layout])

    def close(self):
        """Release this process's handle; arrays still looking into the memory keep it
        mapped until they go."""
        os.close(self.fd)
        try:
            self.view.release()
            self._map.close()
        except BufferError:
            pass


#: worker side: the slots file of the current map (token, mmap)
_SLOTS = {}


def _call_into_slot(fn, args, spec):
    """Run ``fn(*args)`` in a worker; put the arrays of its result into the slot ``spec``.

    Returns ``("slot", pickle without the array buffers, [(offset, size), ...])``, or
    ``("pickled", result, None)`` when the buffers do not fit the slot (or the slots file
    cannot be opened).
    """
    result = fn(*args)
    path, token, offset, size = spec
    buffers = []
    payload = pickle.dumps(result, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    layout, end = [], offset
    for raw in raws:
        start = -(-end // 64) * 64  # aligned for any dtype
        layout.append((start, raw.nbytes))
        end = start + raw.nbytes
    if end > offset + size:
        return "pickled", result, None
    try:
        if _SLOTS.get("token") != token:
            with open(path, "r+b") as f:
                _SLOTS.update(token=token, map=mmap.mmap(f.fileno(), 0))
    except OSError:
        return "pickled", result, None
    target = _SLOTS["map"]
    for raw, (start, nbytes) in zip(raws, layout):
        target[start:start + nbytes] = raw
    return "slot", payload, layout


#: seconds to wait for a Dask scheduler (``parallel.address``) before giving up
CONNECT_TIMEOUT_S = 10.0


def _check_reachable(address, timeout_s):
    """A quick TCP connect to a ``tcp://`` / ``tls://`` scheduler address: a clear
    `RunError` at once for a malformed address, a closed port or an unknown host."""
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme not in ("tcp", "tls"):
            return
        host, port = parse_host_port(location)
    except (ValueError, TypeError) as exc:
        raise RunError(f"parallel.address: {address!r} is not a Dask scheduler address ({exc});"
                       " use tcp://HOST:PORT") from None
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except (OSError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or \
            type(exc).__name__
        raise RunError(f"parallel.address: cannot reach a Dask scheduler at {address} "
                       f"({reason}); start one ('dask scheduler') or remove parallel.address"
                       ) from None


def _connect(address, timeout_s=None):
    """A `distributed.Client` of the scheduler at ``address``, or `RunError` within
    ``timeout_s`` (default `CONNECT_TIMEOUT_S`).

    distributed bounds the TCP connect but not the handshake after it (a listener that never
    answers blocks ``Client()`` forever), so the client is made in a thread and given up on
    after ``timeout_s``.
    """
    from distributed import Client

    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    _check_reachable(address, timeout_s)
    box = {}

    def connect():
        try:
            box["client"] = Client(address, timeout=timeout_s)
        except Exception as exc:  # reported below, in the calling thread
            box["error"] = exc

    thread = threading.Thread(target=connect, name="ringbg-dask-connect", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if "client" in box:
        return box["client"]
    reason = box.get("error") or "no answer"
    raise RunError(f"parallel.address: no Dask scheduler answered at {address} within "
                   f"{timeout_s:g} s ({reason}); check the address")


def _map_dask(fn, arg_tuples, address, retries, window):
    from distributed import Client

    if isinstance(address, str):
        client, own = _connect(address), True
    elif hasattr(address, "submit"):
        client, own = address, False
    else:  # a cluster object
        client, own = Client(address), True
    try:
        workers = max(1, sum(client.nthreads().values()))
        yield from _in_order(
            lambda i: _Future(client.submit(fn, *arg_tuples[i], pure=False, retries=retries),
                              address),
            len(arg_tuples), window or 2 * workers)
    finally:
        if own:
            client.close()


class _Future:
    """A Dask future whose ``result()`` reports a lost scheduler or workers as `RunError`."""

    def __init__(self, future, address):
        self.future, self.address = future, address

    def result(self):
        from distributed import KilledWorker
        from distributed.comm.core import CommClosedError

        try:
            return self.future.result()
        except KilledWorker as exc:
            raise RunError(f"parallel.address: the Dask workers died on a task ({exc}); they "
                           "may be short of memory") from None
        except (CommClosedError, TimeoutError) as exc:
            raise RunError(f"parallel.address: lost the Dask scheduler at {self.address} "
                           f"({exc or type(exc).__name__})") from None

