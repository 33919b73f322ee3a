"""Output files: gammapy reads stacked_onoff.fits, maps.fits has named WCS images, atomicity,
and the safety of the output folder (what may be written or replaced)."""

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from conftest import msh_config

import ringbg.outdir as outdir_mod
from ringbg import __version__, run
from ringbg.errors import OutputError
from ringbg.outdir import MARKER, check_outdir, read_marker, rename_noreplace

MAP_HDUS = ["SIGNIFICANCE", "EXCESS", "BACKGROUND", "COUNTS", "ALPHA", "FLUX", "FLUX_ERR",
            "FLUX_UL", "EXPOSURE", "EXCLUSION"]


@pytest.fixture(scope="module")
def written(tmp_path_factory, msh_result):
    out = tmp_path_factory.mktemp("w") / "out"
    msh_result.write(out, figures=True)
    return out


def test_files_of_the_contract(written):
    names = {p.name for p in written.iterdir()}
    assert {"stacked_onoff.fits", "maps.fits", "exclusion_mask.fits", "summary.json",
            "significance.png", "excess.png", "significance_distribution.png",
            "report.html"} <= names


def test_gammapy_reads_stacked_onoff(written, msh_result):
    from gammapy.datasets import MapDatasetOnOff
    from gammapy.estimators import ExcessMapEstimator

    ds = MapDatasetOnOff.read(written / "stacked_onoff.fits")
    assert ds.counts.data.sum() == 41803
    assert ds.counts_off.data.sum() == pytest.approx(87621192, rel=1e-6)
    np.testing.assert_allclose(ds.gti.time_sum.to_value("s"),
                               np.sum(np.diff(msh_result.stack.gti_tt_s, axis=1)), rtol=1e-12)
    assert ds.gti.time_start[0].scale == "tt"
    assert ds.acceptance_off.data.sum() == pytest.approx(96374323, rel=1e-5)
    assert ds.exposure.geom.axes["energy_true"].nbin == 10
    est = ExcessMapEstimator("0.04 deg", correlate_off=False, selection_optional=[])
    sig = est.run(ds)["sqrt_ts"].data[0]
    ours = msh_result.maps["SIGNIFICANCE"]
    assert np.nanmax(np.abs(sig - ours)) < 1e-3


def test_maps_fits_named_hdus_with_wcs(written, msh_result):
    with fits.open(written / "maps.fits") as hdul:
        for name in MAP_HDUS:
            hdu = hdul[name]
            assert hdu.data.shape == (150, 150)
            wcs = WCS(hdu.header)
            assert wcs.has_celestial and wcs.wcs.ctype[0] == "RA---CAR"
        assert hdul["FLUX"].header["BUNIT"] == "cm-2 s-1"
        np.testing.assert_allclose(hdul["SIGNIFICANCE"].data,
                                   msh_result.maps["SIGNIFICANCE"].astype(np.float32))
        sky = WCS(hdul["SIGNIFICANCE"].header).pixel_to_world(72, 72)
    m = json.loads((written / "summary.json").read_text())["max_significance"]
    assert sky.ra.deg == pytest.approx(m["lon"]) and sky.dec.deg == pytest.approx(m["lat"])


