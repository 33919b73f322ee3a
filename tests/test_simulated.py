"""ringbg on simulated data whose truth is known: a statistical oracle for the ring method."""

import numpy as np
import pytest
from astropy.table import Table

from ringbg import run, stats
from ringbg.simulate import simulate_datastore

CENTER = (83.63, 22.01)


def _config(store, tmp_path, **excess):
    lon, lat = CENTER
    return {
        "datastore": str(store),
        "geom": {"skydir": {"frame": "icrs", "lon": f"{lon} deg", "lat": f"{lat} deg"},
                 "width": "5 deg", "binsize": "0.02 deg", "projection": "CAR",
                 "energy": {"min": "0.5 TeV", "max": "50 TeV", "nbins": 6},
                 "offset_max": "2.5 deg"},
        "ring": {"r_in": "0.6 deg", "width": "0.3 deg"},
        "excess": {"correlation_radius": "0.1 deg", "correlate_off": False, **excess},
        "output": {"dir": str(tmp_path / "out"), "figures": False},
    }


@pytest.fixture(scope="module")
def null_store(tmp_path_factory):
    """No source: 16 deep pointings on a grid covering an 8 x 8 deg field.

    Deep enough that a 0.1 deg on region holds ~150 counts (Li & Ma's small-count bias is
    then below 0.02) and wide enough for ~2000 independent on regions.
    """
    path = tmp_path_factory.mktemp("null")
    scale = 1 / np.cos(np.radians(CENTER[1]))
    steps = (-2.25, -0.75, 0.75, 2.25)
    pointings = [(CENTER[0] + dx * scale, CENTER[1] + dy) for dx in steps for dy in steps]
    simulate_datastore(path, pointings=pointings, seed=11, center=CENTER, sources=[],
                       livetime_s=5400)
    return path


@pytest.fixture(scope="module")
def source_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("src")
    source = {"lon_deg": CENTER[0], "lat_deg": CENTER[1], "frame": "icrs", "sigma_deg": 0.0,
              "amplitude": 2e-11, "index": 2.5}
    simulate_datastore(path, n_obs=4, seed=5, center=CENTER, sources=[source])
    return path


def test_null_field_significance_is_standard_normal(null_store, tmp_path):
    cfg = _config(null_store, tmp_path)
    cfg["geom"]["width"] = "8 deg"
    result = run(cfg)
    off = result.summary["off_distribution"]
    assert off["n_pixels"] == 400 * 400
    assert abs(off["mean"]) < 0.05 and abs(off["sigma"] - 1) < 0.05
    assert abs(off["sample_mean"]) < 0.05 and abs(off["sample_std"] - 1) < 0.05
    # and the total excess is compatible with zero
    t = result.summary["totals"]
    assert abs(t["excess"]) < 3 * np.sqrt(t["counts"])


def _on_region(result, radius_deg):
    geom = result.geom
    ra, dec = geom.radec_deg
    from ringbg.geom import angular_separation_deg

    return angular_separation_deg(ra, dec, *CENTER) < radius_deg


def _injected_counts(store, result, radius_deg):
    """Source events (MC_ID > 0) inside the on region and the energy range, from the files."""
    from ringbg.geom import angular_separation_deg

    n = 0
    edges = result.geom.energy_edges_tev
    for path in sorted((store / "data").glob("*.fits*")):
        ev = Table.read(path, hdu="EVENTS")
        sel = (ev["MC_ID"] > 0) & (ev["ENERGY"] >= edges[0]) & (ev["ENERGY"] < edges[-1])
        sep = angular_separation_deg(np.asarray(ev["RA"][sel], float),
                                     np.asarray(ev["DEC"][sel], float), *CENTER)
        n += int(np.sum(sep < radius_deg))
    return n


def test_source_excess_matches_injected_counts(source_store, tmp_path):
    radius = 0.3
    cfg = _config(source_store, tmp_path)
    # above every observation's safe threshold, so that all injected events are counted
    cfg["geom"]["energy"] = {"min": "1 TeV", "max": "50 TeV", "nbins": 5}
    cfg["exclusion"] = {"regions": [{"frame": "icrs", "lon": f"{CENTER[0]} deg",
                                     "lat": f"{CENTER[1]} deg", "radius": "0.4 deg"}]}
    result = run(cfg)
    on = _on_region(result, radius) & result.stack.mask
    st = result.stack
    n_on = st.counts[on].sum()
    background = st.background[on].sum()
    excess = n_on - background
    # error of a sum of on/off pixels: on counts Poisson, background from its off counts
    err = np.sqrt(n_on + np.sum(st.alpha[on] ** 2 * st.counts_off[on]))
    injected = _injected_counts(source_store, result, radius)
    assert injected > 100
    assert abs(excess - injected) < 3 * err

    # significance of the on region: as expected for a source of that strength
    n_off = st.counts_off[on].sum()
    alpha = background / n_off
    measured = stats.significance(n_on, n_off, alpha)
    expected = stats.significance(background + injected, n_off, alpha)
    assert measured > 10
    assert abs(measured - expected) < 3
    # and the map's maximum lies on the source
    m = result.summary["max_significance"]
    assert np.hypot((m["lon"] - CENTER[0]) * np.cos(np.radians(CENTER[1])),
                    m["lat"] - CENTER[1]) < 0.1


