"""The tutorial end to end: totals printed by gammapy's tutorial and the contract's numbers."""

import numpy as np
import pytest
from conftest import gammapy_data, msh_config

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


@pytest.mark.parametrize("per_observation", [False, True])
def test_parallel_processes_identical(tmp_path, per_observation):
    """Worker processes (their results through shared memory) give the bits of one
    process: the maps, the per-band maps, the per-observation images and the report's
    numbers per observation."""
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137, 20151, 20282, 20283]}
    cfg["excess"]["energy_bands"] = per_observation
    cfg["output"]["per_observation"] = per_observation
    one = run(cfg, jobs=1)
    two = run(cfg, jobs=2)
    for name in one.maps:
        np.testing.assert_array_equal(one.maps[name], two.maps[name])
    assert len(one.band_maps) == len(two.band_maps) == (10 if per_observation else 0)
    for a, b in zip(one.band_maps, two.band_maps):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    assert one.summary["obs_ids"] == two.summary["obs_ids"]
    assert one.observations == two.observations
    assert len(two.per_observation) == (5 if per_observation else 0)
    for a, b in zip(one.per_observation, two.per_observation):
        assert a.obs_id == b.obs_id and a.slices == b.slices
        for name in ("counts", "counts_off", "acceptance", "acceptance_off", "exposure"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert b.counts.flags.writeable  # a copy, not a view into the workers' memory


def test_background_import_starts_after_the_workers_fork_and_ends_with_the_pass(
        tmp_path, monkeypatch):
    """With worker processes this one imports what it needs after the observation pass
    while it waits for them: only once they are forked (a fork during an import would
    inherit its locks, held) and finished before the pass returns (before the next fork,
    the root searches')."""
    import threading

    import ringbg.parallel as parallel
    import ringbg.pipeline as pipeline

    events = []
    map_ordered = parallel.map_ordered

    def recording_map(*args, **kwargs):
        for k, result in enumerate(map_ordered(*args, **kwargs)):
            events.append(("result", k))
            yield result

    def recording_import(modules):
        events.append(("import", tuple(modules)))
        thread = threading.Thread(target=lambda: None)
        thread.start()
        join = thread.join
        thread.join = lambda *a: (events.append(("join",)), join(*a))[1]
        return thread

    monkeypatch.setattr(pipeline, "map_ordered", recording_map)
    monkeypatch.setattr(pipeline, "import_in_background", recording_import)
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137, 20151]}
    run(cfg, jobs=2)
    assert events[:2] == [("result", 0), ("import", pipeline.AFTER_STACK_MODULES)]
    assert events.index(("join",)) == events.index(("result", 2)) + 1
    events.clear()
    run(cfg, jobs=1)  # all in this process: nothing imported beside it
    assert ("import", pipeline.AFTER_STACK_MODULES) not in events


def test_import_in_background_imports_and_leaves_failures_to_the_user():
    import sys

    from ringbg.pipeline import import_in_background

    sys.modules.pop("colorsys", None)
    import_in_background(["colorsys", "ringbg_no_such_module"]).join()
    assert "colorsys" in sys.modules


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


