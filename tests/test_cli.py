"""The command line as a user meets it: exit codes, one-line errors, outputs."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from conftest import msh_config

from ringbg.cli import main


def _write(tmp_path, cfg, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_help_everywhere():
    runner = CliRunner()
    for args in ([], ["run"], ["info"], ["config"], ["demo"], ["simulate"]):
        result = runner.invoke(main, args + ["--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_usage_error_exit_2():
    result = CliRunner().invoke(main, ["run"])
    assert result.exit_code == 2


def test_config_prints_template():
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 0
    assert yaml.safe_load(result.output)["ring"]["r_in"] == "0.5 deg"


def test_bad_config_one_line_no_traceback(tmp_path, data_dir):
    cfg = msh_config(tmp_path)
    cfg["ring"]["widht"] = "0.3 deg"
    path = _write(tmp_path, cfg)
    proc = subprocess.run([sys.executable, "-m", "ringbg.cli", "run", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ring.widht" in lines[0]


def test_missing_config_file(tmp_path):
    result = CliRunner().invoke(main, ["run", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_info(data_dir):
    result = CliRunner().invoke(main, ["info", str(data_dir / "hess-dl3-dr1")])
    assert result.exit_code == 0
    assert "20136" in result.output and "MSH15-52" in result.output
    assert "105 observations" in result.output


def test_info_bad_folder(tmp_path):
    result = CliRunner().invoke(main, ["info", str(tmp_path)])
    assert result.exit_code == 1 and "obs-index" in result.output


def test_run_writes_outputs_and_refuses_existing(tmp_path, data_dir):
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137]}
    path = _write(tmp_path, cfg)
    out = tmp_path / "res"
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_obs"] == 2 and summary["obs_ids"] == [20136, 20137]
    assert {"counts", "counts_off", "acceptance", "acceptance_off", "background",
            "excess"} <= set(summary["totals"])
    assert {"total", "write"} <= set(summary["timings"])
    before = (out / "summary.json").stat().st_mtime_ns
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(out)])
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert (out / "summary.json").stat().st_mtime_ns == before
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(out), "--overwrite", "-q"])
    assert result.exit_code == 0
    assert not list(tmp_path.glob(".res.*"))  # no temporary folder left behind


def test_unknown_obs_id_warns_and_continues(tmp_path, data_dir):
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 999999]}
    path = _write(tmp_path, cfg)
    out = tmp_path / "res"
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["obs_ids"] == [20136]
    assert summary["skipped"] == [{"obs_id": 999999, "reason": "not in the observation index"}]


def test_empty_selection_is_an_error(tmp_path, data_dir):
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [999999]}
    result = CliRunner().invoke(main, ["run", str(_write(tmp_path, cfg)), "-q"])
    assert result.exit_code == 1 and "no observation selected" in result.output


def test_interrupt_exits_130_and_leaves_outdir(tmp_path, data_dir, monkeypatch):
    import ringbg.outputs

    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136]}
    path = _write(tmp_path, cfg)
    out = tmp_path / "res"
    assert CliRunner().invoke(main, ["run", str(path), "-o", str(out), "-q"]).exit_code == 0
    before = sorted(p.name for p in out.iterdir())

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the outputs are being written

    monkeypatch.setattr(ringbg.outputs, "_write_summary", interrupted)
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(out), "--overwrite", "-q"])
    assert result.exit_code == 130
    assert "interrupted" in result.output
    assert sorted(p.name for p in out.iterdir()) == before
    assert not list(tmp_path.glob(".res.*"))


# --------------------------------------------------------------------------------------------
# issue 16: data loss, exit codes, interrupts, warnings, unreachable schedulers


def _small(tmp_path, **sections):
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137]}
    for key, value in sections.items():
        cfg[key] = value
    return cfg


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip()]


def _tree(folder):
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(Path(folder).rglob("*"))}


@pytest.fixture
def project(tmp_path, data_dir):
    """A user's folder holding a (small) copy of the data store and the config."""
    root = tmp_path / "project"
    store = root / "store"
    shutil.copytree(data_dir / "hess-dl3-dr1", store, ignore=shutil.ignore_patterns("data"))
    (store / "data").mkdir()
    for obs_id in (20136, 20137):
        name = f"hess_dl3_dr1_obs_id_{obs_id:06d}.fits.gz"
        shutil.copyfile(data_dir / "hess-dl3-dr1" / "data" / name, store / "data" / name)
    cfg = _small(tmp_path)
    cfg["datastore"] = str(store)
    config = _write(root, cfg)
    return root, config


