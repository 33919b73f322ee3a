"""The ``ringbg`` command line.

Exit status: 0 success, 1 bad input or environment (one ``ringbg: error:`` line on stderr,
no traceback), 2 usage error, 3 internal error (a bug in ringbg: one line, ``-v`` shows the
traceback), 130 interrupted (Ctrl-C; one line).
"""

if __name__ == "__main__":  # python -m ringbg.cli: Ctrl-C handled before the imports below
    from ringbg.entry import install

    install()

import logging
import shlex
import signal
import sys
import threading
import traceback
import warnings
from pathlib import Path

import click

from .errors import RingbgError
from .version import __version__

log = logging.getLogger("ringbg")

#: exit statuses
EXIT_ERROR, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 2, 3, 130


def _fail(message):
    click.echo(f"ringbg: error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def _interrupted(message="ringbg: interrupted"):
    click.echo(message, err=True)
    sys.exit(EXIT_INTERRUPTED)


def _internal_error(exc):
    """An exception that is not a `RingbgError`: a ringbg bug, told apart from bad input."""
    if log.isEnabledFor(logging.INFO):
        traceback.print_exception(exc, file=sys.stderr)
        hint = "please report it with the traceback above"
    else:
        hint = "rerun with -v to see the traceback, and please report it"
    text = str(exc).splitlines()[0] if str(exc).strip() else ""
    click.echo(f"ringbg: internal error: {type(exc).__name__}"
               f"{': ' + text if text else ''} (a bug in ringbg, not in your input; {hint})",
               err=True)
    sys.exit(EXIT_INTERNAL)


def _log_warning(message, category, filename, lineno, file=None, line=None):
    """Python warnings as one log line each, without the source line; numpy's floating-point
    RuntimeWarnings (NaN/inf where the maths means them) only with -v."""
    level = logging.INFO if issubclass(category, RuntimeWarning) else logging.WARNING
    log.log(level, "%s: %s (%s:%s)", category.__name__, str(message).splitlines()[0] if
            str(message) else "", Path(filename).name, lineno)


def _setup_logging(verbose, quiet):
    level = logging.WARNING
    if verbose:
        level = logging.DEBUG if verbose > 1 else logging.INFO
    if quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="ringbg: %(levelname)s: %(message)s", force=True)
    warnings.showwarning = _log_warning


class _Group(click.Group):
    """Every command: Ctrl-C -> one line and 130; a `RingbgError` or an `OSError` -> one line
    and 1; any other exception (a ringbg bug) -> one line and 3."""

    def invoke(self, ctx):
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.default_int_handler) if main_thread \
            else None
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            _interrupted()
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except RingbgError as exc:
            _fail(str(exc))
        except OSError as exc:  # the environment (disk, permissions), not a ringbg bug
            if exc.errno is None:
                _internal_error(exc)
            _fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc.strerror))
        except MemoryError:
            _fail("out of memory; use a larger geom.binsize, a smaller geom.width, fewer "
                  "energy bins or fewer --jobs")
        except Exception as exc:
            _internal_error(exc)
        finally:
            if main_thread and previous is not None:
                signal.signal(signal.SIGINT, previous)


def _verbose_option(fn):
    return click.option("-v", "--verbose", count=True,
                        help="More logging (-vv for debug); tracebacks of internal errors.")(fn)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ringbg")
def main():
    """Ring-background excess and significance maps from IACT DL3 (GADF) data."""


def _summary_line(s):
    m = s["max_significance"]
    if m.get("value") is None:
        peak = "no pixel has a finite significance"
    else:
        peak = (f"max significance {m['value']:.2f} at ({m['lon']:.3f}, {m['lat']:.3f}) "
                f"{m['frame']}")
    t = s["totals"]
    return (f"ringbg: {s['n_obs']} observations ({len(s['skipped'])} skipped), "
            f"counts {t['counts']:.0f}, excess {t['excess']:.1f}, {peak}")


_UNKNOWN = object()


def _interrupt_message(out, before):
    """What an interrupted run left: the new outputs may be in place already."""
    from .outdir import read_marker

    try:
        now = read_marker(out) if out is not None else None
    except OSError:
        now = None
    if before is not _UNKNOWN and now is not None and now != before:
        return f"ringbg: interrupted; the new outputs in {out} are complete"
    return "ringbg: interrupted; the output folder was left as it was"


def run_config(config_path_or_obj, outdir, jobs, overwrite, quiet, verbose, figures=None,
               cache_dir=None):
    """Shared by ``run`` and ``demo``: validate, refuse a bad OUTDIR early, run, write."""
    from .config import load_config
    from .entry import exit_on_interrupt
    from .outdir import read_marker
    from .outputs import prepare_outdir, write_outputs
    from .pipeline import run

    _setup_logging(verbose, quiet)
    out, before = None, _UNKNOWN
    try:
        config = load_config(config_path_or_obj)
        out = Path(outdir) if outdir else Path(config.output.dir)
        overwrite = overwrite or config.output.overwrite
        protected = [("cache folder", cache_dir)]
        if isinstance(config_path_or_obj, (str, Path)) and Path(config_path_or_obj).is_file():
            protected.append(("config file", config_path_or_obj))
        protected += [("exclusion file", f) for f in config.exclusion.files]
        before = read_marker(prepare_outdir(out, overwrite, config.datastore, protected).path)
        progress = not quiet and sys.stderr.isatty()
        result = run(config, jobs=jobs, progress=progress, cache_dir=cache_dir)
        folder = write_outputs(result, out, overwrite=overwrite, figures=figures,
                               protected=protected)
        if threading.current_thread() is threading.main_thread():
            exit_on_interrupt(f"ringbg: interrupted; the outputs in {folder} are complete")
    except RingbgError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _interrupted(_interrupt_message(out, before))
    if not quiet:
        click.echo(_summary_line(result.summary))
        click.echo(f"ringbg: outputs in {folder}")
    return result


