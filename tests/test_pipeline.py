"""The tutorial end to end: totals printed by gammapy's tutorial and the contract's numbers."""

import numpy as np
import pytest

from conftest import msh_config
from ringbg import run
from ringbg.kernels import convolve, tophat_kernel


def test_tutorial_totals(msh_result):
    s = msh_result.summary
    assert s["n_obs"] == 20
    t = s["totals"]
    assert t["counts"] == 41803
    assert t["counts_off"] == pytest.approx(87621192, rel=1e-6)
    assert t["acceptance"] == pytest.approx(44754.762, rel=1e-5)
    assert t["acceptance_off"] == pytest.approx(96374323.4, rel=1e-5)
    assert t["background"] == pytest.approx(40671.8993, rel=1e-5)
    assert s["max_significance"]["value"] == pytest.approx(10.048888544, abs=1e-3)
    assert s["max_significance"]["pixel"] == [72, 72]
    off = s["off_distribution"]
    assert off["n_pixels"] == 21236
    assert off["sample_mean"] == pytest.approx(-0.010720639, abs=1e-4)
    assert off["sample_std"] == pytest.approx(1.011167426, abs=1e-4)
    assert off["mean"] == pytest.approx(-0.01248774, abs=1e-3)
    assert off["sigma"] == pytest.approx(1.00854203, abs=1e-3)
    assert msh_result.stack.livetime_s == pytest.approx(29971.3797, rel=1e-7)
    assert msh_result.stack.exposure.max() == pytest.approx(1.33217e10, rel=1e-5)


def test_maps_are_consistent(msh_result):
    m = msh_result.maps
    finite = np.isfinite(m["SIGNIFICANCE"])
    assert finite.sum() == 150 * 150
    np.testing.assert_allclose(m["EXCESS"][finite],
                               (m["COUNTS"] - m["BACKGROUND"])[finite], atol=1e-9)
    # flux has the sign of the excess and the UL is above the flux
    assert np.all(np.sign(m["FLUX"][finite]) == np.sign(m["EXCESS"][finite]))
    assert np.all(m["FLUX_UL"][finite] > m["FLUX"][finite])
    assert m["EXCLUSION"].sum() == 21236


def test_parallel_processes_identical(tmp_path):
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137, 20151, 20282]}
    one = run(cfg, jobs=1)
    two = run(cfg, jobs=2)
    for name in one.maps:
        np.testing.assert_array_equal(one.maps[name], two.maps[name])
    assert one.summary["obs_ids"] == two.summary["obs_ids"]


def test_dask_local_cluster_identical(tmp_path):
    from distributed import LocalCluster

    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137, 20151]}
    one = run(cfg, jobs=1)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        cfg["parallel"] = {"address": cluster.scheduler_address}
        dask = run(cfg)
    for name in one.maps:
        np.testing.assert_array_equal(one.maps[name], dask.maps[name])


def test_energy_bands_and_auto_exclusion(tmp_path):
    cfg = msh_config(tmp_path)
    cfg["geom"]["energy"] = {"min": "0.5 TeV", "max": "10 TeV", "nbins": 3}
    cfg["exclusion"] = {"regions": [], "auto": {"threshold": 4, "iterations": 3,
                                                 "dilate": "0.1 deg"}}
    cfg["excess"]["energy_bands"] = True
    cfg["excess"]["correlation_radius"] = "0.1 deg"
    result = run(cfg)
    assert len(result.band_maps) == 3
    # the bands' counts add up to the integrated counts
    total = sum(np.nan_to_num(b["COUNTS"]) for b in result.band_maps)
    np.testing.assert_allclose(total, np.nan_to_num(result.maps["COUNTS"]))
    # MSH 15-52 gets excluded automatically, around the maximum
    assert result.summary["auto_exclusion_iterations"] >= 1
    assert not result.exclusion[72, 72] and result.exclusion[0, 0]


def test_huge_geometry_refused_up_front(tmp_path):
    from ringbg.pipeline import RunError

    cfg = msh_config(tmp_path)
    cfg["geom"]["width"] = ["120 deg", "60 deg"]
    cfg["geom"]["binsize"] = "0.005 deg"
    cfg["geom"]["energy"]["nbins"] = 40
    cfg["geom"]["projection"] = "CAR"
    with pytest.raises(RunError, match=r"needs about \d+\.\d GB, but .* GB are available"):
        run(cfg)