@pytest.mark.parametrize("where", ["the-folder", "dot", "home", "the-store"])
def test_overwrite_never_deletes_the_users_folder(where, project, monkeypatch):
    """The issue's data loss: --overwrite at a folder holding the data store and the config,
    at '.', at 'output.dir: ~': refused with one line, nothing deleted."""
    root, config = project
    before = _tree(root)
    args = ["run", str(config), "--overwrite", "-q"]
    if where == "the-folder":
        args += ["-o", str(root)]
    elif where == "dot":
        monkeypatch.chdir(root)
        args += ["-o", "."]
    elif where == "home":
        monkeypatch.setenv("HOME", str(root))
        cfg = yaml.safe_load(config.read_text())
        cfg["output"]["dir"] = "~"
        config.write_text(yaml.safe_dump(cfg))
        before = _tree(root)
    else:
        args += ["-o", str(root / "store")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("ringbg: error: output folder"), lines
    assert _tree(root) == before


def test_outdir_file_in_config_no_stray_old(tmp_path, data_dir):
    cfg = _small(tmp_path)
    cfg["output"]["dir"] = str(tmp_path / "afile")
    (tmp_path / "afile").write_text("mine")
    path = _write(tmp_path, cfg)
    result = CliRunner().invoke(main, ["run", str(path), "--overwrite", "-q"])
    assert result.exit_code == 1 and "not a folder" in result.stderr
    assert (tmp_path / "afile").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "c.yaml"]


def test_no_finite_significance_still_exit_0(tmp_path, data_dir):
    """Everything excluded: no off counts, no finite significance; the outputs are written
    and the summary line says so (it crashed with a TypeError after writing)."""
    cfg = _small(tmp_path)
    cfg["observations"] = {"obs_ids": [20136]}
    cfg["exclusion"]["regions"][0]["radius"] = "10 deg"
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(_write(tmp_path, cfg)), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "no pixel has a finite significance" in result.stdout
    assert json.loads((out / "summary.json").read_text())["max_significance"]["value"] is None


def test_internal_error_is_told_apart_from_bad_input(tmp_path, data_dir, monkeypatch):
    import ringbg.pipeline

    def bug(*args, **kwargs):
        return {}["a ringbg bug"]

    monkeypatch.setattr(ringbg.pipeline, "run", bug)
    path = _write(tmp_path, _small(tmp_path))
    result = CliRunner().invoke(main, ["run", str(path), "-q"])
    assert result.exit_code == 3
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("ringbg: internal error: KeyError"), lines
    assert "-v" in lines[0] and "report" in lines[0] and "Traceback" not in result.stderr
    result = CliRunner().invoke(main, ["run", str(path), "-v"])
    assert result.exit_code == 3
    assert "Traceback" in result.stderr and "a ringbg bug" in result.stderr
    assert _error_lines(result.stderr)[-1].startswith("ringbg: internal error")
    assert not (tmp_path / "out").exists()