def test_a_run_uses_one_blas_thread(tmp_path, monkeypatch):
    """A run (its reduction, its correlated maps) keeps BLAS to one thread, and the
    caller's setting comes back after it."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import ringbg.pipeline as pipeline

    def threads():
        return {i["filepath"]: i["num_threads"] for i in threadpool_info()
                if i["user_api"] == "blas"}

    seen = []
    for name in ("reduce_observation", "correlated_products"):
        def spy(*args, _real=getattr(pipeline, name), **kwargs):
            seen.append(set(threads().values()))
            return _real(*args, **kwargs)

        monkeypatch.setattr(pipeline, name, spy)
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136]}
    with threadpool_limits(2, "blas"):
        run(cfg, jobs=1)
        assert set(threads().values()) == {2}
    assert seen == [{1}, {1}]


@pytest.mark.parametrize("jobs", [1, 2])
def test_internal_error_in_one_observation_stops_the_run(tmp_path, monkeypatch, jobs):
    """A ringbg bug is not a skipped observation: the exception stops the run, with a note
    naming the observation (the CLI reports it as an internal error)."""
    import ringbg.pipeline as pipeline

    real = pipeline.reduce_observation

    def flaky(obs, *args, **kwargs):
        if obs.obs_id == 20137:
            raise TypeError("something nobody foresaw\nsecond line")
        return real(obs, *args, **kwargs)

    monkeypatch.setattr(pipeline, "reduce_observation", flaky)
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137]}
    with pytest.raises(TypeError, match="something nobody foresaw") as info:
        run(cfg, jobs=jobs)
    assert "while reducing observation 20137" in " ".join(getattr(info.value, "__notes__", []))


def test_data_error_in_the_reduction_skips_the_observation(tmp_path, monkeypatch):
    """A DataError raised while reducing (bad data found late) skips the observation."""
    import ringbg.pipeline as pipeline
    from ringbg.errors import DL3Error

    real = pipeline.reduce_observation

    def flaky(obs, *args, **kwargs):
        if obs.obs_id == 20137:
            raise DL3Error("observation 20137: its GTIs need 10001 field-rotation steps")
        return real(obs, *args, **kwargs)

    monkeypatch.setattr(pipeline, "reduce_observation", flaky)
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137]}
    result = run(cfg)
    assert result.summary["obs_ids"] == [20136]
    assert result.summary["skipped"] == [
        {"obs_id": 20137, "reason": "observation 20137: its GTIs need 10001 field-rotation steps"}]


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
    cfg["excess"]["edisp"] = False  # the band's flux then has no other factor
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
    # the band's N_OBS and LIVETIME count the runs safe in that band, at the map centre
    j, i = (n // 2 for n in geom.shape)
    covering = [r for r in safe_in_band0
                if r.mask_safe[0][j - r.slices[0].start, i - r.slices[1].start]]
    assert band0["N_OBS"][j, i] == len(covering) < result.band_maps[-1]["N_OBS"][j, i] == 5
    assert band0["LIVETIME"][j, i] == pytest.approx(sum(r.livetime_s for r in covering))
    out = result.write(tmp_path / "out", figures=False)
    from astropy.io import fits

    with fits.open(out / "maps_bands.fits") as hdul:
        np.testing.assert_array_equal(hdul["N_OBS"].data[0], band0["N_OBS"])
        assert hdul["COUNTS_OFF"].header["BUNIT"] == "count"


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


def _store_without_edisp(root, obs_ids):
    """The DR1 index files, with no 'edisp' HDU listed for ``obs_ids`` (BASE_DIR: DR1)."""
    from astropy.table import Table

    dr1 = gammapy_data() / "hess-dl3-dr1"
    root.mkdir()
    Table.read(dr1 / "obs-index.fits.gz").write(root / "obs-index.fits.gz")
    hdu = Table.read(dr1 / "hdu-index.fits.gz")
    hdu_type = np.char.strip(hdu["HDU_TYPE"].astype(str))  # bytes with astropy 6.0
    drop = np.isin(hdu["OBS_ID"], obs_ids) & (hdu_type == "edisp")
    hdu = hdu[~drop]
    hdu.meta["BASE_DIR"] = str(dr1)
    hdu.write(root / "hdu-index.fits.gz")
    return root


def test_observations_without_edisp_hdu(tmp_path, caplog):
    """Without an 'edisp' HDU an observation enters the flux without dispersion, with a
    warning naming it; with none at all the flux is the one of ``excess.edisp: false``."""
    ids = [20136, 20137]
    cfg = msh_config(tmp_path, observations={"obs_ids": ids})
    full = run(cfg)
    no_edisp = run(dict(cfg, excess=dict(cfg["excess"], edisp=False)))
    store = _store_without_edisp(tmp_path / "none", ids)
    with caplog.at_level("WARNING", logger="ringbg"):
        none = run(dict(cfg, datastore=str(store)))
    assert "observations 20136, 20137: no energy dispersion" in caplog.text
    np.testing.assert_array_equal(none.maps["FLUX"], no_edisp.maps["FLUX"])
    np.testing.assert_array_equal(none.maps["FLUX_UL"], no_edisp.maps["FLUX_UL"])
    np.testing.assert_array_equal(none.flux_response, np.ones(10))
    caplog.clear()
    store = _store_without_edisp(tmp_path / "one", [20137])
    with caplog.at_level("WARNING", logger="ringbg"):
        one = run(dict(cfg, datastore=str(store)))
    assert "observation 20137: no energy dispersion" in caplog.text and "20136" not in caplog.text
    # between the two: some of the exposure-weighted kernel is dispersed, some diagonal
    assert np.all(full.flux_response <= one.flux_response + 1e-12)
    assert np.all(one.flux_response <= 1) and np.any(one.flux_response < 1)
    assert np.any(one.flux_response > full.flux_response + 1e-3)
    # the counts and significance do not depend on it
    np.testing.assert_array_equal(one.maps["SIGNIFICANCE"], full.maps["SIGNIFICANCE"])


def test_edisp_false_is_the_flux_without_dispersion():
    """``excess.edisp: false``: exposure x power-law fractions, true = reconstructed energy
    (the flux before the energy dispersion was added; bit for bit)."""
    from ringbg.excess import power_law_integral
    from ringbg.ring import convolve, tophat_kernel

    cfg = msh_config()
    cfg["excess"]["spectral_index"] = 2.3
    with_edisp = run(cfg)
    cfg["excess"]["edisp"] = False
    result = run(cfg)
    assert result.flux_response is None
    st, m = result.stack, result.stack.mask
    edges = result.geom.energy_edges_tev
    fractions = power_law_integral(edges[:-1], edges[1:], 2.3)
    total = power_law_integral(edges[0], edges[-1], 2.3)
    npred = np.tensordot(fractions / total, np.nan_to_num(st.exposure), axes=1) * 1e4
    kernel = tophat_kernel(0.04 / 0.02)
    with np.errstate(all="ignore"):
        reco = convolve(npred * m, kernel) / convolve(m.astype(float), kernel)
        expected = np.where(m, result.maps["EXCESS"] / reco, np.nan)
    np.testing.assert_array_equal(result.maps["FLUX"], expected)
    # the energy dispersion raises the flux by about 9 % where the excess is significant
    # (index 2.3, 0.5-10 TeV: events that migrate out of the range are lost)
    sig = result.maps["SIGNIFICANCE"] > 5
    ratio = with_edisp.maps["FLUX"][sig] / result.maps["FLUX"][sig]
    assert 1.07 < np.median(ratio) < 1.10 and np.ptp(ratio) < 1e-3


def test_memory_estimate_counts_the_true_energy_axis(data_dir):
    from ringbg.config import load_config
    from ringbg.pipeline import make_geom, memory_estimate_bytes

    cfg = msh_config()
    config = load_config(cfg)
    base = memory_estimate_bytes(config, make_geom(config), 1)
    cfg["geom"]["energy_true"] = {"min": "0.5 TeV", "max": "10 TeV", "nbins": 10}
    same = load_config(cfg)
    assert memory_estimate_bytes(same, make_geom(same), 1) == base
    cfg["geom"]["energy_true"]["nbins"] = 110
    finer = load_config(cfg)
    # 100 more full-map float64 exposure planes, and 100 more in each of the three cutouts in
    # flight (here the whole map)
    extra = 150 * 150 * 8 * 100 * (1 + 3)
    assert memory_estimate_bytes(finer, make_geom(finer), 1) - base == extra


def test_band_flux_with_edisp(tmp_path):
    """Per-band flux maps fold each band's own column of the kernel (the photons reconstructed
    in that band): the sign of the band's excess, finite where its mask is, and within 10 % of
    the band's flux without dispersion (which counts that bin's exposure only), but not equal
    to it: photons migrate out of a band and into it from its neighbours."""
    cfg = msh_config(tmp_path)
    cfg["observations"] = {"obs_ids": [20136, 20137, 20151, 20282]}
    cfg["geom"]["energy"] = {"min": "0.5 TeV", "max": "10 TeV", "nbins": 3}
    cfg["excess"]["energy_bands"] = True
    result = run(cfg)
    flat = run(dict(cfg, excess=dict(cfg["excess"], edisp=False)))
    for band, band_flat in zip(result.band_maps, flat.band_maps):
        f = np.isfinite(band["EXCESS"])
        assert np.array_equal(np.isfinite(band["FLUX"]), f)
        np.testing.assert_array_equal(np.sign(band["FLUX"][f]), np.sign(band["EXCESS"][f]))
        s = f & (band["SIGNIFICANCE"] > 3)
        ratio = band["FLUX"][s] / band_flat["FLUX"][s]
        assert ratio.size and np.all(np.abs(ratio - 1) < 0.1), ratio
        assert np.all(np.abs(ratio - 1) > 0.005), ratio


def test_ring_beyond_offset_max_is_warned_about(tmp_path, caplog):
    """A ring reaching beyond geom.offset_max is clipped to each cutout: warned about."""
    cfg = msh_config(tmp_path, observations={"obs_ids": [20136]})
    cfg["geom"]["offset_max"] = "0.7 deg"
    with caplog.at_level("WARNING", logger="ringbg"):
        run(cfg)
    assert "ring.r_in + ring.width = 0.8 deg is beyond geom.offset_max = 0.7 deg" in caplog.text
    caplog.clear()
    cfg["geom"]["offset_max"] = "2.5 deg"
    cfg["ring"]["adaptive"] = {"r_out_max": "1.4 deg", "stepsize": "0.1 deg"}
    with caplog.at_level("WARNING", logger="ringbg"):
        run(cfg)
    assert "beyond geom.offset_max" not in caplog.text


def test_observation_rows_for_the_report(msh_result):
    """Each used observation's row: its counts, safe threshold, start date, offset from the map
    centre, and its own counts, excess and significance in the correlation circle at the map
    maximum, whose counts add up to the map's there."""
    rows = [r for r in msh_result.observations if r["status"] == "used"]
    assert len(rows) == 20
    i, j = msh_result.summary["max_significance"]["pixel"]
    assert sum(r["counts_at_max"] for r in rows) == msh_result.maps["COUNTS"][j, i]
    assert sum(r["counts"] for r in rows) == msh_result.summary["totals"]["counts"]
    for r in rows:
        assert r["safe_energy_min_tev"] == pytest.approx(0.5)
        assert 0.3 < r["offset_deg"] < 0.8  # the wobbles around MSH 15-52
        assert 53000 < r["tstart_mjd"] < 53500  # 2004
        assert np.isfinite(r["significance_at_max"])


