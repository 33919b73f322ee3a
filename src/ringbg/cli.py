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


#: set when Ctrl-C reached a command: a library that turns the `KeyboardInterrupt` into an
#: error of its own (pydantic's SchemaError while it builds a validator) is still an interrupt
_ctrl_c = threading.Event()


def _raise_interrupt(signum, frame):
    _ctrl_c.set()
    raise KeyboardInterrupt


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
    """ringbg's own log lines at the level of ``-v`` (INFO) or ``-vv`` (DEBUG); other
    libraries' (matplotlib, astropy...) stay at WARNING; ``--quiet``: errors only."""
    level = logging.WARNING
    if verbose:
        level = logging.DEBUG if verbose > 1 else logging.INFO
    if quiet:
        level = logging.ERROR
    logging.basicConfig(level=max(level, logging.WARNING),
                        format="ringbg: %(levelname)s: %(message)s", force=True)
    log.setLevel(level)
    warnings.showwarning = _log_warning


class _Group(click.Group):
    """Every command: Ctrl-C -> one line and 130; a `RingbgError` or an `OSError` -> one line
    and 1; any other exception (a ringbg bug) -> one line and 3."""

    def invoke(self, ctx):
        main_thread = threading.current_thread() is threading.main_thread()
        _ctrl_c.clear()
        previous = signal.signal(signal.SIGINT, _raise_interrupt) if main_thread else None
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
            if _ctrl_c.is_set():
                _interrupted()
            _internal_error(exc)
        except BaseException as exc:  # e.g. a Rust panic of pydantic-core after a Ctrl-C
            if _ctrl_c.is_set() and not isinstance(exc, (SystemExit, GeneratorExit)):
                _interrupted()
            raise
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


def set_keys(data, settings):
    """Apply ``--set KEY=VALUE`` settings to a config mapping (before validation), in place.

    Parameters
    ----------
    data : dict
        The config mapping (`ringbg.config.read_config`).
    settings : list of (str, str)
        ``(dotted key, value text)`` pairs, applied in order; each value is parsed as YAML
        (``5``, ``0.04deg``, ``[20136, 20137]``, ``null``); a list entry is named by its
        index (``exclusion.regions.0.radius``).

    Raises
    ------
    ConfigError
        A value that is not YAML, or a key whose path crosses a value or a missing list entry.
    """
    import yaml

    from .errors import ConfigError

    for key, text in settings:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
            raise ConfigError(f"--set {key}: the value {text!r} is not valid YAML "
                              f"({problem})") from None
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date that is not one
            raise ConfigError(f"--set {key}: the value {text!r} cannot be read ({exc})") from None
        parts = key.split(".")
        node = data
        for depth, part in enumerate(parts):
            parent = ".".join(parts[:depth])
            if isinstance(node, list):
                part = _list_index(part, node, key, parent)
            elif not isinstance(node, dict):
                raise ConfigError(f"--set {key}: config key '{parent}' holds a value "
                                  f"({_short(node)}), not a section of keys")
            if depth == len(parts) - 1:
                node[part] = value
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}  # a section left out or null: set a key of it
                node = node[part]
    return data


def _short(value, size=60):
    text = " ".join(repr(value).split())
    return text if len(text) <= size else text[:size - 3] + "..."


def _list_index(part, items, key, where):
    """The list index ``part`` names in ``--set key``, or a `ConfigError`."""
    from .errors import ConfigError

    try:
        index = int(part)
    except ValueError:
        raise ConfigError(f"--set {key}: config key '{where}' is a list; name an entry by its "
                          f"index ({where}.0...)") from None
    if not 0 <= index < len(items):
        raise ConfigError(f"--set {key}: config key '{where}' has {len(items)} "
                          f"entr{'y' if len(items) == 1 else 'ies'}; no index {index}")
    return index


def _parse_set(ctx, param, values):
    """``--set KEY=VALUE`` options as ``(key, value text)`` pairs; a usage error otherwise."""
    pairs = []
    for value in values:
        key, sep, text = value.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise click.BadParameter(f"{value!r}: expected KEY=VALUE with a dotted KEY, e.g. "
                                     "--set geom.energy.nbins=5", ctx=ctx, param=param)
        pairs.append((key, text))
    return pairs


def _load(config_path_or_obj, settings):
    """The validated config of ``run``: the file (or object), then the ``--set`` settings."""
    import copy

    from .config import Config, load_config, read_config

    if not settings:
        return load_config(config_path_or_obj)
    source = config_path_or_obj
    if isinstance(source, Config):
        source = source.model_dump(mode="json")
    data = copy.deepcopy(read_config(source))
    return load_config(set_keys(data, settings))


