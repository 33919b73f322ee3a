"""ringbg: ring-background excess and significance sky maps from IACT DL3 data.

The public API: `run` (a config -> a `Result`), `Result`, `load_config`, `Config` and the
error classes of `ringbg.errors`. The workflow modules are imported on first use, so that
``import ringbg`` (and the command line's ``--help``) stays fast.
"""

from .errors import (
    ConfigError,
    DataError,
    DataStoreError,
    DL3Error,
    OutputError,
    RingbgError,
    RunError,
)
from .version import __version__

__all__ = ["run", "Result", "load_config", "Config", "RingbgError", "ConfigError", "DataError",
           "DataStoreError", "DL3Error", "OutputError", "RunError", "__version__"]

_LAZY = {"run": "pipeline", "Result": "result", "load_config": "config", "Config": "config"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ringbg' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