def test_unexpected_error_in_one_observation_skips_it(tmp_path, monkeypatch):
    import ringbg.pipeline as pipeline

    real = pipeline.reduce_observation

    def flaky(obs, *args, **kwargs):
        if obs.obs_id == 20137:
            raise TypeError("something nobody foresaw\nsecond line")
        return real(obs, *args, **kwargs)

    monkeypatch.setattr(pipeline, "reduce_observation", flaky)
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137]}
    result = run(cfg)
    assert result.summary["obs_ids"] == [20136]
    assert result.summary["skipped"] == [
        {"obs_id": 20137, "reason": "unexpected TypeError: something nobody foresaw"}]


def test_warning_when_most_pixels_find_no_ring(tmp_path, caplog):
    # gammapy's adaptive defaults on a small ring: alpha_approx of the theta disc is already
    # above threshold_alpha for the first ring, so most pixels find none
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137]}
    cfg["ring"]["adaptive"] = {"theta": "0.22 deg", "threshold_alpha": 0.1,
                               "r_out_max": "1.0 deg", "stepsize": "0.1 deg"}
    with caplog.at_level("WARNING", logger="ringbg"):
        result = run(cfg)
    assert "no off estimate" in caplog.text and "threshold_alpha" in caplog.text
    assert result.summary["n_pixels_no_off"] > 0.5 * result.stack.mask.size
    caplog.clear()
    with caplog.at_level("WARNING", logger="ringbg"):
        run(msh_config(tmp_path, observations={"obs_ids": [20136, 20137]}))
    assert "no off estimate" not in caplog.text


def test_auto_exclusion_per_observation_uses_the_final_mask(tmp_path, monkeypatch):
    """With exclusion.auto, the per-observation on/off images come from the last pass, with
    the final mask: their off counts add up to the stack's. Each pass reduces the
    observations again (nothing per observation is held in memory between passes)."""
    from ringbg import pipeline

    calls = []
    original = pipeline.process_observation
    monkeypatch.setattr(pipeline, "process_observation",
                        lambda task: calls.append(task.obs_id) or original(task))
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137, 20151, 20282]}
    cfg["exclusion"] = {"regions": [], "auto": {"threshold": 4, "iterations": 3,
                                                 "dilate": "0.1 deg"}}
    cfg["excess"]["correlation_radius"] = "0.1 deg"
    cfg["output"]["per_observation"] = True
    result = run(cfg)
    n_iter = result.summary["auto_exclusion_iterations"]
    assert n_iter >= 1 and (result.exclusion == 0).sum() > 0
    changed = n_iter if n_iter == 3 else n_iter - 1  # the last round may find no change
    assert len(calls) == 4 * (1 + changed)
    total_off = np.zeros(result.geom.shape)
    for onoff in result.per_observation:
        np.add(total_off[onoff.slices], onoff.counts_off, out=total_off[onoff.slices],
               where=onoff.mask & np.isfinite(onoff.counts_off))
    np.testing.assert_array_equal(total_off, result.stack.counts_off)
    # the first mask (nothing excluded) gives other off counts
    first = run(dict(cfg, exclusion={"regions": []}))
    assert first.stack.counts_off.sum() != result.stack.counts_off.sum()


def test_band_exposure_from_the_runs_where_the_band_is_safe(tmp_path):
    """A band's stack (and so its flux) holds the exposure of the observations for which that
    band is safe, in that band's energy bin; the integrated stack holds every run's."""
    from ringbg.config import load_config
    from ringbg.pipeline import make_geom, make_task, reduce_task

    cfg = msh_config(tmp_path)
    ids = [20136, 20137, 20151, 20282, 20283]
    cfg["observations"] = {"obs_ids": ids}
    # DR1 thresholds are 0.380 or 0.407 TeV: the first band is safe for some runs only
    cfg["geom"]["energy"] = {"min": "0.39 TeV", "max": "10 TeV", "nbins": 6}
    cfg["excess"]["energy_bands"] = True
    result = run(cfg)
    config = load_config(cfg)
    geom = make_geom(config)
    reduced = [reduce_task(make_task(config, geom, i))[1] for i in ids]
    safe_in_band0 = [r for r in reduced if r.mask_safe[0].any()]
    assert 0 < len(safe_in_band0) < len(reduced)  # the test has runs of both kinds
    expected = np.zeros(geom.shape)
    for r in safe_in_band0:
        expected[r.slices] += r.exposure[0]
    # the band's flux is its excess over the top-hat mean of that exposure (m2 -> cm2)
    band0 = result.band_maps[0]
    mask = np.isfinite(band0["FLUX"])
    kernel = tophat_kernel(0.04 / 0.02)
    reco = convolve(expected * 1e4 * mask, kernel) / convolve(mask.astype(float), kernel)
    # inside the map (the corners, where some runs have no area or ring, stacked fewer runs)
    inner = np.zeros(geom.shape, bool)
    inner[20:-20, 20:-20] = True
    with np.errstate(divide="ignore", invalid="ignore"):
        expected_flux = band0["EXCESS"] / reco
    np.testing.assert_allclose(band0["FLUX"][inner], expected_flux[inner], rtol=1e-9)
    # with every run's exposure it would be lower
    everyone = sum(np.pad(r.exposure[0], [(s.start, geom.shape[k] - s.stop)
                                          for k, s in enumerate(r.slices)]) for r in reduced)
    assert np.all(everyone[mask] >= expected[mask]) and np.any(everyone > 1.2 * expected)