#: maps up to this many pixels get the figure renderer started with the run (it imports
#: matplotlib meanwhile); bigger maps are faster drawn by workers forked at the end (their
#: maps are not sent through a pipe)
WARM_RENDERER_MAX_PIXELS = 10**6


def _early_renderer(figures):
    """The figure renderer, started before the run's modules are imported (it imports
    matplotlib and warms up meanwhile, on another CPU); None for ``--no-figures``."""
    if figures is False:
        return None
    from .figures import start_renderer

    return start_renderer()


def _stop_renderer():
    """Stop the figure renderer at once (an error: no figures to wait for)."""
    if "ringbg.figures" in sys.modules:
        sys.modules["ringbg.figures"].stop_renderer(kill=True)


def _warm_renderer(renderer, config, figures):
    """The renderer started by `_early_renderer` if a run of ``config`` uses it, with the
    coordinate frames of its map figures on their way; else it is stopped and None is
    returned (no figures, or maps too big for it: see `WARM_RENDERER_MAX_PIXELS`)."""
    if renderer is None:
        return None
    from .figures import ring_panel_deg, stop_renderer

    width, height = config.geom.width_deg
    if not (config.output.figures if figures is None else figures) or (
            width * height / config.geom.binsize**2 > WARM_RENDERER_MAX_PIXELS):
        stop_renderer(kill=True)
        return None
    from .pipeline import make_geom

    geom = make_geom(config)
    ring = config.ring
    r_out_max = ring.adaptive.r_out_max if ring.adaptive is not None else None
    try:
        renderer.prepare(geom.wcs, geom.shape,
                         (None, ring_panel_deg(ring.r_in + ring.width, r_out_max)))
    except OSError:
        pass  # a renderer gone is found out (and done without) when the figures are drawn
    return renderer


def run_config(config_path_or_obj, outdir, jobs, overwrite, quiet, verbose, figures=None,
               cache_dir=None, settings=()):
    """Shared by ``run`` and ``demo``: validate, refuse a bad OUTDIR early, run, write.

    ``settings``: ``(key, value text)`` pairs of ``--set``, applied before validation;
    ``figures``: False for ``--no-figures`` (None: ``output.figures``).
    """
    from .entry import exit_on_interrupt, exiting_on_interrupt

    with exiting_on_interrupt():
        # Ctrl-C while numpy, astropy, pydantic's models... are imported: nothing to clean up
        # yet, and an interrupt inside an import or a validator build is not always raised
        # cleanly (pydantic-core turns it into its own errors, or panics)
        renderer = _early_renderer(figures)
        from .outdir import read_marker
        from .outputs import prepare_outdir, start_figures, write_outputs
        from .pipeline import run
        from .progress import StageLines

    _setup_logging(verbose, quiet)
    out, before = None, _UNKNOWN
    try:
        config = _load(config_path_or_obj, settings)
        out = Path(outdir) if outdir else Path(config.output.dir)
        overwrite = overwrite or config.output.overwrite
        protected = [("cache folder", cache_dir)]
        if isinstance(config_path_or_obj, (str, Path)) and Path(config_path_or_obj).is_file():
            protected.append(("config file", config_path_or_obj))
        protected += [("exclusion file", f) for f in config.exclusion.files]
        before = read_marker(prepare_outdir(out, overwrite, config.datastore, protected).path)
        renderer = _warm_renderer(renderer, config, figures)
        progress = StageLines() if not quiet and sys.stderr.isatty() else None
        started = []  # the figures, in the renderer as soon as their maps are made
        on_maps = None
        if renderer is not None:
            def on_maps(preview):
                # the stack's figures first (drawn while the correlated maps are made),
                # then the others
                done = {name for pending in started for name in pending.names}
                started.append(start_figures(preview, skip=done))
        try:
            result = run(config, jobs=jobs, progress=progress, cache_dir=cache_dir,
                         on_maps=on_maps, on_stack=on_maps)
        except BaseException:
            for pending in started:
                pending.cancel()
            raise
        folder = write_outputs(result, out, overwrite=overwrite, figures=figures,
                               protected=protected, progress=progress,
                               started_figures=started or None)
        if threading.current_thread() is threading.main_thread():
            exit_on_interrupt(f"ringbg: interrupted; the outputs in {folder} are complete")
    except RingbgError as exc:
        _stop_renderer()
        _fail(str(exc))
    except KeyboardInterrupt:
        _stop_renderer()
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
@click.option("--set", "settings", metavar="KEY=VALUE", multiple=True, callback=_parse_set,
              help="Set a config key (dotted, e.g. geom.energy.nbins=5, "
                   "excess.correlation_radius=0.04deg, observations.obs_ids=[20136,20137]); "
                   "VALUE is YAML; repeatable.")
@click.option("--no-figures", is_flag=True, help="FITS files and summary.json only (no "
              "figures, no report).")