def test_summary_is_strict_json_with_contract_keys(written):
    text = (written / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    s = json.loads(text)
    for key in ("obs_ids", "n_obs", "totals", "max_significance", "off_distribution",
                "timings", "versions"):
        assert key in s
    assert {"mean", "sigma", "mean_err", "sigma_err", "n_pixels"} <= set(s["off_distribution"])
    assert s["inputs"] and all(len(i["sha256"]) == 64 for i in s["inputs"])


def test_failed_write_leaves_previous_outdir(tmp_path, msh_result, monkeypatch):
    out = tmp_path / "out"
    msh_result.write(out, figures=False)
    before = (out / "maps.fits").read_bytes()
    import ringbg.outputs as outputs

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(outputs, "write_maps", boom)
    with pytest.raises(RuntimeError):
        msh_result.write(out, overwrite=True, figures=False)
    assert (out / "maps.fits").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failed_write_stops_the_figures_drawn_meanwhile(tmp_path, msh_result, monkeypatch):
    """The figures are drawn by the renderer while the FITS files are written: when the
    writing fails, the renderer is stopped at once and nothing appears in the parent folder
    afterwards (the temporary folder is removed, and stays removed)."""
    import time

    import ringbg.figures as figures
    import ringbg.outputs as outputs

    if figures.start_renderer() is None:
        pytest.skip("no figure renderer here (not Linux, or one CPU)")
    submitted = []
    original = figures.start_render

    def start_render(tasks, workers=None):
        pending = original(tasks, workers)
        submitted.append(pending.renderer is not None)
        return pending

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(figures, "start_render", start_render)
    monkeypatch.setattr(outputs, "write_onoff", boom)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        msh_result.write(out, figures=True)
    assert submitted == [True]  # the figures were on their way in the renderer
    assert figures._renderer is None  # stopped
    time.sleep(1.0)
    assert list(tmp_path.iterdir()) == []
    # the next run starts a renderer again and writes every figure
    monkeypatch.undo()
    msh_result.write(out, figures=True)
    assert (out / "significance.png").exists() and (out / "report.html").exists()


def test_per_observation_files(tmp_path):
    from gammapy.datasets import MapDatasetOnOff

    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136]}
    cfg["output"]["per_observation"] = True
    result = run(cfg)
    out = result.write(tmp_path / "o", figures=False)
    ds = MapDatasetOnOff.read(out / "observations" / "20136_onoff.fits")
    assert ds.counts.data.sum() == 2558
    assert ds.counts_off.data.sum() == pytest.approx(5444473)
    # the run's own GTI (DR1 runs are one interval of about 28 min)
    assert len(ds.gti.table) == 1 and 1500 < ds.gti.time_sum.to_value("s") < 1800


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path, msh_result):
    import socket
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()  # a pid that no longer runs
    stale = tmp_path / f".out.tmp-{proc.pid}"
    stale.mkdir()
    (stale / ".ringbg-output").write_text('{"ringbg": "0.1.0"}')  # ringbg writes it first
    (stale / "maps.fits").write_text("half written")
    alive = tmp_path / f".out.tmp-{1}"  # pid 1 is alive: another run's folder is kept
    alive.mkdir()
    here = tmp_path / f".out.tmp-{proc.pid}@{socket.gethostname()}"  # this host, pid gone
    here.mkdir()
    # another host's run on a shared filesystem: its pid means nothing here, kept
    elsewhere = tmp_path / f".out.tmp-{proc.pid}@other-host.example.org"
    elsewhere.mkdir()
    msh_result.write(tmp_path / "out", figures=False)
    assert not stale.exists() and not here.exists()
    assert alive.exists() and elsewhere.exists()
    assert (tmp_path / "out" / "maps.fits").stat().st_size > 1000


def test_killed_between_renames_previous_results_come_back(tmp_path, msh_result):
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    out = tmp_path / "out"
    msh_result.write(out, figures=False)
    before = (out / "maps.fits").read_bytes()
    # the state a kill between 'OUTDIR -> .old' and '.tmp -> OUTDIR' leaves
    os_old = tmp_path / f".out.old-{proc.pid}"
    out.rename(os_old)
    from ringbg.outputs import remove_stale_temporaries

    remove_stale_temporaries(out)
    assert (out / "maps.fits").read_bytes() == before and not os_old.exists()


