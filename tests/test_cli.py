"""The command line as a user meets it: exit codes, one-line errors, outputs."""

import json
import subprocess
import sys

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
