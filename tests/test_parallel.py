"""Ordered parallel map: local processes and Dask, with a worker that dies."""

import os
import subprocess
import sys
import textwrap

import pytest

from ringbg.parallel import map_ordered, one_blas_thread


def square(x):
    return x * x


def die_once(x, marker):
    """Kill the worker process the first time it is called with x == 3."""
    if x == 3 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return x * x


@pytest.mark.parametrize("jobs", [1, 2])
def test_results_in_input_order(jobs):
    assert list(map_ordered(square, [(i,) for i in range(20)], jobs=jobs)) == [
        i * i for i in range(20)]


def test_bounded_window_still_complete():
    out = list(map_ordered(square, [(i,) for i in range(50)], jobs=2, window=1))
    assert out == [i * i for i in range(50)]


def arrays(i, n):
    """A result with arrays of several dtypes and layouts, and Python objects."""
    import numpy as np

    return {"i": i, "a": np.arange(n, dtype=float) * i, "mask": np.arange(n) % 3 == i % 3,
            "f": np.asfortranarray(np.ones((4, n // 4), np.float32) * i),
            "strided": np.arange(2 * n, dtype=np.int32)[::2], "rows": [np.full(5, i)]}


@pytest.mark.parametrize("result_bytes", [10_000_000, 1000])
def test_results_through_shared_memory(result_bytes):
    """The arrays of results that fit a slot come back as read-only views into shared
    memory, the others pickled; both equal what the function returned, in order, and a
    result stays valid while the next one is taken."""
    import numpy as np

    from ringbg.parallel import ResultSlots

    probe = ResultSlots.create(1, 4096)
    if probe is None:
        pytest.skip("no memfd_create here (not Linux)")
    probe.close()
    n = 40_000
    previous = None
    for k, out in enumerate(map_ordered(arrays, [(i, n) for i in range(30)], jobs=2,
                                        window=3, result_bytes=result_bytes)):
        expected = arrays(k, n)
        assert out["i"] == k and out["rows"][0].tolist() == [k] * 5
        for name in ("a", "mask", "f", "strided"):
            assert out[name].dtype == expected[name].dtype
            np.testing.assert_array_equal(out[name], expected[name])
        assert out["a"].flags.writeable == (result_bytes < n * 8)
        if previous is not None:
            np.testing.assert_array_equal(previous["a"], arrays(k - 1, n)["a"])
        previous = out


def test_dask_worker_death_is_retried(tmp_path):
    from distributed import LocalCluster

    marker = str(tmp_path / "died")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        out = list(map_ordered(die_once, [(i, marker) for i in range(8)], address=cluster))
    assert os.path.exists(marker)  # a worker really died
    assert out == [i * i for i in range(8)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_keep_freed_memory_avoids_page_faults_on_reallocation():
    # a per-observation pattern: several 2 MB temporaries allocated, then all freed
    code = textwrap.dedent("""
        import resource, sys
        import numpy as np
        from ringbg.parallel import keep_freed_memory
        if sys.argv[1] == "tuned":
            keep_freed_memory()
        def cycle():
            arrays = [np.ones(2**18) for _ in range(8)]
            del arrays
        cycle()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            cycle()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """)
    faults = {}
    for mode in ("default", "tuned"):
        out = subprocess.run([sys.executable, "-c", code, mode], check=True,
                             capture_output=True, text=True).stdout
        faults[mode] = int(out.split()[-1])
    # 20 cycles of 16 MB fresh pages would be ~80000 faults; reused memory takes none
    assert faults["default"] > 10000
    assert faults["tuned"] < faults["default"] / 20


def _closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address, words", [
    ("closed-port", ("cannot reach a Dask scheduler", "refused")),
    ("foo", ("not a Dask scheduler address", "tcp://HOST:PORT")),
    ("tcp://", ("not a Dask scheduler address",)),
    ("tcp://127.0.0.1:99999", ("cannot reach",)),
    ("tcp://nonexistent.invalid:8786", ("cannot reach",)),
])
def test_unreachable_address_is_a_run_error_at_once(address, words):
    import time

    from ringbg.errors import RunError

    if address == "closed-port":
        address = f"tcp://127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(RunError) as info:
        list(map_ordered(square, [(i,) for i in range(3)], address=address))
    assert time.monotonic() - t0 < 5  # refused or unknown at once, no waiting for a timeout
    message = str(info.value)
    assert "\n" not in message and message.startswith("parallel.address")
    for word in words:
        assert word in message, message


def test_silent_listener_gives_up_after_the_timeout(monkeypatch):
    """A port that accepts connections but never speaks Dask's protocol: distributed waits
    for its handshake forever; ringbg gives up after CONNECT_TIMEOUT_S."""
    import socket
    import time

    import ringbg.parallel as parallel
    from ringbg.errors import RunError

    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT_S", 1.5)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(RunError) as info:
            list(map_ordered(square, [(1,), (2,)], address=address))
        elapsed = time.monotonic() - t0
    assert 1.5 <= elapsed < 1.5 + 3
    assert "within 1.5 s" in str(info.value)


def blas_threads():
    from threadpoolctl import threadpool_info

    return {info["filepath"]: info["num_threads"] for info in threadpool_info()
            if info["user_api"] == "blas"}


def test_one_blas_thread_in_the_block_and_the_setting_back_after_it():
    import numpy as np
    from threadpoolctl import threadpool_limits

    np.ones((2, 2)) @ np.ones((2, 2))  # (numpy's BLAS is loaded)
    with threadpool_limits(3, "blas"):
        before = blas_threads()
        assert before and set(before.values()) == {3}
        with one_blas_thread():
            assert blas_threads() == dict.fromkeys(before, 1)
        assert blas_threads() == before
        with pytest.raises(ZeroDivisionError):
            with one_blas_thread():
                1 / 0
        assert blas_threads() == before