def test_stacked_onoff_exposure_on_the_true_energy_axis(tmp_path):
    """With geom.energy_true the EXPOSURE has ENERGY_TRUE bands of that axis (the images keep
    the reconstructed range) and gammapy reads the file."""
    from gammapy.datasets import MapDatasetOnOff

    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137]}
    cfg["geom"]["energy_true"] = {"min": "0.3 TeV", "max": "30 TeV", "nbins": 14}
    result = run(cfg)
    out = result.write(tmp_path / "o", figures=False)
    with fits.open(out / "stacked_onoff.fits") as hdul:
        bands = hdul["EXPOSURE_BANDS"].data
        np.testing.assert_allclose(bands["ENERGY_TRUE_MIN"][0], 0.3, rtol=1e-12)
        np.testing.assert_allclose(bands["ENERGY_TRUE_MAX"][-1], 30.0, rtol=1e-12)
        assert hdul["EXPOSURE"].data.shape == (14, 150, 150)
        assert hdul["COUNTS_BANDS"].data["E_MAX"][0] == pytest.approx(10.0)
    ds = MapDatasetOnOff.read(out / "stacked_onoff.fits")
    axis = ds.exposure.geom.axes["energy_true"]
    assert axis.nbin == 14 and axis.edges[-1].to_value("TeV") == pytest.approx(30.0)
    np.testing.assert_allclose(ds.exposure.data, result.stack.exposure, rtol=1e-6)


def test_gammapy_flux_of_stacked_onoff_without_edisp(tmp_path):
    """The file has no EDISP: gammapy's flux from it is ringbg's with excess.edisp false."""
    from gammapy.datasets import MapDatasetOnOff
    from gammapy.estimators import ExcessMapEstimator
    from gammapy.modeling.models import PowerLawSpectralModel

    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137]}
    cfg["excess"]["edisp"] = False
    result = run(cfg)
    out = result.write(tmp_path / "o", figures=False)
    ds = MapDatasetOnOff.read(out / "stacked_onoff.fits")
    estimator = ExcessMapEstimator("0.04 deg", correlate_off=False, selection_optional=[],
                                   spectral_model=PowerLawSpectralModel(
                                       index=result.config.excess.spectral_index))
    flux = estimator.run(ds)["flux"].data[0]
    ours, err = result.maps["FLUX"], result.maps["FLUX_ERR"]
    f = np.isfinite(flux)
    assert f.any() and np.array_equal(f, np.isfinite(ours))
    assert np.max(np.abs(flux[f] - ours[f]) / err[f]) < 1e-3


# --------------------------------------------------------------------------------------------
# output safety: what --overwrite may replace, symlinks, mounts, full disks, races
# (issue 16). Each refusal is an OutputError with one line, and leaves everything as it was.


def _tree(folder):
    """Every path below ``folder`` with its bytes (files) or None (folders, links)."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        out[rel] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return out


def _refused(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


@contextlib.contextmanager
def _tmpfs(path, size="1m", readonly=False):
    """A tmpfs mounted at ``path`` (True), or False where this process cannot mount."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = False
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount"):
        options = f"size={size}" + (",ro" if readonly else "")
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                 capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_outputs_carry_a_marker_listing_every_file(tmp_path, msh_result):
    out = msh_result.write(tmp_path / "out", figures=False)
    marker = json.loads((out / MARKER).read_text())
    assert marker["ringbg"] == __version__
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.name != MARKER)
    assert sorted(marker["files"]) == on_disk
    assert json.loads((out / "summary.json").read_text())["ringbg"] == __version__


def test_overwrite_refuses_a_folder_ringbg_did_not_write(tmp_path, msh_result):
    """The issue's data loss: --overwrite pointed at a folder of the user's own."""
    mine = tmp_path / "thesis"
    (mine / "chapter1").mkdir(parents=True)
    (mine / "chapter1" / "text.tex").write_text("years of work")
    (mine / "summary.json").write_text('{"n_obs": 3}')  # looks a bit like an output
    before = _tree(mine)
    with pytest.raises(OutputError) as info:
        msh_result.write(mine, overwrite=True, figures=False)
    _refused(info, "thesis", "not written by ringbg", MARKER)
    assert _tree(mine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]


def test_overwrite_refuses_an_output_with_files_added(tmp_path, msh_result):
    out = msh_result.write(tmp_path / "out", figures=False)
    (out / "notes.txt").write_text("the source is real")
    before = _tree(out)
    with pytest.raises(OutputError) as info:
        msh_result.write(out, overwrite=True, figures=False)
    _refused(info, "notes.txt", "did not write")
    assert _tree(out) == before
    # a file the desktop adds when the folder is looked at is no reason to refuse
    (out / "notes.txt").unlink()
    (out / ".DS_Store").write_bytes(b"\0")
    msh_result.write(out, overwrite=True, figures=False)
    assert not (out / ".DS_Store").exists()


