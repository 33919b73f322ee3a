"""Running the per-observation work: in-process, on local processes, or on a Dask cluster.

Results are yielded in the order of the inputs whatever order they finish in, so the stack
adds them in the same order and gives the same bits with any number of workers.
"""

import logging
from concurrent.futures import ProcessPoolExecutor

__all__ = ["map_ordered"]

log = logging.getLogger(__name__)


def _reorder(completed, n):
    """Yield ``(index, value)`` pairs from ``completed`` (any order) in index order."""
    pending = {}
    expected = 0
    for index, value in completed:
        pending[index] = value
        while expected in pending:
            yield pending.pop(expected)
            expected += 1
    if expected != n:  # pragma: no cover - defensive
        raise RuntimeError(f"only {expected} of {n} results arrived")


def _indexed(fn, index, args):
    return index, fn(*args)


def map_ordered(fn, arg_tuples, jobs=1, address=None, retries=2):
    """Apply ``fn(*args)`` to each tuple, yielding results in input order.

    Parameters
    ----------
    fn : callable
        A picklable top-level function.
    arg_tuples : list of tuple
        Arguments of each call.
    jobs : int
        Local worker processes (1: in this process).
    address : str, optional
        Address of a Dask distributed scheduler (``tcp://host:8786``), or a
        ``distributed.Client`` / ``LocalCluster`` object; overrides ``jobs``.
    retries : int
        Dask retries of a task whose worker died.
    """
    arg_tuples = list(arg_tuples)
    n = len(arg_tuples)
    if address is not None:
        yield from _map_dask(fn, arg_tuples, address, retries)
    elif jobs <= 1 or n <= 1:
        for args in arg_tuples:
            yield fn(*args)
    else:
        with ProcessPoolExecutor(max_workers=min(jobs, n)) as pool:
            futures = [pool.submit(_indexed, fn, i, args) for i, args in enumerate(arg_tuples)]
            from concurrent.futures import as_completed

            yield from _reorder((f.result() for f in as_completed(futures)), n)


def _map_dask(fn, arg_tuples, address, retries):
    from distributed import Client, as_completed

    own = isinstance(address, str)
    if own:
        client = Client(address)
    elif hasattr(address, "submit"):
        client = address
    else:  # a cluster object
        client = Client(address)
        own = True
    try:
        futures = [
            client.submit(_indexed, fn, i, args, pure=False, retries=retries)
            for i, args in enumerate(arg_tuples)
        ]
        completed = ((f.result()) for f in as_completed(futures))
        yield from _reorder(completed, len(arg_tuples))
    finally:
        if own:
            client.close()
