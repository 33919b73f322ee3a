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


@pytest.mark.parametrize("when", ["importing click", 0.2, 0.4, 0.7])
def test_ctrl_c_while_starting_one_line_130(when, small_config, tmp_path):
    """Ctrl-C during the imports of the first second: not click's 'Aborted!' with status 1,
    not a traceback, but one line and 130. 'importing click': as soon as the child reports
    (``-X importtime``) that it imported part of click, i.e. before the CLI runs."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ringbg", "run", str(small_config), "-o", str(out)]
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