def test_report_images_kept_only_when_they_fit(monkeypatch):
    """The report's per-observation numbers at the maximum need every observation's on/off
    images: kept when their cutouts, trimmed by the map edges, fit in KEEP_IMAGES_BYTES;
    otherwise the workers do not make them (before, they were made, sent and copied until the
    limit was passed, then dropped) and the rows have no numbers at the maximum."""
    from ringbg import pipeline
    from ringbg.config import load_config

    cfg = msh_config(observations={"obs_ids": [20136, 20137, 20151]})
    config = load_config(cfg)
    store, ids, _ = pipeline._selected(config)
    plan, _, _ = pipeline.make_plan(config, store, ids, 1, None)
    # the 150 x 150 map is smaller than the 250-pixel cutouts: three whole maps
    actual = 3 * 150 * 150 * pipeline.IMAGE_BYTES_PER_PIXEL
    monkeypatch.setattr(pipeline, "KEEP_IMAGES_BYTES", actual)
    assert pipeline.report_images_fit(plan)
    monkeypatch.setattr(pipeline, "KEEP_IMAGES_BYTES", actual - 1)
    assert not pipeline.report_images_fit(plan)
    # a wider map: the cutouts trimmed by its edges, the bound of three whole cutouts too big
    wide = msh_config(observations={"obs_ids": [20136, 20137, 20151]})
    wide["geom"]["width"] = ["6 deg", "3 deg"]
    wide["geom"]["skydir"]["lon"] = "232.3 deg"  # 2 deg east of the pointings
    config = load_config(wide)
    plan, _, _ = pipeline.make_plan(config, store, ids, 1, None)
    sizes = [pipeline.make_geom(config).cutout_slices(
        *(store.obs_info(i)[c] for c in ("RA_PNT", "DEC_PNT")), 5.0) for i in ids]
    pixels = sum((sy.stop - sy.start) * (sx.stop - sx.start) for sy, sx in sizes)
    assert pixels < 3 * 250 * 150
    monkeypatch.setattr(pipeline, "KEEP_IMAGES_BYTES", pixels * pipeline.IMAGE_BYTES_PER_PIXEL)
    assert pipeline.report_images_fit(plan)
    monkeypatch.setattr(pipeline, "KEEP_IMAGES_BYTES", pixels * pipeline.IMAGE_BYTES_PER_PIXEL - 1)
    assert not pipeline.report_images_fit(plan)

    sent = []
    process = pipeline.process_observation

    def spy(task):
        out = process(task)
        sent.append(out[1].images)
        return out

    monkeypatch.setattr(pipeline, "process_observation", spy)
    monkeypatch.setattr(pipeline, "KEEP_IMAGES_BYTES", actual - 1)
    result = run(cfg)
    assert sent == [None, None, None]
    rows = [r for r in result.observations if r["status"] == "used"]
    assert len(rows) == 3 and not any("counts_at_max" in r for r in rows)
    monkeypatch.setattr(pipeline, "KEEP_IMAGES_BYTES", 256 * 2**20)
    sent.clear()
    rows = [r for r in run(cfg).observations if r["status"] == "used"]
    assert all(s is not None for s in sent) and len(sent) == 3
    assert all("counts_at_max" in r for r in rows)
