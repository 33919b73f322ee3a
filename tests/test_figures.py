"""Tests of ringbg.figures: sky-map PNGs and the off-distribution Gaussian fit."""

import math
import struct

import numpy as np
import pytest
from astropy.wcs import WCS

from ringbg.figures import (
    _frame_labels,
    fit_gaussian,
    make_figures,
    plot_excess,
    plot_significance,
    plot_significance_distribution,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_wcs(frame="icrs", shape=(90, 120), binsize=0.02, projection="CAR"):
    """A simple celestial WCS centred on MSH 15-52 (icrs) or the Galactic plane."""
    ny, nx = shape
    wcs = WCS(naxis=2)
    if frame == "icrs":
        wcs.wcs.ctype = [f"RA---{projection}", f"DEC--{projection}"]
        wcs.wcs.radesys = "ICRS"
        wcs.wcs.crval = [228.32, -59.08]
    else:
        wcs.wcs.ctype = [f"GLON-{projection}", f"GLAT-{projection}"]
        wcs.wcs.crval = [320.33, -1.19]
    wcs.wcs.cdelt = [-binsize, binsize]
    wcs.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    wcs.wcs.cunit = ["deg", "deg"]
    return wcs


def make_maps(shape=(90, 120), seed=0):
    """Background-only N(0, 1) significance plus a 10 sigma source, excluded by a circle."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    r2 = (x - nx / 2) ** 2 + (y - ny / 2) ** 2
    significance = rng.normal(0, 1, shape) + 10 * np.exp(-r2 / (2 * 4.0**2))
    significance[:4] = np.nan  # no exposure in the bottom rows
    excess = 15 * significance
    exclusion = (r2 > 15**2).astype(float)  # 1 = used for background
    return {"SIGNIFICANCE": significance, "EXCESS": excess, "EXCLUSION": exclusion}


def png_size(path):
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_good_png(path, min_bytes=20_000):
    assert path.is_file()
    assert path.stat().st_size > min_bytes
    width, height = png_size(path)
    # ~100-150 dpi figures of several inches: hundreds of pixels each way.
    assert 400 < width < 2500 and 250 < height < 2500
    from matplotlib.image import imread

    pixels = imread(path)
    assert pixels.std() > 0.05, "figure is (nearly) blank"


@pytest.mark.parametrize("frame", ["icrs", "galactic"])
def test_make_figures_writes_three_readable_pngs(tmp_path, frame):
    maps = make_maps()
    wcs = make_wcs(frame)
    fit = fit_gaussian(maps["SIGNIFICANCE"][maps["EXCLUSION"] > 0.5])
    summary = {"n_obs": 3, "off_distribution": fit}

    figures = make_figures(tmp_path / "out", maps, wcs, summary, 0.5, 0.8)

    assert set(figures) == {"significance", "excess", "significance_distribution"}
    for name, path in figures.items():
        assert path == tmp_path / "out" / f"{name}.png"
        assert_good_png(path)


def test_make_figures_without_fit_in_summary_fits_off_pixels(tmp_path):
    maps = make_maps()
    figures = make_figures(tmp_path, maps, make_wcs(), {}, None, None)
    for path in figures.values():
        assert_good_png(path)


def test_frame_labels_follow_the_map_frame():
    assert _frame_labels(make_wcs("icrs")) == ("Right ascension (ICRS)", "Declination (ICRS)")
    assert _frame_labels(make_wcs("galactic")) == (
        "Galactic longitude l",
        "Galactic latitude b",
    )


def test_tan_projection_and_ring_larger_than_map(tmp_path):
    """A ring wider than the map is centred instead of drawn off the image."""
    maps = make_maps(shape=(40, 60))
    wcs = make_wcs("icrs", shape=(40, 60), projection="TAN")
    path = plot_significance(
        tmp_path / "sig.png", maps["SIGNIFICANCE"], wcs,
        maps["EXCLUSION"].astype(bool), r_in_deg=0.7, r_out_deg=1.0,
    )
    assert_good_png(path, min_bytes=10_000)


def test_all_nan_and_nothing_excluded_maps_still_plot(tmp_path):
    """Empty maps (no exposure) and masks without excluded pixels must not raise."""
    wcs = make_wcs()
    nan_map = np.full((90, 120), np.nan)
    all_used = np.ones((90, 120), bool)
    nan_fit = fit_gaussian(nan_map)
    assert all(math.isnan(nan_fit[k]) for k in ("mean", "sigma", "mean_err", "sigma_err"))
    assert nan_fit["n_pixels"] == 0

    paths = [
        plot_significance(tmp_path / "s.png", nan_map, wcs, all_used, 0.5, 0.8),
        plot_excess(tmp_path / "e.png", nan_map, wcs, all_used),
        plot_significance_distribution(tmp_path / "d.png", nan_map, all_used, nan_fit),
    ]
    for path in paths:
        assert png_size(path)[0] > 400


def test_exclusion_shape_mismatch_is_an_error(tmp_path):
    maps = make_maps()
    with pytest.raises(ValueError, match="shape"):
        plot_significance(
            tmp_path / "s.png", maps["SIGNIFICANCE"], make_wcs(), np.ones((3, 3), bool)
        )


def test_fit_gaussian_recovers_mean_and_sigma_of_a_normal_sample():
    """The fit of a large normal sample returns its parameters within a few errors."""
    rng = np.random.default_rng(42)
    values = rng.normal(0.3, 1.7, 200_000)
    fit = fit_gaussian(values)
    assert fit["n_pixels"] == values.size
    assert fit["mean"] == pytest.approx(0.3, abs=0.02)
    assert fit["sigma"] == pytest.approx(1.7, abs=0.02)
    assert 0 < fit["mean_err"] < 0.02
    assert 0 < fit["sigma_err"] < 0.02


def test_fit_gaussian_ignores_nan_and_inf():
    rng = np.random.default_rng(1)
    values = rng.normal(0, 1, 50_000)
    dirty = np.concatenate([values, [np.nan] * 1000, [np.inf, -np.inf]]).reshape(-1, 7)
    assert fit_gaussian(dirty) == fit_gaussian(values)


@pytest.mark.parametrize("n", [0, 1, 5, 9])
def test_fit_gaussian_too_few_values_returns_nan(n):
    values = np.concatenate([np.arange(n, dtype=float), [np.nan, np.nan]])
    fit = fit_gaussian(values)
    assert fit["n_pixels"] == n
    assert all(math.isnan(fit[k]) for k in ("mean", "sigma", "mean_err", "sigma_err"))


def test_fit_gaussian_constant_values_do_not_raise():
    fit = fit_gaussian(np.full(100, 2.0))
    assert fit["n_pixels"] == 100
    for key in ("mean", "sigma", "mean_err", "sigma_err"):
        assert isinstance(fit[key], float)


def test_fit_gaussian_matches_gammapy_plot_distribution():
    """Same numbers as gammapy 2.1's plot_distribution(func="norm", bins=51)."""
    gammapy = pytest.importorskip("gammapy")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from gammapy.maps import MapAxis, WcsGeom, WcsNDMap
    from gammapy.visualization import plot_distribution

    assert gammapy.__version__.startswith("2.1")
    rng = np.random.default_rng(7)
    data = rng.normal(-0.05, 1.1, (80, 120))
    data[:3] = np.nan
    axis = MapAxis.from_energy_bounds("1 TeV", "10 TeV", nbin=1)
    geom = WcsGeom.create(npix=(120, 80), binsz=0.02, skydir=(0, 0), axes=[axis])
    try:
        _, results = plot_distribution(
            WcsNDMap(geom, data[None]), func="norm", kwargs_hist={"bins": 51}
        )
    finally:
        plt.close("all")
    expected_pars = results[0]["param"]
    expected_errs = np.sqrt(np.diag(results[0]["covar"]))

    fit = fit_gaussian(data)
    assert fit["mean"] == pytest.approx(expected_pars[0], rel=1e-9)
    assert fit["sigma"] == pytest.approx(expected_pars[1], rel=1e-9)
    assert fit["mean_err"] == pytest.approx(expected_errs[0], rel=1e-6)
    assert fit["sigma_err"] == pytest.approx(expected_errs[1], rel=1e-6)


def test_off_histogram_and_fit_use_the_fit_mask_run(tmp_path, monkeypatch):
    """The off distribution is the significance of the run with the exclusion as fit mask
    (``OFF_SIGNIFICANCE``), not the main map's off pixels."""
    import ringbg.figures as figures

    maps = make_maps()
    off = maps["SIGNIFICANCE"] + 3.0
    seen = []
    monkeypatch.setattr(figures, "fit_gaussian",
                        lambda values: seen.append(np.asarray(values)) or fit_gaussian(values))
    plain = make_figures(tmp_path / "a", maps, make_wcs(), {}, None, None)
    with_off = make_figures(tmp_path / "b", dict(maps, OFF_SIGNIFICANCE=off), make_wcs(), {},
                            None, None)
    used = maps["EXCLUSION"] > 0.5
    np.testing.assert_array_equal(seen[0], maps["SIGNIFICANCE"][used])
    np.testing.assert_array_equal(seen[1], off[used])
    a = plain["significance_distribution"].read_bytes()
    assert a != with_off["significance_distribution"].read_bytes()