@main.command("run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--outdir", type=click.Path(file_okay=False), help="Output folder "
              "(default: output.dir of the config).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Local worker processes (default: parallel.jobs).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, errors only.")
@_verbose_option
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=None,
              help="Keep per-observation results here and reuse them on a rerun.")
def run_command(config, outdir, jobs, overwrite, quiet, verbose, cache_dir):
    """Run the workflow of CONFIG (YAML) and write maps, figures, summary and report."""
    if not Path(config).is_file():
        _fail(f"config file {config} does not exist (write one with 'ringbg config > my.yaml')")
    run_config(config, outdir, jobs, overwrite, quiet, verbose, cache_dir=cache_dir)


@main.command("config")
def config_command():
    """Print an annotated template config that runs as is on H.E.S.S. DR1."""
    from .config import TEMPLATE

    click.echo(TEMPLATE, nl=False)


@main.command("info")
@click.argument("datastore", type=click.Path())
@_verbose_option
def info_command(datastore, verbose):
    """List the observations of DATASTORE: id, object, pointing, livetime, zenith."""
    import numpy as np

    from .datastore import DataStore, DataStoreError

    _setup_logging(verbose, False)
    try:
        store = DataStore.from_dir(datastore)
    except DataStoreError as exc:
        _fail(str(exc))
    t = store.obs_table
    click.echo(f"{'OBS_ID':>8}  {'OBJECT':<24} {'RA_PNT':>9} {'DEC_PNT':>9} "
               f"{'LIVETIME_S':>10} {'ZEN_PNT':>7}")

    def col(name, i):
        return float(t[name][i]) if name in t.colnames else np.nan

    for i in range(len(t)):
        obj = str(t["OBJECT"][i]).strip() if "OBJECT" in t.colnames else ""
        click.echo(f"{int(t['OBS_ID'][i]):>8}  {obj[:24]:<24} {col('RA_PNT', i):>9.3f} "
                   f"{col('DEC_PNT', i):>9.3f} {col('LIVETIME', i):>10.1f} "
                   f"{col('ZEN_PNT', i):>7.1f}")
    click.echo(f"{len(t)} observations in {store.base_dir}")


@main.command("simulate")
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--n-obs", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lon", type=float, default=83.63, show_default=True, help="Field centre (deg).")
@click.option("--lat", type=float, default=22.01, show_default=True, help="Field centre (deg).")
@click.option("--frame", type=click.Choice(["icrs", "galactic"]), default="icrs",
              show_default=True)
@click.option("--no-sources", is_flag=True, help="Background only.")
@_verbose_option
def simulate_command(outdir, n_obs, seed, lon, lat, frame, no_sources, verbose):
    """Write a simulated GADF data store (wobble observations of a field) into OUTDIR."""
    from .simulate import demo_sources, simulate_datastore

    _setup_logging(verbose, False)
    sources = [] if no_sources else demo_sources((lon, lat), frame=frame)
    path = simulate_datastore(outdir, n_obs=n_obs, seed=seed, center=(lon, lat), frame=frame,
                              sources=sources)
    click.echo(f"ringbg: simulated {n_obs} observations in {path}")


@main.command("demo")
@click.option("-o", "--outdir", type=click.Path(file_okay=False), default="ringbg-demo",
              show_default=True, help="Folder for the data, config and results.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None)
@click.option("-q", "--quiet", is_flag=True)
@_verbose_option
def demo_command(outdir, jobs, quiet, verbose):
    """Simulate a small field and run the whole workflow on it (no download needed)."""
    from .demo import demo_config
    from .simulate import demo_sources, simulate_datastore

    out = Path(outdir)
    data = out / "data"
    center = (83.63, 22.01)
    if not (data / "obs-index.fits.gz").exists():
        simulate_datastore(data, n_obs=6, seed=1, center=center, frame="icrs",
                           sources=demo_sources(center, frame="icrs"))
    config_path = out / "demo.yaml"
    config_path.write_text(demo_config(data.resolve(), center, out.resolve() / "results"))
    if not quiet:
        click.echo(f"ringbg: demo data in {data}, config in {config_path}; edit it and re-run "
                   f"with: ringbg run {shlex.quote(str(config_path))} --overwrite")
    run_config(str(config_path), None, jobs, True, quiet, verbose)


if __name__ == "__main__":  # pragma: no cover
    from ringbg.entry import main as entry_main

    entry_main()
