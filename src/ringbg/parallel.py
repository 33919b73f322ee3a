"""Running the per-observation work: in-process, on local processes, or on a Dask cluster.

Results are yielded in the order of the inputs, so the stack adds them in the same order and
gives the same bits with any number of workers. At most ``window`` tasks are in flight or
waiting to be consumed, so memory does not grow with the number of observations.
"""

import ctypes
import ctypes.util
import logging
import sys
from concurrent.futures import ProcessPoolExecutor

__all__ = ["map_ordered", "keep_freed_memory"]

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


def _in_order(submit, n, window):
    """Submit tasks ``0..n-1`` through ``submit(i) -> future``, yield results in order."""
    futures = {}
    next_index = 0
    for expected in range(n):
        while next_index < n and next_index < expected + window:
            futures[next_index] = submit(next_index)
            next_index += 1
        yield futures.pop(expected).result()


def map_ordered(fn, arg_tuples, jobs=1, address=None, retries=2, window=None):
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
        ``distributed.Client`` or cluster object; overrides ``jobs``.
    retries : int
        Dask retries of a task whose worker died.
    window : int, optional
        Tasks in flight at once (default: twice the workers).
    """
    arg_tuples = list(arg_tuples)
    n = len(arg_tuples)
    if address is not None:
        yield from _map_dask(fn, arg_tuples, address, retries, window)
    elif jobs <= 1 or n <= 1:
        for args in arg_tuples:
            yield fn(*args)
    else:
        with ProcessPoolExecutor(max_workers=min(jobs, n)) as pool:
            yield from _in_order(lambda i: pool.submit(fn, *arg_tuples[i]), n,
                                 window or 2 * jobs)


def _map_dask(fn, arg_tuples, address, retries, window):
    from distributed import Client

    if isinstance(address, str):
        client, own = Client(address), True
    elif hasattr(address, "submit"):
        client, own = address, False
    else:  # a cluster object
        client, own = Client(address), True
    try:
        workers = max(1, sum(client.nthreads().values()))
        yield from _in_order(
            lambda i: client.submit(fn, *arg_tuples[i], pure=False, retries=retries),
            len(arg_tuples), window or 2 * workers)
    finally:
        if own:
            client.close()