def test_warnings_are_one_log_line_without_source(tmp_path, data_dir, monkeypatch):
    import warnings

    import ringbg.pipeline

    real = ringbg.pipeline.run

    def noisy(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            np.divide(np.zeros(2), np.zeros(2))  # numpy: invalid value encountered in divide
            warnings.warn("a library changes its defaults", UserWarning)
        return real(*args, **kwargs)

    monkeypatch.setattr(ringbg.pipeline, "run", noisy)
    path = _write(tmp_path, _small(tmp_path))
    result = CliRunner().invoke(main, ["run", str(path), "-q", "-o", str(tmp_path / "a")])
    assert result.exit_code == 0
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    lines = _error_lines(result.stderr)
    assert lines == [line for line in lines if line.startswith("ringbg: ")], lines
    assert any("UserWarning: a library changes its defaults" in line for line in lines)
    assert "RuntimeWarning" not in result.stderr  # floating-point noise: only with -v
    assert "warnings.warn(" not in result.stderr and "np.divide(" not in result.stderr
    result = CliRunner().invoke(main, ["run", str(path), "-v", "-o", str(tmp_path / "c")])
    assert any("RuntimeWarning: invalid value encountered in divide" in line
               for line in _error_lines(result.stderr))
    assert "np.divide(" not in result.stderr


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", ["closed-port", "foo", "silent-listener"])
def test_unreachable_scheduler_one_line_bounded_time(address, tmp_path, data_dir, monkeypatch):
    import ringbg.parallel

    monkeypatch.setattr(ringbg.parallel, "CONNECT_TIMEOUT_S", 2.0)
    listener = None
    if address == "closed-port":
        address = f"tcp://127.0.0.1:{_free_port()}"
    elif address == "silent-listener":  # accepts the connection, never answers
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    cfg = _small(tmp_path, parallel={"address": address})
    t0 = time.monotonic()
    try:
        result = CliRunner().invoke(main, ["run", str(_write(tmp_path, cfg)), "-q"])
    finally:
        if listener is not None:
            listener.close()
    assert time.monotonic() - t0 < 2.0 + 5
    assert result.exit_code == 1, result.output
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("ringbg: error: parallel.address"), lines
    assert not (tmp_path / "out").exists()


def test_python_m_ringbg():
    proc = subprocess.run([sys.executable, "-m", "ringbg", "--version"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "ringbg" in proc.stdout


@pytest.fixture(scope="module")
def small_config(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("sigint")
    return _write(root, _small(root))


@pytest.fixture(scope="module")
def tutorial_config(tmp_path_factory, data_dir):
    """The tutorial's 20 runs: a whole process of more than a second even on a fast day (two
    runs once ended in 0.7 s, before the Ctrl-C meant to land in them)."""
    root = tmp_path_factory.mktemp("sigint20")
    return _write(root, msh_config(root))


@pytest.mark.parametrize("when", ["importing click", 0.2, 0.4, 0.7])
def test_ctrl_c_while_starting_one_line_130(when, tutorial_config, tmp_path):
    """Ctrl-C during the imports of the first second: not click's 'Aborted!' with status 1,
    not a traceback, but one line and 130. 'importing click': as soon as the child reports
    (``-X importtime``) that it imported part of click, i.e. before the CLI runs."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ringbg", "run", str(tutorial_config), "-o", str(out)]
    if when == "importing click":
        command[1:1] = ["-X", "importtime"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    early = []
    if when == "importing click":
        for line in proc.stderr:
            early.append(line)
            if re.search(r"\|\s+click[.\w]*$", line.rstrip()):
                break
    else:
        time.sleep(when)
    assert proc.poll() is None, "the run ended before the Ctrl-C meant to land in it"
    proc.send_signal(signal.SIGINT)
    stderr = "".join(early) + proc.communicate(timeout=60)[1]
    lines = [line for line in _error_lines(stderr) if not line.startswith("import time:")]
    assert proc.returncode == 130, (proc.returncode, stderr)
    assert len(lines) == 1 and "interrupted" in lines[0], lines
    assert "Aborted" not in stderr and "Traceback" not in stderr
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def _full_pipe():
    """A pipe whose buffer is full: a process writing to it blocks."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    return read_end, write_end


def test_ctrl_c_after_the_outputs_are_written(small_config, tmp_path):
    """Ctrl-C once OUTDIR is in place: one line and 130 (it died by SIGINT without a word).
    The process is held there deterministically: its stdout is a full pipe, so printing the
    summary line blocks."""
    out = tmp_path / "out"
    read_end, write_end = _full_pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "ringbg", "run", str(small_config),
                                 "-o", str(out)], stdout=write_end, stderr=subprocess.PIPE,
                                text=True)
        os.close(write_end)
        t0 = time.monotonic()
        while not (out / "summary.json").exists() and time.monotonic() - t0 < 60:
            time.sleep(0.001)
        time.sleep(0.2)
        assert proc.poll() is None  # blocked on its summary line
        proc.send_signal(signal.SIGINT)
        stderr = proc.communicate(timeout=60)[1]
    finally:
        os.close(read_end)
    assert proc.returncode == 130, (proc.returncode, stderr)
    lines = _error_lines(stderr)
    assert len(lines) == 1 and "interrupted" in lines[0] and "are complete" in lines[0], lines
    assert json.loads((out / "summary.json").read_text())["n_obs"] == 2


def test_ctrl_c_while_exiting_never_kills_by_sigint(small_config, tmp_path):
    """Ctrl-C in the last milliseconds (Python's teardown after the outputs and the summary
    line): finished (0) or one line and 130, never death by SIGINT (-2) without a word."""
    for attempt, delay_s in enumerate((0.0, 0.002, 0.005)):
        out = tmp_path / f"out{attempt}"
        proc = subprocess.Popen([sys.executable, "-m", "ringbg", "run", str(small_config),
                                 "-o", str(out)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        while not (out / "summary.json").exists() and time.monotonic() - t0 < 60:
            time.sleep(0.0005)
        time.sleep(delay_s)
        proc.send_signal(signal.SIGINT)
        stderr = proc.communicate(timeout=60)[1]
        assert proc.returncode in (0, 130), (proc.returncode, stderr)
        assert len(_error_lines(stderr)) == (proc.returncode == 130), stderr
        assert json.loads((out / "summary.json").read_text())["n_obs"] == 2


def test_os_error_outside_run_is_one_line(tmp_path):
    """``ringbg simulate`` into a folder it cannot create: the environment, not a bug."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, ["simulate", str(blocker / "store"), "--n-obs", "1"])
    assert result.exit_code == 1, result.output
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("ringbg: error:") and "file" in lines[0]


# --------------------------------------------------------------------------------------------
# issue 15: --set, --no-figures, info, relative paths, the progress display, -v


def _fits_energy_bins(path):
    """Bins of the true-energy axis of the exposure (geom.energy when energy_true is null)."""
    from astropy.io import fits

    with fits.open(path) as hdus:
        return len(hdus["EXPOSURE_BANDS"].data)


def test_set_overrides_keys_before_validation(tmp_path, data_dir):
    cfg = _small(tmp_path)
    cfg["output"]["figures"] = True
    path = _write(tmp_path, cfg)
    out = tmp_path / "res"
    result = CliRunner().invoke(main, [
        "run", str(path), "-o", str(out), "-q", "--no-figures",
        "--set", "excess.correlation_radius=0.1deg", "--set", "geom.energy.nbins=5",
        "--set", "observations.obs_ids=[20137]", "--set", "exclusion.auto.threshold=6"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["obs_ids"] == [20137]
    assert summary["correlation_radius_deg"] == pytest.approx(0.1)
    assert _fits_energy_bins(out / "stacked_onoff.fits") == 5
    # exclusion.auto was null: --set made the section
    assert summary["auto_exclusion_iterations"] >= 1
    # --no-figures beats output.figures: true
    assert not list(out.glob("*.png")) and not (out / "report.html").exists()
    assert yaml.safe_load(path.read_text())["geom"]["energy"]["nbins"] == 10  # file untouched


def test_without_no_figures_the_config_decides(tmp_path, data_dir):
    cfg = _small(tmp_path)
    cfg["observations"] = {"obs_ids": [20136]}
    path = _write(tmp_path, cfg)
    out = tmp_path / "res"
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(out), "-q",
                                       "--set", "output.figures=true"])
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file() and list(out.glob("*.png"))


def test_renderer_started_early_is_stopped_when_the_config_has_no_figures(tmp_path,
                                                                         monkeypatch):
    """``ringbg run`` starts the figure renderer before it reads the config (it warms up
    meanwhile); a config without figures stops it at once, and one with figures has it
    draw the coordinate frames of its geometry ahead of the maps."""
    import multiprocessing

    import ringbg.figures as figures

    figures.stop_renderer()
    started, prepared = [], []
    real_start = figures.start_renderer

    def start(*args, **kwargs):
        renderer = real_start(*args, **kwargs)
        started.append(renderer)
        if renderer is not None:
            real_prepare = renderer.prepare
            monkeypatch.setattr(renderer, "prepare", lambda *a: (prepared.append(a),
                                                                 real_prepare(*a)))
        return renderer

    monkeypatch.setattr(figures, "start_renderer", start)
    path = _write(tmp_path, _small(tmp_path))  # output.figures: false
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(tmp_path / "a"), "-q"])
    assert result.exit_code == 0, result.output
    if started[0] is None:
        pytest.skip("no figure renderer here (not Linux, or one CPU)")
    assert figures._renderer is None and not started[0]._process.is_alive()
    assert not [c for c in multiprocessing.active_children() if c.name == "ringbg-figures"]
    assert prepared == [] and not list((tmp_path / "a").glob("*.png"))
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(tmp_path / "b"), "-q",
                                       "--set", "output.figures=true"])
    assert result.exit_code == 0, result.output
    (wcs, shape, panels), = prepared
    assert shape == (150, 150) and panels == (None, figures.ring_panel_deg(0.8))
    assert (tmp_path / "b" / "significance.png").is_file()
    figures.stop_renderer()


def test_figures_go_to_the_renderer_before_the_root_searches(tmp_path, monkeypatch):
    """With the figure renderer running, ``ringbg run`` hands it the stack's figures as
    soon as the stack is final (pipeline.run's on_stack), then the others as soon as the
    maps without root searches are made (on_maps); they are the figures that the final
    result draws, byte for byte, for every correlation radius, and the report shows them
    in the usual order."""
    import ringbg.excess
    import ringbg.figures as figures
    from ringbg.pipeline import run

    renderer = figures.start_renderer()
    if renderer is None:
        pytest.skip("no figure renderer here (not Linux, or one CPU)")
    submitted_before_searches = []
    real = ringbg.excess._searched_maps

    def searched(*args, **kwargs):
        if kwargs["errors"]:  # (the off significance's call has no searches)
            submitted_before_searches.append(renderer._jobs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ringbg.excess, "_searched_maps", searched)
    jobs_before = renderer._jobs
    cfg = _small(tmp_path)
    cfg["excess"] = {"correlation_radius": ["0.1 deg", "0.2 deg"]}
    path = _write(tmp_path, cfg)
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(out), "-q",
                                       "--set", "output.figures=true"])
    assert result.exit_code == 0, result.output
    # two jobs (the stack's figures, then the others), both before the first root search
    assert submitted_before_searches[0] == jobs_before + 2 == renderer._jobs
    monkeypatch.undo()
    later = run(path).write(tmp_path / "later", figures=True)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "significance_0.2deg.png" in pngs and "significance_distribution.png" in pngs
    assert pngs == sorted(p.name for p in later.glob("*.png"))
    for name in pngs:
        assert (out / name).read_bytes() == (later / name).read_bytes(), name
    shown = re.findall(r'<figure id="fig-([^"]+)"', (out / "report.html").read_text())
    assert shown == re.findall(r'<figure id="fig-([^"]+)"',
                               (later / "report.html").read_text())
    assert shown[:3] == ["significance", "excess", "significance_distribution"]
    figures.stop_renderer()


@pytest.mark.parametrize("setting, named", [
    ("excess.corelation_radius=0.1deg", "excess.corelation_radius"),
    ("geom.energy.nbins=abc", "geom.energy.nbins"),
    ("excess.correlation_radius=0.1 TeV", "excess.correlation_radius"),
    ("datastore.folder=x", "datastore"),
    ("exclusion.regions.3.radius=0.2deg", "exclusion.regions"),
    ("exclusion.regions.first.radius=0.2deg", "exclusion.regions"),
    ("observations.obs_ids=[20136,", "observations.obs_ids"),
])
def test_set_bad_key_or_value_is_one_line_naming_the_key(setting, named, tmp_path, data_dir):
    path = _write(tmp_path, _small(tmp_path))
    result = CliRunner().invoke(main, ["run", str(path), "-q", "--set", setting])
    assert result.exit_code == 1, result.output
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("ringbg: error:"), lines
    assert named in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setting", ["nbins", "=5", "geom..nbins=5", "geom.energy.=5"])
def test_set_without_key_value_is_a_usage_error(setting, tmp_path, data_dir):
    path = _write(tmp_path, _small(tmp_path))
    result = CliRunner().invoke(main, ["run", str(path), "--set", setting])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output


def test_set_keys_values_are_yaml_and_lists_take_indexes():
    from ringbg.cli import set_keys

    data = {"geom": {"energy": {"nbins": 10}}, "exclusion": {"regions": [{"radius": 1}]},
            "ring": {"adaptive": None}}
    set_keys(data, [("geom.energy.nbins", "5"), ("exclusion.regions.0.radius", "0.2 deg"),
                    ("ring.adaptive.theta", "0.3deg"), ("observations.obs_ids", "[1, 2]"),
                    ("observations.cone", "null"), ("geom.energy.nbins", "7")])
    assert data["geom"]["energy"]["nbins"] == 7  # the last one wins
    assert data["exclusion"]["regions"] == [{"radius": "0.2 deg"}]
    assert data["ring"]["adaptive"] == {"theta": "0.3deg"}
    assert data["observations"] == {"obs_ids": [1, 2], "cone": None}


def test_relative_paths_in_a_config_file_are_taken_from_its_folder(tmp_path, data_dir,
                                                                  monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "stores").symlink_to(data_dir / "hess-dl3-dr1")
    (folder / "mask.reg").write_text('icrs\ncircle(228.0, -59.0, 0.1)\n')
    cfg = _small(tmp_path)
    cfg["datastore"] = "stores"
    cfg["exclusion"]["files"] = ["mask.reg"]
    cfg["output"]["dir"] = "results"
    path = _write(folder, cfg)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(main, ["run", str(path), "-q"])
    assert result.exit_code == 0, result.output
    assert (folder / "results" / "summary.json").is_file()
    assert not (elsewhere / "results").exists()
    # -o and --set paths: from the current folder
    result = CliRunner().invoke(main, ["run", str(path), "-q", "--set", "output.dir=here"])
    assert result.exit_code == 0, result.output
    assert (elsewhere / "here" / "summary.json").is_file()


def test_missing_config_file_names_the_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["run", "nope.yaml"])
    assert result.exit_code == 1
    assert str(tmp_path / "nope.yaml") in result.output and "does not exist" in result.output


def test_gammapy_data_unset_is_said_plainly(tmp_path, data_dir, monkeypatch):
    cfg = _small(tmp_path)
    cfg["datastore"] = "$GAMMAPY_DATA/hess-dl3-dr1"
    path = _write(tmp_path, cfg)
    monkeypatch.delenv("GAMMAPY_DATA")
    result = CliRunner().invoke(main, ["run", str(path), "-q"])
    assert result.exit_code == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and "GAMMAPY_DATA is not set" in lines[0], lines
    assert "datastore" in lines[0]


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("datastore: x\ngeom:\n  skydir: {lon: 1, lat: 2\n  width: 3\n")
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and str(path) in lines[0], lines
    assert re.search(r"line 4, column \d+", lines[0]) and "line 3" in lines[0]


def _obs_index(data_dir, name="hess-dl3-dr1"):
    from astropy.table import Table

    return Table.read(data_dir / name / "obs-index.fits.gz")


def _info(*args):
    result = CliRunner().invoke(main, ["info", *[str(a) for a in args]])
    return result, result.stdout.splitlines()


def _table_ids(lines):
    """The OBS_IDs of the observation table of ``ringbg info`` (before the totals)."""
    rows = lines[1:lines.index("")] if "" in lines else lines[1:]
    return {int(line.split()[0]) for line in rows}


def test_info_prints_text_not_bytes(data_dir):
    result, lines = _info(data_dir / "hess-dl3-dr1")
    assert result.exit_code == 0
    assert "b'" not in result.output and 'b"' not in result.output
    assert any(line.split()[:2] == ["20136", "MSH15-52"] for line in lines)


def test_info_object_filter_and_totals_per_object(data_dir):
    t = _obs_index(data_dir)
    objects = [str(o).strip() for o in t["OBJECT"]]
    result, lines = _info(data_dir / "hess-dl3-dr1", "--object", "crab NEBULA")
    assert result.exit_code == 0, result.output
    ids = _table_ids(lines)
    assert ids == {int(i) for i, o in zip(t["OBS_ID"], objects) if o == "Crab Nebula"}
    live_h = sum(float(x) for x, o in zip(t["LIVETIME"], objects) if o == "Crab Nebula") / 3600
    total = next(line for line in lines if line.startswith("Crab Nebula ") and
                 len(line.split()) == 4)
    assert int(total.split()[2]) == len(ids)
    assert float(total.split()[3]) == pytest.approx(live_h, abs=0.005)
    assert lines[-1].startswith(f"{len(ids)} observations, live time {live_h:.2f} h")


def test_info_totals_of_every_object(data_dir):
    t = _obs_index(data_dir)
    objects = [str(o).strip() for o in t["OBJECT"]]
    result, lines = _info(data_dir / "hess-dl3-dr1")
    start = lines.index("") + 2
    totals = lines[start:-1]
    assert len(totals) == len(set(objects))
    runs = {o: objects.count(o) for o in objects}
    for line in totals:
        *name, n, hours = line.split()
        assert runs[" ".join(name)] == int(n)
    assert lines[-1].startswith(f"{len(t)} observations, live time "
                                f"{float(np.sum(t['LIVETIME'])) / 3600:.2f} h")


def test_info_cone_filter_in_icrs_and_galactic(data_dir):
    from astropy.coordinates import SkyCoord

    t = _obs_index(data_dir)
    centre = SkyCoord(228.32, -59.08, unit="deg")
    pointings = SkyCoord(t["RA_PNT"], t["DEC_PNT"], unit="deg")
    want = {int(i) for i in t["OBS_ID"][pointings.separation(centre).deg < 1.0]}

    ids = _table_ids
    result, lines = _info(data_dir / "hess-dl3-dr1", "--cone", "228.32,-59.08,1")
    assert result.exit_code == 0 and ids(lines) == want and len(want) > 0
    g = centre.galactic
    result, lines = _info(data_dir / "hess-dl3-dr1", "--cone",
                          f"{g.l.deg:.6f},{g.b.deg:.6f},1", "--frame", "galactic")
    assert result.exit_code == 0 and ids(lines) == want
    result, lines = _info(data_dir / "hess-dl3-dr1", "--cone", "0,89,0.1")
    assert result.exit_code == 0 and lines[-1].startswith("no observation")
    result, _ = _info(data_dir / "hess-dl3-dr1", "--cone", "228,-59")
    assert result.exit_code == 2


def test_info_without_livetime_column(data_dir):
    result, lines = _info(data_dir / "magic-rad-max")
    assert result.exit_code == 0
    assert "nan" not in result.output
    assert lines[-1].startswith("2 observations, live time unknown")


def test_info_on_a_folder_above_stores_says_where_they_are(tmp_path, data_dir):
    top = tmp_path / "top"
    (top / "a").mkdir(parents=True)
    (top / "b").mkdir(parents=True)
    (top / "a" / "hess").symlink_to(data_dir / "hess-dl3-dr1")
    (top / "b" / "cta").symlink_to(data_dir / "cta-1dc")  # its index is 4 levels below top
    deep = top / "d1" / "d2" / "d3" / "d4" / "d5"
    deep.mkdir(parents=True)
    (deep / "magic").symlink_to(data_dir / "magic-rad-max")  # beyond the bounded search
    result = CliRunner().invoke(main, ["info", str(top)])
    assert result.exit_code == 1
    lines = _error_lines(result.stderr)
    assert lines[0].startswith("ringbg: error:") and "obs-index" in lines[0]
    assert lines[1:] == [f"  {top / 'a' / 'hess'}", f"  {top / 'b/cta/index/gps'}"]


def test_find_datastores_is_bounded(tmp_path):
    from ringbg.cli import find_datastores

    for k in range(30):
        (tmp_path / f"s{k:02d}").mkdir()
        (tmp_path / f"s{k:02d}" / "obs-index.fits.gz").write_bytes(b"")
    (tmp_path / "loop").symlink_to(tmp_path)  # followed once, not forever
    stores, stopped = find_datastores(tmp_path, max_found=5)
    assert stopped and stores == [tmp_path / f"s{k:02d}" for k in range(5)]
    stores, stopped = find_datastores(tmp_path)
    assert not stopped or len(stores) == 20
    stores, stopped = find_datastores(tmp_path, max_folders=3)
    assert stopped and len(stores) <= 3


def _run_on_a_terminal(args, columns=100):
    """Run ringbg with stderr on a pseudo-terminal; (stdout, what the terminal showed)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "ringbg", *[str(a) for a in args]],
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    stdout = proc.stdout.read().decode()
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0, b"".join(chunks).decode(errors="replace")
    return stdout, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


STAGES = ["automatic exclusion: pass 2", "correlated maps", "writing the FITS files",
          "figures", "report"]


def test_progress_covers_the_whole_run_on_a_terminal(tmp_path, data_dir):
    cfg = _small(tmp_path)
    cfg["exclusion"]["auto"] = {"threshold": 3.0, "iterations": 2}
    cfg["output"]["figures"] = True
    path = _write(tmp_path, cfg)
    stdout, terminal = _run_on_a_terminal(["run", path, "-o", tmp_path / "res"])
    assert "ringbg: outputs in" in stdout
    assert "observations: 100%" in terminal  # the bar
    stage_lines = re.findall(r"^ringbg: \[ *[0-9.]+ s\] (.*)$", terminal, re.M)
    found = [next(k for k, line in enumerate(stage_lines) if line.startswith(s))
             for s in STAGES]
    assert found == sorted(found), stage_lines


def test_no_stage_lines_off_a_terminal(tmp_path, data_dir):
    cfg = _small(tmp_path)
    cfg["output"]["figures"] = True
    proc = subprocess.run([sys.executable, "-m", "ringbg", "run", str(_write(tmp_path, cfg)),
                           "-o", str(tmp_path / "res")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ringbg: [" not in proc.stderr and "observations:" not in proc.stderr


def test_stage_hooks_of_run_and_write_outputs(tmp_path, data_dir):
    """The API: an object with ``stage(name)`` is told of each stage, in order."""
    from ringbg.outputs import write_outputs
    from ringbg.pipeline import run

    class Recorder:
        def __init__(self):
            self.names = []

        def stage(self, name):
            self.names.append(name)

    cfg = _small(tmp_path)
    cfg["exclusion"]["auto"] = {"threshold": 3.0, "iterations": 3}
    cfg["output"]["figures"] = True
    recorder = Recorder()
    result = run(cfg, progress=recorder)
    write_outputs(result, tmp_path / "res", progress=recorder)
    passes = result.summary["auto_exclusion_iterations"]
    auto = [n for n in recorder.names if n.startswith("automatic exclusion")]
    assert len(auto) >= 1 and len(auto) in (passes, passes - 1)
    assert auto[0].startswith("automatic exclusion: pass 2")
    assert recorder.names[len(auto):] == ["correlated maps", "writing the FITS files",
                                          "figures", "report"]


def test_verbose_shows_ringbg_debug_lines_not_other_libraries(tmp_path, data_dir):
    cfg = _small(tmp_path)
    cfg["output"]["figures"] = True
    proc = subprocess.run([sys.executable, "-m", "ringbg", "run", str(_write(tmp_path, cfg)),
                           "-o", str(tmp_path / "res"), "-vv"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = _error_lines(proc.stderr)
    assert "ringbg: DEBUG: stage: figures" in lines
    assert "findfont" not in proc.stderr and "matplotlib" not in proc.stderr.lower(), lines[:5]
    assert "ringbg: INFO: observation 20136: background template irf" in lines


def test_ctrl_c_turned_into_another_error_by_a_library_is_an_interrupt(sigint_default):
    """A library that catches the KeyboardInterrupt of a Ctrl-C and raises its own error
    (pydantic builds its validators so: a SchemaError) still ends ringbg with one line and
    130, not as an internal error."""
    from click.testing import CliRunner

    from ringbg.cli import _Group

    group = _Group()

    @group.command()
    def swallowed():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            raise RuntimeError("Error building validator") from None

    @group.command()
    def bug():
        raise RuntimeError("a ringbg bug")

    result = CliRunner().invoke(group, ["swallowed"])
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and "internal error" not in result.output
    # the next command's own errors are internal errors again
    result = CliRunner().invoke(group, ["bug"])
    assert result.exit_code == 3 and "internal error" in result.output