def test_forged_or_broken_markers_are_not_trusted(tmp_path, msh_result):
    out = msh_result.write(tmp_path / "out", figures=False)
    for text in ("", "not json", '{"files": []}', '["ringbg"]', '{"ringbg": "0.1.0"}'):
        (out / MARKER).write_text(text)
        before = _tree(out)
        with pytest.raises(OutputError):
            msh_result.write(out, overwrite=True, figures=False)
        assert _tree(out) == before
    (out / MARKER).unlink()
    (out / MARKER).symlink_to(tmp_path / "elsewhere.json")  # a marker must be a plain file
    with pytest.raises(OutputError):
        msh_result.write(out, overwrite=True, figures=False)


@pytest.mark.parametrize("where", ["cwd", "cwd-parent", "home", "home-parent"])
def test_never_the_current_or_home_folder(where, tmp_path, msh_result, monkeypatch):
    """Even a folder that is a valid ringbg output is refused when it is (or holds) the
    current folder or the home folder."""
    out = msh_result.write(tmp_path / "out", figures=False)
    inner = out / "inner"
    inner.mkdir()
    outdir_mod.finish_temporary(out)  # 'inner/' is listed: out is a valid output
    assert outdir_mod.is_ringbg_output(out)
    if where.startswith("cwd"):
        monkeypatch.chdir(out if where == "cwd" else inner)
        target = "."
    else:
        monkeypatch.setenv("HOME", str(out if where == "home" else inner))
        target = str(out)
    before = _tree(out)
    with pytest.raises(OutputError) as info:
        msh_result.write(target, overwrite=True, figures=False)
    _refused(info, "current folder" if where.startswith("cwd") else "home folder")
    assert _tree(out) == before


def test_never_the_root_folder():
    with pytest.raises(OutputError) as info:
        check_outdir("/", overwrite=True)
    _refused(info, "root folder")
    with pytest.raises(OutputError):
        check_outdir("/tmp/..", overwrite=True)


def test_refuses_folders_holding_or_inside_the_inputs(tmp_path, data_dir):
    """The issue's case: a folder holding the data store and the config, with --overwrite."""
    project = tmp_path / "project"
    store = project / "store"
    shutil.copytree(data_dir / "hess-dl3-dr1", store, ignore=shutil.ignore_patterns("data"))
    config_file = project / "c.yaml"
    config_file.write_text("datastore: store\n")
    outdir_mod.finish_temporary(project)  # even a marker planted in it does not help
    before = _tree(project)
    cases = [
        (project, {}, "holds the data store"),
        (store / "results", {}, "inside the data store"),
        (store, {}, "inside the data store"),
    ]
    for target, _, words in cases:
        with pytest.raises(OutputError) as info:
            check_outdir(target, overwrite=True, datastore=store)
        _refused(info, words)
    other = tmp_path / "other"
    other.mkdir()
    (other / "c.yaml").write_text("x")
    (other / "mask.fits").write_text("x")
    outdir_mod.finish_temporary(other)
    for what, path in [("config file", other / "c.yaml"), ("exclusion file", other / "mask.fits"),
                       ("cache folder", other)]:
        with pytest.raises(OutputError) as info:
            check_outdir(other, overwrite=True, datastore=store, protected=[(what, path)])
        _refused(info, f"holds the {what}")
    assert _tree(project) == before


def test_exclusion_file_inside_outdir_is_protected(tmp_path):
    """A run that reads its exclusion mask from the previous results must not replace
    them: the mask would be lost."""
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136]}
    out = run(cfg).write(tmp_path / "out", figures=False)
    cfg["exclusion"] = {"files": [str(out / "exclusion_mask.fits")]}
    result = run(cfg)
    before = _tree(out)
    with pytest.raises(OutputError) as info:
        result.write(out, overwrite=True, figures=False)
    _refused(info, "exclusion file")
    assert _tree(out) == before