def test_catalog_exclusion_in_a_run(tmp_path, data_dir):
    """exclusion.catalogs in a run: the EXCLUSION map is the union with the circles, and
    summary.json lists the catalogue sources used."""
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137]}
    cfg["exclusion"]["catalogs"] = [{"file": str(data_dir / "catalogs" /
                                                 "hgps_catalog_v1.fits.gz")}]
    result = run(cfg)
    names = [s["name"] for s in result.summary["excluded_sources"]]
    assert "HESS J1514-591" in names
    plain = run(dict(cfg, exclusion={"regions": cfg["exclusion"]["regions"]}))
    assert np.all(result.exclusion <= plain.exclusion)
    assert (result.exclusion == 0).sum() > (plain.exclusion == 0).sum()


def test_several_correlation_radii(tmp_path):
    """A list of correlation radii: one ring and stack, the maps per radius (the first in
    maps.fits, the others in maps_<r>deg.fits), summary entries per radius."""
    from astropy.io import fits

    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137, 20151]}
    cfg["excess"]["correlation_radius"] = ["0.1 deg", "0.2 deg"]
    result = run(cfg)
    single = {r: run(dict(cfg, excess=dict(cfg["excess"], correlation_radius=r)))
              for r in ("0.1 deg", "0.2 deg")}
    np.testing.assert_array_equal(result.maps["SIGNIFICANCE"],
                                  single["0.1 deg"].maps["SIGNIFICANCE"])
    np.testing.assert_array_equal(result.maps_by_radius[0.2]["SIGNIFICANCE"],
                                  single["0.2 deg"].maps["SIGNIFICANCE"])
    s = result.summary
    assert set(s["radii"]) == {"0.1", "0.2"}
    assert s["max_significance"] == s["radii"]["0.1"]["max_significance"]
    assert s["radii"]["0.2"]["max_significance"] == single["0.2 deg"].summary["max_significance"]
    assert s["radii"]["0.2"]["off_distribution"]["sigma"] == pytest.approx(
        single["0.2 deg"].summary["off_distribution"]["sigma"])
    out = result.write(tmp_path / "radii", figures=False)
    with fits.open(out / "maps.fits") as a, fits.open(out / "maps_0.2deg.fits") as b:
        assert a[0].header["CORR_RAD"] == 0.1 and b[0].header["CORR_RAD"] == 0.2
        assert [h.name for h in a] == [h.name for h in b]
        np.testing.assert_array_equal(b["SIGNIFICANCE"].data, np.float32(
            result.maps_by_radius[0.2]["SIGNIFICANCE"]))


def test_flat_template_run(tmp_path):
    """background.template: flat on the tutorial runs: the ring works, the total background
    estimate is close to the IRF template's (both are normalised by the ring's counts)."""
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137, 20151, 20282]}
    irf = run(cfg)
    flat = run(dict(cfg, background={"template": "flat"}))
    # the flat template is zero beyond offset_max (the cutout corners): those pixels go
    c_irf, c_flat = irf.summary["totals"]["counts"], flat.summary["totals"]["counts"]
    assert 0.99 * c_irf < c_flat <= c_irf
    b_irf, b_flat = irf.summary["totals"]["background"], flat.summary["totals"]["background"]
    assert b_flat == pytest.approx(b_irf, rel=0.1) and b_flat != b_irf