def run_command(config, outdir, jobs, overwrite, quiet, verbose, cache_dir, settings,
                no_figures):
    """Run the workflow of CONFIG (YAML) and write maps, figures, summary and report.

    Relative paths in CONFIG are taken from CONFIG's folder; those of --set and -o from the
    current folder.
    """
    if not Path(config).is_file():
        _fail(f"config file {Path(config).absolute()} does not exist (write one with "
              "'ringbg config > my.yaml')")
    run_config(config, outdir, jobs, overwrite, quiet, verbose, cache_dir=cache_dir,
               figures=False if no_figures else None, settings=settings)


@main.command("config")
def config_command():
    """Print an annotated template config that runs as is on H.E.S.S. DR1."""
    from .config import TEMPLATE

    click.echo(TEMPLATE, nl=False)


#: how deep and how wide ``ringbg info`` looks for data stores below a folder without one
FIND_STORES_MAX_DEPTH = 4
FIND_STORES_MAX_FOLDERS = 5000
FIND_STORES_MAX_FOUND = 20


def find_datastores(folder, max_depth=FIND_STORES_MAX_DEPTH,
                    max_folders=FIND_STORES_MAX_FOLDERS, max_found=FIND_STORES_MAX_FOUND):
    """Data stores (folders with an observation index) below ``folder``, breadth first.

    Bounded: at most ``max_depth`` levels below ``folder``, ``max_folders`` folders looked
    into and ``max_found`` stores; hidden folders and the folders inside a store are skipped,
    symlinks are followed (each folder is looked into once).

    Returns
    -------
    stores : list of `~pathlib.Path`
    stopped : bool
        True when ``max_folders`` or ``max_found`` stopped the search early.
    """
    import os

    from .datastore import OBS_INDEX_NAMES

    seen, found, level = set(), [], [Path(folder)]
    for depth in range(max_depth + 1):
        below = []
        for path in level:
            if len(seen) >= max_folders:
                return found, True
            try:
                real = os.path.realpath(path)
                if real in seen:
                    continue
                seen.add(real)
                with os.scandir(path) as scan:
                    entries = sorted(scan, key=lambda e: e.name)
            except OSError:
                continue
            if depth > 0 and any(e.name in OBS_INDEX_NAMES for e in entries):
                found.append(path)
                if len(found) >= max_found:
                    return found, True
                continue
            for entry in entries:
                try:
                    if not entry.name.startswith(".") and entry.is_dir():
                        below.append(path / entry.name)
                except OSError:
                    continue
        level = below
    return found, False


def _store_error(directory, exc):
    """The message of a folder that is not a data store, and the stores below it."""
    import os

    directory = Path(directory)
    message = str(exc)
    if not directory.is_dir():
        top = Path(directory.anchor, *directory.parts[1:2])
        if not os.environ.get("GAMMAPY_DATA") and not top.exists():
            message += ("; GAMMAPY_DATA is not set (if you wrote $GAMMAPY_DATA/..., the shell "
                        "made it /...)")
        return message, []
    stores, stopped = find_datastores(directory)
    if not stores:
        return (f"{message} and no data store up to {FIND_STORES_MAX_DEPTH} levels below it",
                [])
    more = "; the search stopped there" if stopped else ""
    return (f"{message}; data store{'s' if len(stores) > 1 else ''} found up to "
            f"{FIND_STORES_MAX_DEPTH} levels below it{more}:", [str(p) for p in stores])


def _parse_cone(ctx, param, value):
    """``--cone LON,LAT,RADIUS`` (deg) as three floats."""
    import math

    if value is None:
        return None
    try:
        lon, lat, radius = (float(v) for v in value.replace(" ", "").split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected LON,LAT,RADIUS in deg, e.g. "
                                 "228.32,-59.08,2.5", ctx=ctx, param=param) from None
    if not all(math.isfinite(v) for v in (lon, lat, radius)) or not -90 <= lat <= 90 \
            or not 0 < radius <= 180:
        raise click.BadParameter(f"{value!r}: LAT must be in [-90, 90] and RADIUS in "
                                 "(0, 180] deg", ctx=ctx, param=param)
    return lon, lat, radius


def _text_column(table, name):
    """A text column as stripped ``str`` (FITS text columns are bytes); None if absent."""
    import numpy as np

    if name not in table.colnames:
        return None
    return [v.decode(errors="replace").strip() if isinstance(v, bytes) else str(v).strip()
            for v in np.asarray(table[name]).tolist()]


def _number_column(table, name):
    import numpy as np

    if name not in table.colnames:
        return np.full(len(table), np.nan)
    values = np.asarray(table[name])
    return values.astype(float) if values.dtype.kind in "iuf" else np.full(len(table), np.nan)


