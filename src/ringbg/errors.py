"""ringbg's exceptions: one base class, so a caller (the CLI) catches one class.

Everything below `RingbgError` is a problem of the user's input or environment and is reported
as one line. Any other exception escaping ringbg is a ringbg bug (an internal error).
"""

__all__ = ["one_line", "RingbgError", "ConfigError", "DataError", "DataStoreError", "DL3Error",
           "OutputError", "RunError"]


class RingbgError(Exception):
    """Base class of the errors ringbg reports to the user as one line."""


class ConfigError(RingbgError):
    """A configuration that cannot be used; names the key, the value and what is allowed."""


class DataError(RingbgError):
    """Input data that cannot be used (a data store, an observation's files)."""


class DataStoreError(DataError):
    """A data store that cannot be opened or a selection that is empty."""


class DL3Error(DataError):
    """A DL3 file or HDU that cannot be used; the message names the file and HDU."""


class OutputError(RingbgError):
    """OUTDIR cannot be written (exists without --overwrite, not writable...)."""


class RunError(RingbgError):
    """The run cannot go on (no usable observation, bad exclusion file...)."""


def one_line(exc):
    """``exc`` as one line of text: its type (when not ringbg's) and first line of message."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    name = type(exc).__name__
    if isinstance(exc, (RingbgError, ValueError, OSError, EOFError)) and text:
        return text
    return f"{name}: {text}" if text else name
