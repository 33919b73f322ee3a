"""The ``ringbg`` console script (and ``python -m ringbg``): Ctrl-C handled from the start.

Importing numpy, astropy and the rest takes most of a second. A Ctrl-C then, or after the
outputs are in place, ends ringbg at once with one line and exit status 130. While the work
runs, Ctrl-C raises `KeyboardInterrupt` as usual (the CLI turns it into one line and 130 after
removing its temporary folder; see `ringbg.cli`).
"""

import atexit
import contextlib
import os
import signal
import sys
import threading

__all__ = ["main", "install", "exit_on_interrupt", "exiting_on_interrupt",
           "set_interrupt_message"]

_message = "ringbg: interrupted"


def _exit_now(signum, frame):
    # no flush of sys.stdout: it may be the very write this signal interrupted (a full pipe)
    try:
        os.write(2, (_message + "\n").encode(errors="replace"))
    finally:
        os._exit(130)


def set_interrupt_message(message):
    """The line printed when a Ctrl-C ends ringbg at once."""
    global _message
    _message = message


def exit_on_interrupt(message=None):
    """From now on, Ctrl-C prints one line and ends the process with status 130 at once."""
    if message is not None:
        set_interrupt_message(message)
    signal.signal(signal.SIGINT, _exit_now)


@contextlib.contextmanager
def exiting_on_interrupt():
    """Within: Ctrl-C ends the process at once (`exit_on_interrupt`); the handler before is
    put back after. In the main thread only (elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


_exit_status = None


def _end_now():
    """The last exit handler: end the process here, with the status the CLI chose.

    After the exit handlers Python stops handling signals and tears its modules down (tens of
    milliseconds with numpy and astropy loaded); a Ctrl-C then would kill the process by
    SIGINT without a word. Everything is written and closed by now, so the teardown is skipped.
    """
    if _exit_status is None:  # not the CLI's own exit (e.g. an exception escaped): plain exit
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # e.g. a closed pipe: nothing more can be said
            pass
    os._exit(_exit_status)


_installed = False


def install():
    """For a command-line process, before the heavy imports: Ctrl-C ends it at once with one
    line and 130, except while the CLI's commands work (they clean up first)."""
    global _installed
    exit_on_interrupt()
    if not _installed:
        atexit.register(_end_now)  # registered first, so it runs last
        _installed = True


def main(argv=None):
    """Run the ``ringbg`` command line (``argv``: the arguments, default ``sys.argv[1:]``)."""
    global _exit_status
    install()
    from .cli import main as cli

    try:
        cli.main(args=argv, prog_name="ringbg")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            _exit_status = exc.code or 0
        raise