def test_gammapy_gives_the_same_maps_on_simulated_data(source_store, tmp_path):
    from gammapy_ref import run_gammapy
    from test_reference import _compare_maps, _compare_stacked

    cfg = _config(source_store, tmp_path)
    cfg["exclusion"] = {"regions": [{"frame": "icrs", "lon": f"{CENTER[0]} deg",
                                     "lat": f"{CENTER[1]} deg", "radius": "0.4 deg"}]}
    ref = run_gammapy(cfg, per_obs=False, selection_optional=())
    result = run(cfg)
    _compare_stacked(result, ref)
    _compare_maps(result, ref)


def test_band_flux_follows_the_injected_spectrum(source_store, tmp_path):
    """Per-band flux maps (energy_bands): at the source, each band's flux is the injected
    power law's integral over that band, within 3 sigma plus 10 % (the simulated events
    are smeared in energy; the flux maps here have no energy dispersion), and the bands
    add up to the flux of the whole range."""
    cfg = _config(source_store, tmp_path, energy_bands=True, spectral_index=2.5)
    cfg["geom"]["energy"] = {"min": "1 TeV", "max": "30 TeV", "nbins": 3}
    cfg["excess"]["correlation_radius"] = "0.3 deg"  # the whole PSF
    cfg["exclusion"] = {"regions": [{"frame": "icrs", "lon": f"{CENTER[0]} deg",
                                     "lat": f"{CENTER[1]} deg", "radius": "0.5 deg"}]}
    result = run(cfg)
    x, y = result.geom.world_to_pix(np.array([CENTER[0]]), np.array([CENTER[1]]), "icrs")
    j, i = int(np.round(y[0])), int(np.round(x[0]))
    edges = result.geom.energy_edges_tev
    injected = 2e-11 * (edges[:-1] ** -1.5 - edges[1:] ** -1.5) / 1.5  # cm-2 s-1
    for k, band in enumerate(result.band_maps):
        flux, err = band["FLUX"][j, i], band["FLUX_ERR"][j, i]
        assert abs(flux - injected[k]) < 3 * err + 0.1 * injected[k], (k, flux, injected[k])
    total = result.maps["FLUX"][j, i]
    assert sum(b["FLUX"][j, i] for b in result.band_maps) == pytest.approx(total, rel=0.05)


# --------------------------------------------------------------------------------------------
# stores without a background IRF (point-like IRFs, as MAGIC's): the template from the data


@pytest.fixture(scope="module")
def null_store_no_bkg(tmp_path_factory):
    """The null field of `null_store`, written without background IRFs, point-like."""
    path = tmp_path_factory.mktemp("null-nobkg")
    scale = 1 / np.cos(np.radians(CENTER[1]))
    steps = (-2.25, -0.75, 0.75, 2.25)
    pointings = [(CENTER[0] + dx * scale, CENTER[1] + dy) for dx in steps for dy in steps]
    simulate_datastore(path, pointings=pointings, seed=11, center=CENTER, sources=[],
                       livetime_s=5400, bkg_irf=False, point_like=True)
    return path


@pytest.fixture(scope="module")
def source_store_no_bkg(tmp_path_factory):
    path = tmp_path_factory.mktemp("src-nobkg")
    source = {"lon_deg": CENTER[0], "lat_deg": CENTER[1], "frame": "icrs", "sigma_deg": 0.0,
              "amplitude": 2e-11, "index": 2.5}
    simulate_datastore(path, n_obs=4, seed=5, center=CENTER, sources=[source], bkg_irf=False)
    return path


def test_null_field_without_background_irf(null_store_no_bkg, tmp_path):
    """No BKG HDU: the template from the data gives off significances N(0, 1) within 0.05."""
    cfg = _config(null_store_no_bkg, tmp_path)
    cfg["geom"]["width"] = "8 deg"
    result = run(cfg)
    assert set(result.summary["background_templates"].values()) == {"data"}
    off = result.summary["off_distribution"]
    assert abs(off["mean"]) < 0.05 and abs(off["sigma"] - 1) < 0.05
    assert "flux_note" in result.summary


def test_source_excess_without_background_irf(source_store_no_bkg, tmp_path):
    """No BKG HDU: the excess of the injected point source is within 3 sigma of the truth."""
    radius = 0.3
    cfg = _config(source_store_no_bkg, tmp_path)
    cfg["geom"]["energy"] = {"min": "1 TeV", "max": "50 TeV", "nbins": 5}
    cfg["exclusion"] = {"regions": [{"frame": "icrs", "lon": f"{CENTER[0]} deg",
                                     "lat": f"{CENTER[1]} deg", "radius": "0.4 deg"}]}
    result = run(cfg)
    assert set(result.summary["background_templates"].values()) == {"data"}
    on = _on_region(result, radius) & result.stack.mask
    st = result.stack
    n_on = st.counts[on].sum()
    excess = n_on - st.background[on].sum()
    err = np.sqrt(n_on + np.sum(st.alpha[on] ** 2 * st.counts_off[on]))
    injected = _injected_counts(source_store_no_bkg, result, radius)
    assert injected > 100 and abs(excess - injected) < 3 * err
