"""Progress of a run: its stages, told to a progress object and to the debug log.

`ringbg.pipeline.run` and `ringbg.outputs.write_outputs` call `stage` when a stage starts
(the automatic-exclusion passes, the correlated maps, the FITS files, the figures, the
report). ``progress`` is anything with a ``stage(name)`` method (the command line's
`StageLines` on a terminal), or a plain bool or None (no stage lines).
"""

import logging
import sys
import time

__all__ = ["stage", "StageLines"]

log = logging.getLogger("ringbg.progress")


def stage(progress, name):
    """Tell ``progress`` (when it has a ``stage`` method) and the debug log that the stage
    ``name`` starts."""
    log.debug("stage: %s", name)
    hook = getattr(progress, "stage", None)
    if callable(hook):
        hook(name)


class StageLines:
    """One line per stage on ``stream`` (stderr by default), with the time since the start.

    Truthy, so that the observations bar (``progress=True``) is shown as well.

    Parameters
    ----------
    stream : file-like, optional
        Where the lines go.
    clock : callable, optional
        Seconds (``time.perf_counter``).
    """

    def __init__(self, stream=None, clock=time.perf_counter):
        self.stream = sys.stderr if stream is None else stream
        self.clock = clock
        self.start_s = clock()

    def __bool__(self):
        return True

    def stage(self, name):
        """Write ``ringbg: [   12.3 s] name``."""
        self.stream.write(f"ringbg: [{self.clock() - self.start_s:7.1f} s] {name}\n")
        self.stream.flush()