def test_a_mount_point_is_never_replaced(tmp_path, msh_result, monkeypatch):
    mnt = tmp_path / "mnt"
    with _tmpfs(mnt, size="20m") as mounted:
        if not mounted:  # cannot mount here: the same check on a folder said to be one
            mnt.mkdir(exist_ok=True)
            real_ismount = os.path.ismount
            monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == mnt or real_ismount(p))
        shutil.copytree(msh_result.write(tmp_path / "first", figures=False), mnt,
                        dirs_exist_ok=True)
        before = _tree(mnt)
        for overwrite in (False, True):
            with pytest.raises(OutputError) as info:
                msh_result.write(mnt, overwrite=overwrite, figures=False)
            _refused(info, "mount point", "inside it")
        assert _tree(mnt) == before
        # a folder inside the mount is fine
        inside = msh_result.write(mnt / "results", figures=False)
        assert (inside / "maps.fits").is_file()


def _other_filesystem(tmp_path):
    """A folder on another filesystem than tmp_path, where there is one (/dev/shm)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        folder = shm / f"ringbg-test-{uuid.uuid4().hex}"
        folder.mkdir()
        return folder
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def test_symlinked_outdir_to_another_filesystem(tmp_path, msh_result):
    """The results go where the link points, the link stays, nothing is left beside either."""
    elsewhere = _other_filesystem(tmp_path)
    try:
        link = tmp_path / "results"
        link.symlink_to(elsewhere / "results")
        (elsewhere / "results").mkdir()  # an empty folder: used without --overwrite
        msh_result.write(link, figures=False)
        assert link.is_symlink() and (link / "maps.fits").is_file()
        assert (elsewhere / "results" / "maps.fits").is_file()
        msh_result.write(link, overwrite=True, figures=False)
        assert link.is_symlink() and os.readlink(link) == str(elsewhere / "results")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
        assert sorted(p.name for p in elsewhere.iterdir()) == ["results"]
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)


def test_dangling_symlink_and_symlink_loop_are_refused(tmp_path, msh_result):
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "unmounted" / "results")
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    before = sorted(p.name for p in tmp_path.iterdir())
    for target, words in [(dangling, ("symlink to", "does not exist")),
                          (dangling / "sub", ("symlink to", "does not exist")),
                          (tmp_path / "loop_a", ("symlink loop",)),
                          (tmp_path / "loop_a" / "sub", ("symlink loop",))]:
        for overwrite in (False, True):
            with pytest.raises(OutputError) as info:
                msh_result.write(target, overwrite=overwrite, figures=False)
            _refused(info, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "unmounted").exists()


def test_outdir_that_is_a_file(tmp_path, msh_result):
    path = tmp_path / "out"
    path.write_text("a file")
    for overwrite in (False, True):
        with pytest.raises(OutputError) as info:
            msh_result.write(path, overwrite=overwrite, figures=False)
        _refused(info, "not a folder")
    assert path.read_text() == "a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no stray .old


def test_an_empty_folder_is_used_without_overwrite(tmp_path, msh_result):
    out = tmp_path / "out"
    out.mkdir()
    msh_result.write(out, figures=False)
    assert (out / "maps.fits").is_file() and read_marker(out) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_non_writable_parent_one_line(tmp_path, msh_result):
    ro = tmp_path / "ro"
    with _tmpfs(ro, readonly=True) as mounted:
        if not mounted:
            ro.mkdir(exist_ok=True)
            ro.chmod(0o500)  # not writable (for a user other than root)
        try:
            with pytest.raises(OutputError) as info:
                msh_result.write(ro / "a" / "b" / "results", figures=False)
            _refused(info, "cannot create", str(ro / "a"))
            assert not list(ro.iterdir())
        finally:
            if not mounted:
                ro.chmod(0o755)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("disk", ["simulated", "tmpfs"])
def test_full_disk_one_line_previous_results_kept(disk, tmp_path, msh_result, monkeypatch):
    """ENOSPC while writing: one line, the previous OUTDIR unchanged, no temporary left.
    ``tmpfs``: a real full 2 MB filesystem where this process can mount one (else the
    simulated ENOSPC of a write)."""
    import ringbg.outputs as outputs

    root = tmp_path / "disk"
    with _tmpfs(root, size="2m") as mounted:
        out = root / "out"
        if mounted:  # a first small output fits, the full one does not
            cfg = msh_config(tmp_path)
            cfg["geom"]["width"] = "0.5 deg"
            cfg["ring"] = {"r_in": "0.1 deg", "width": "0.1 deg"}
            cfg["observations"] = {"obs_ids": [20136]}
            cfg["excess"]["correlation_radius"] = "0.04 deg"
            cfg["exclusion"] = {"regions": []}
            run(cfg).write(out, figures=False)
        else:
            msh_result.write(out, figures=False)
        before = _tree(out)
        if not (mounted and disk == "tmpfs"):
            monkeypatch.setattr(outputs, "write_maps", _enospc)
        with pytest.raises(OutputError) as info:
            msh_result.write(out, overwrite=True, figures=False)
        _refused(info, "No space left on device", "left as it was")
        assert _tree(out) == before
        assert sorted(p.name for p in root.iterdir()) == ["out"]


def test_folder_appearing_during_the_run_is_not_replaced(tmp_path, msh_result, monkeypatch):
    """OUTDIR checked at the start, created by someone else while the run writes: the final
    rename does not clobber it, with or without --overwrite."""
    import ringbg.outputs as outputs

    out = tmp_path / "out"
    real = outputs._write_summary

    def meanwhile(result, folder):
        out.mkdir()
        (out / "theirs.txt").write_text("another run or a user")
        return real(result, folder)

    monkeypatch.setattr(outputs, "_write_summary", meanwhile)
    for overwrite in (False, True):
        with pytest.raises(OutputError) as info:
            msh_result.write(out, overwrite=overwrite, figures=False)
        _refused(info, "during the run")
        assert _tree(out) == {"theirs.txt": b"another run or a user"}
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
        shutil.rmtree(out)


def test_empty_folder_filled_during_the_run_is_not_replaced(tmp_path, msh_result, monkeypatch):
    import ringbg.outputs as outputs

    out = tmp_path / "out"
    out.mkdir()
    real = outputs._write_summary

    def meanwhile(result, folder):
        (out / "theirs.txt").write_text("x")
        return real(result, folder)

    monkeypatch.setattr(outputs, "_write_summary", meanwhile)
    with pytest.raises(OutputError):
        msh_result.write(out, figures=False)
    assert _tree(out) == {"theirs.txt": b"x"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_folder_swapped_between_check_and_rename_is_put_back(tmp_path, msh_result, monkeypatch):
    """A ringbg output swapped for a user's folder in the instant between the last check and
    the rename: detected once moved aside, moved back, nothing deleted."""
    out = msh_result.write(tmp_path / "out", figures=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.txt").write_text("precious")
    real = outdir_mod.rename_noreplace
    swapped = []

    def rename(src, dst):
        if Path(src) == out and not swapped:
            out.rename(tmp_path / "out-was")
            mine.rename(out)
            swapped.append(True)
        return real(src, dst)

    monkeypatch.setattr(outdir_mod, "rename_noreplace", rename)
    with pytest.raises(OutputError) as info:
        msh_result.write(out, overwrite=True, figures=False)
    _refused(info, "changed during the run")
    assert _tree(out) == {"data.txt": b"precious"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out-was"]


@pytest.mark.parametrize("native", [True, False])
def test_rename_noreplace_never_replaces(native, tmp_path, monkeypatch):
    if not native:  # the fallback where renameat2 is missing
        monkeypatch.setattr(outdir_mod, "_libc_renameat2", lambda: None)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("new")
    full = tmp_path / "full"
    full.mkdir()
    (full / "b").write_text("old")
    a_file = tmp_path / "file"
    a_file.write_text("old")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    for dst in (full, a_file, link):
        before = _tree(tmp_path)
        with pytest.raises(FileExistsError):
            rename_noreplace(src, dst)
        assert _tree(tmp_path) == before
    rename_noreplace(src, tmp_path / "fresh")
    assert (tmp_path / "fresh" / "a").read_text() == "new" and not src.exists()


def test_ctrl_c_during_the_renames_is_delivered_after_them(tmp_path, sigint_default):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with outdir_mod.deferred_interrupt():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler would have run by now
                pass
            done.append(True)
    assert done == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_stale_lookalikes_without_marker_are_left_alone(tmp_path, msh_result):
    proc = subprocess.Popen(["true"])
    proc.wait()
    tmp = tmp_path / f".out.tmp-{proc.pid}"
    tmp.mkdir()
    (tmp / "my.fits").write_text("a user's folder with an unlucky name")
    old = tmp_path / f".out.old-{proc.pid}"
    old.mkdir()
    (old / "x.txt").write_text("not ringbg's either")
    msh_result.write(tmp_path / "out", figures=False)
    assert (tmp / "my.fits").is_file() and (old / "x.txt").is_file()
    assert read_marker(tmp_path / "out") is not None  # the .old was not taken for OUTDIR


def test_stale_folder_killed_while_being_removed_is_still_recognised(tmp_path, msh_result):
    """The marker is removed last: what a kill during the removal leaves is still ringbg's."""
    out = msh_result.write(tmp_path / "out", figures=False)
    proc = subprocess.Popen(["true"])
    proc.wait()
    old = tmp_path / f".out.old-{proc.pid}"
    shutil.copytree(out, old)
    (old / "maps.fits").unlink()  # partly removed
    assert read_marker(old) is not None
    msh_result.write(out, overwrite=True, figures=False)
    assert not old.exists()


