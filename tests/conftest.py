"""Shared fixtures: the public data (GAMMAPY_DATA) and small configs on it."""

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

# property and fuzz tests draw the same examples on every run (CI must not be flaky);
# HYPOTHESIS_PROFILE=explore draws new ones
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

MSH_CENTER = (228.32, -59.08)


def gammapy_data():
    """The GAMMAPY_DATA folder; missing data is a failure, never a skip."""
    path = os.environ.get("GAMMAPY_DATA")
    if not path or not (Path(path) / "hess-dl3-dr1").is_dir():
        pytest.fail("GAMMAPY_DATA must point at the folder holding hess-dl3-dr1 and cta-1dc")
    return Path(path)


@pytest.fixture(scope="session")
def data_dir():
    return gammapy_data()


def msh_config(tmp_path=None, **overrides):
    """The tutorial's MSH 15-52 config as a dict (gammapy's settings, correlation 0.04 deg)."""
    lon, lat = MSH_CENTER
    cfg = {
        "datastore": str(gammapy_data() / "hess-dl3-dr1"),
        "observations": {"cone": {"frame": "icrs", "lon": f"{lon} deg", "lat": f"{lat} deg",
                                  "radius": "2.5 deg"}},
        "geom": {
            "skydir": {"frame": "icrs", "lon": f"{lon} deg", "lat": f"{lat} deg"},
            "width": "3 deg",
            "binsize": "0.02 deg",
            "projection": "CAR",
            "energy": {"min": "0.5 TeV", "max": "10 TeV", "nbins": 10},
            "offset_max": "2.5 deg",
        },
        "safe_mask": {"methods": ["aeff-default"]},
        "exclusion": {"regions": [{"frame": "icrs", "lon": f"{lon} deg", "lat": f"{lat} deg",
                                   "radius": "0.4 deg"}]},
        "ring": {"r_in": "0.5 deg", "width": "0.3 deg"},
        "excess": {"correlation_radius": "0.04 deg", "correlate_off": False},
        "output": {"dir": str(tmp_path / "out") if tmp_path else "results", "figures": False},
    }
    for key, value in overrides.items():
        section, _, sub = key.partition("__")
        if sub:
            cfg.setdefault(section, {})[sub] = value
        else:
            cfg[section] = value
    return cfg


@pytest.fixture(scope="session")
def msh_result():
    """ringbg's run of the tutorial config (shared by several test modules)."""
    from ringbg import run

    return run(msh_config())


def _needs_reference_tools(item):
    """Whether a test uses gammapy or the browser (which need newer packages than ringbg's
    lower bounds: gammapy 2.1 requires numpy >= 2)."""
    import inspect

    if item.get_closest_marker("gammapy") is not None:
        return True
    try:
        source = inspect.getsource(item.function)
    except (OSError, TypeError):
        return False
    return any(word in source for word in ("gammapy", "selenium", "_chromium"))


#: modules that import gammapy at the top: not even collected on the lowest versions
collect_ignore = (["test_reference.py", "gammapy_ref.py"]
                  if os.environ.get("RINGBG_LOWEST_VERSIONS") == "1" else [])


def pytest_collection_modifyitems(config, items):
    """RINGBG_LOWEST_VERSIONS=1 (the CI job on the lowest versions pyproject allows): run
    every test that needs neither gammapy nor the browser; the main job runs them all."""
    if os.environ.get("RINGBG_LOWEST_VERSIONS") != "1":
        return
    keep, drop = [], []
    for item in items:
        (drop if _needs_reference_tools(item) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True)
def _ringbg_logger_reset():
    """The command line sets the 'ringbg' logger's level (-q, -v) when invoked in-process;
    each test starts from the default again, so that caplog sees ringbg's warnings."""
    import logging

    yield
    logging.getLogger("ringbg").setLevel(logging.NOTSET)


@pytest.fixture
def sigint_default():
    """Python's own Ctrl-C handler during the test, whatever pytest was started with (a
    background job of a non-interactive shell starts with SIGINT ignored)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
