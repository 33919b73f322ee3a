"""The ``ringbg`` command line.

Exit status: 0 success, 1 bad input (one clear line on stderr, no traceback), 2 usage error,
130 interrupted (Ctrl-C).
"""

import logging
import shlex
import sys
from pathlib import Path

import click

from .errors import RingbgError
from .version import __version__

log = logging.getLogger("ringbg")


def _fail(message):
    click.echo(f"ringbg: error: {message}", err=True)
    sys.exit(1)


def _setup_logging(verbose, quiet):
    level = logging.WARNING
    if verbose:
        level = logging.DEBUG if verbose > 1 else logging.INFO
    if quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="ringbg: %(levelname)s: %(message)s", force=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ringbg")
def main():
    """Ring-background excess and significance maps from IACT DL3 (GADF) data."""


def run_config(config_path_or_obj, outdir, jobs, overwrite, quiet, verbose, figures=None,
               cache_dir=None):
    """Shared by ``run`` and ``demo``: validate, refuse an existing OUTDIR early, run, write."""
    from .config import load_config
    from .outputs import prepare_outdir
    from .pipeline import run

    _setup_logging(verbose, quiet)
    try:
        config = load_config(config_path_or_obj)
        out = Path(outdir) if outdir else Path(config.output.dir)
        overwrite = overwrite or config.output.overwrite
        prepare_outdir(out, overwrite)
        progress = not quiet and sys.stderr.isatty()
        result = run(config, jobs=jobs, progress=progress, cache_dir=cache_dir)
        folder = result.write(out, overwrite=overwrite, figures=figures)
    except RingbgError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        click.echo("ringbg: interrupted; the output folder was left as it was", err=True)
        sys.exit(130)
    s = result.summary
    if not quiet:
        m = s["max_significance"]
        click.echo(
            f"ringbg: {s['n_obs']} observations ({len(s['skipped'])} skipped), "
            f"counts {s['totals']['counts']:.0f}, excess {s['totals']['excess']:.1f}, "
            f"max significance {m['value']:.2f} at ({m['lon']:.3f}, {m['lat']:.3f}) {m['frame']}"
        )
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
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
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
def info_command(datastore):
    """List the observations of DATASTORE: id, object, pointing, livetime, zenith."""
    import numpy as np

    from .datastore import DataStore, DataStoreError

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
def simulate_command(outdir, n_obs, seed, lon, lat, frame, no_sources):
    """Write a simulated GADF data store (wobble observations of a field) into OUTDIR."""
    from .simulate import demo_sources, simulate_datastore

    sources = [] if no_sources else demo_sources((lon, lat), frame=frame)
    path = simulate_datastore(outdir, n_obs=n_obs, seed=seed, center=(lon, lat), frame=frame,
                              sources=sources)
    click.echo(f"ringbg: simulated {n_obs} observations in {path}")


@main.command("demo")
@click.option("-o", "--outdir", type=click.Path(file_okay=False), default="ringbg-demo",
              show_default=True, help="Folder for the data, config and results.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None)
@click.option("-q", "--quiet", is_flag=True)
def demo_command(outdir, jobs, quiet):
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
    run_config(str(config_path), None, jobs, True, quiet, 0)


if __name__ == "__main__":  # pragma: no cover
    main()
