"""Output files: gammapy reads stacked_onoff.fits, maps.fits has named WCS images, atomicity."""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from conftest import msh_config
from ringbg import run

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


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path, msh_result):
    import socket
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()  # a pid that no longer runs
    stale = tmp_path / f".out.tmp-{proc.pid}"
    stale.mkdir()
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