def _livetime_s(table):
    """LIVETIME (s) of each row; ONTIME x DEADC where LIVETIME is absent; NaN if unknown."""
    import numpy as np

    live = _number_column(table, "LIVETIME")
    fallback = _number_column(table, "ONTIME") * _number_column(table, "DEADC")
    return np.where(np.isfinite(live), live, fallback)


def _normalised(name):
    return "".join(name.split()).casefold()


def _info_rows(store, cone, frame, obj):
    """Indexes (rows of the observation index) that ``--cone`` and ``--object`` keep."""
    import numpy as np

    from .errors import DataStoreError

    table = store.obs_table
    keep = np.ones(len(table), dtype=bool)
    if cone is not None:
        wanted = set(store.select(cone=(cone[0], cone[1], frame, cone[2])))
        keep &= np.isin(np.asarray(table["OBS_ID"], dtype=np.int64), list(wanted))
    if obj is not None:
        objects = _text_column(table, "OBJECT")
        if objects is None:
            raise DataStoreError(f"--object: the observation index of {store.base_dir} has no "
                                 "OBJECT column")
        keep &= np.array([_normalised(obj) in _normalised(o) for o in objects], dtype=bool)
    return np.flatnonzero(keep)


def _hours(seconds):
    return "-" if not seconds == seconds else f"{seconds / 3600:.2f}"


def _number(value, width, decimals):
    """``value`` right-aligned in ``width`` with ``decimals``; ``-`` for NaN (not given)."""
    return f"{'-':>{width}}" if not value == value else f"{value:>{width}.{decimals}f}"


def _print_info(store, rows):
    """The observation table, then the totals per object and in all."""
    import numpy as np

    t = store.obs_table
    objects = _text_column(t, "OBJECT") or [""] * len(t)
    width = max([6] + [len(objects[i]) for i in rows])
    width = min(width, 40)
    ra, dec = _number_column(t, "RA_PNT"), _number_column(t, "DEC_PNT")
    live, zen = _livetime_s(t), _number_column(t, "ZEN_PNT")
    ids = np.asarray(t["OBS_ID"], dtype=np.int64)
    click.echo(f"{'OBS_ID':>8}  {'OBJECT':<{width}} {'RA_PNT':>9} {'DEC_PNT':>9} "
               f"{'LIVETIME_S':>10} {'ZEN_PNT':>7}")
    for i in rows:
        click.echo(f"{int(ids[i]):>8}  {objects[i][:width]:<{width}} {_number(ra[i], 9, 3)} "
                   f"{_number(dec[i], 9, 3)} {_number(live[i], 10, 1)} "
                   f"{_number(zen[i], 7, 1)}")
    if len(rows) == 0:
        click.echo(f"no observation of {store.base_dir} matches")
        return
    click.echo("")
    click.echo(f"{'OBJECT':<{width}} {'RUNS':>5} {'LIVETIME_H':>10}")
    for name in dict.fromkeys(objects[i] for i in rows):
        these = [i for i in rows if objects[i] == name]
        hours = live[these]
        total = np.nansum(hours) if np.isfinite(hours).any() else np.nan
        click.echo(f"{(name or '-')[:width]:<{width}} {len(these):>5} {_hours(total):>10}")
    known = np.isfinite(live[rows])
    total = f"{_hours(np.nansum(live[rows]))} h" if known.any() else "unknown"
    unknown = "" if known.all() else f" ({int((~known).sum())} without LIVETIME)"
    click.echo(f"{len(rows)} observations, live time {total}{unknown}, in {store.base_dir}")


@main.command("info")
@click.argument("datastore", type=click.Path())
@click.option("--cone", callback=_parse_cone, metavar="LON,LAT,RADIUS",
              help="Only observations pointed within RADIUS of (LON, LAT) (deg, --frame).")
@click.option("--frame", type=click.Choice(["icrs", "galactic"]), default="icrs",
              show_default=True, help="Frame of --cone.")
@click.option("--object", "obj", metavar="NAME", help="Only observations whose OBJECT holds "
              "NAME (case and spaces ignored: 'msh 15-52' finds MSH15-52).")
@_verbose_option
def info_command(datastore, cone, frame, obj, verbose):
    """List the observations of DATASTORE (id, object, pointing, live time, zenith) and the
    totals per object; a folder without an index: the data stores below it."""
    import os

    from .datastore import DataStore, DataStoreError

    _setup_logging(verbose, False)
    directory = Path(os.path.expandvars(datastore)).expanduser().absolute()
    try:
        store = DataStore.from_dir(directory)
    except DataStoreError as exc:
        message, stores = _store_error(directory, exc)
        click.echo(f"ringbg: error: {message}", err=True)
        for path in stores:
            click.echo(f"  {path}", err=True)
        sys.exit(EXIT_ERROR)
    _print_info(store, _info_rows(store, cone, frame, obj))


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