def test_previous_results_restored_before_the_check(tmp_path, msh_result):
    """Killed between its two renames, a run leaves the previous results as ``.old``: they
    come back as OUTDIR before OUTDIR is checked, so a run without --overwrite is refused at
    once instead of after its work, and the results are whole."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    out = msh_result.write(tmp_path / "out", figures=False)
    before = _tree(out)
    out.rename(tmp_path / f".out.old-{proc.pid}")
    with pytest.raises(OutputError) as info:
        outdir_mod.prepare_outdir(out, overwrite=False)
    _refused(info, "--overwrite")
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_temporary_killed_while_created_is_removed(tmp_path, msh_result):
    """Killed between creating its folder and writing the marker: an empty folder, or one
    holding only an empty marker, is removed by the next run."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    empty = tmp_path / f".out.tmp-{proc.pid}"
    empty.mkdir()
    partial = tmp_path / f".out.old-{proc.pid}@{socket.gethostname()}"
    partial.mkdir()
    (partial / MARKER).write_bytes(b"")
    msh_result.write(tmp_path / "out", figures=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_ctrl_c_while_the_temporary_is_created_leaves_nothing(tmp_path, msh_result,
                                                              monkeypatch):
    def interrupted(files=None):
        raise KeyboardInterrupt  # Ctrl-C just after the temporary folder was made

    monkeypatch.setattr(outdir_mod, "_marker_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        msh_result.write(tmp_path / "out", figures=False)
    assert list(tmp_path.iterdir()) == []


def test_write_leaves_the_result_as_it_is(tmp_path):
    """Writing twice gives the same summary.json (but the write time), and the Result's
    summary gains nothing (no checksums, no write time)."""
    import copy

    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137]}
    cfg["excess"]["correlation_radius"] = ["0.1 deg", "0.2 deg"]
    result = run(cfg)
    before = copy.deepcopy(result.summary)
    out = result.write(tmp_path / "a", figures=True)
    assert result.summary == before
    written = json.loads((out / "summary.json").read_text())
    assert written["inputs"] and "write" in written["timings"]
    # figures of the further radius, filed beside the first's
    assert (out / "significance_0.2deg.png").is_file() and (out / "significance.png").is_file()
