"""Tests of ringbg.figures: sky-map PNGs, layouts, labels, the renderer processes."""

import math
import struct
import subprocess
import sys

import numpy as np
import pytest
from astropy.wcs import WCS

import ringbg.figures as figures
from ringbg.figures import (
    FIGURES,
    _frame_labels,
    draw_map,
    figure_tasks,
    fit_gaussian,
    format_unit,
    make_figures,
    map_layout,
    plot_excess,
    plot_map,
    plot_significance,
    plot_significance_distribution,
    product_label,
    significance_figure,
    write_png,
)
from ringbg.products import PRODUCTS

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
    """Background-only N(0, 1) significance plus a 10 sigma source, excluded by a circle,
    and the other products of a run (positive, with their typical magnitudes)."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    r2 = (x - nx / 2) ** 2 + (y - ny / 2) ** 2
    significance = rng.normal(0, 1, shape) + 10 * np.exp(-r2 / (2 * 4.0**2))
    significance[:4] = np.nan  # no exposure in the bottom rows
    excess = 15 * significance
    exclusion = (r2 > 15**2).astype(float)  # 1 = used for background
    base = 1 + np.exp(-r2 / (2 * 30.0**2))
    return {"SIGNIFICANCE": significance, "EXCESS": excess, "EXCLUSION": exclusion,
            "COUNTS": 100 * base + excess, "BACKGROUND": 100 * base, "ALPHA": 0.003 * base,
            "FLUX": 1e-12 * significance, "EXPOSURE": 3e9 * base, "LIVETIME": 3e4 * base}


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


def _overlap(a, b):
    """Whether two matplotlib Bboxes overlap (more than touching)."""
    return a.x0 < b.x1 - 1e-9 and b.x0 < a.x1 - 1e-9 and a.y0 < b.y1 - 1e-9 and b.y0 < a.y1 - 1e-9


# --------------------------------------------------------------------------- a run's figures


@pytest.mark.parametrize("frame", ["icrs", "galactic"])
def test_make_figures_writes_every_figure_of_the_run(tmp_path, frame):
    maps = make_maps()
    wcs = make_wcs(frame)
    fit = fit_gaussian(maps["SIGNIFICANCE"][maps["EXCLUSION"] > 0.5])
    summary = {"n_obs": 3, "off_distribution": fit}

    written = make_figures(tmp_path / "out", maps, wcs, summary, 0.5, 0.8,
                           energy_range_tev=(1, 10), correlation_radius_deg=0.1)

    assert list(written) == list(FIGURES)  # every product present: every figure, in order
    for name, path in written.items():
        assert path == tmp_path / "out" / f"{name}.png"
        assert_good_png(path)


def test_figures_follow_the_products_present(tmp_path):
    """A figure per product in the maps: no flux map (point-like IRFs), no flux figure."""
    maps = make_maps()
    del maps["FLUX"], maps["LIVETIME"]
    written = make_figures(tmp_path, maps, make_wcs(), {}, None, None)
    assert "flux" not in written and "livetime" not in written
    assert {"significance", "excess", "significance_distribution", "exclusion",
            "counts", "exposure"} <= set(written)
    for path in written.values():
        assert_good_png(path)


def test_titles_state_energy_range_and_correlation_radius():
    maps = make_maps()
    tasks = figure_tasks(maps, make_wcs(), summary={"n_obs": 1}, fit={},
                         energy_range_tev=(0.5, 10), correlation_radius_deg=0.04)
    subtitles = {name: kwargs["subtitle"] for name, _, _, kwargs in tasks}
    for name, text in subtitles.items():
        assert "0.5\u201310 TeV" in text and "1 observation" in text, name
        per_radius = FIGURES[name].per_radius
        assert ("correlation radius 0.04\u00b0" in text) == per_radius, name
    # the stacked maps do not depend on the correlation, the correlated ones do
    assert not FIGURES["exposure"].per_radius and not FIGURES["livetime"].per_radius
    assert FIGURES["counts"].per_radius and FIGURES["flux"].per_radius


def test_further_radius_figures_have_a_suffix_and_only_correlated_maps(tmp_path):
    maps = make_maps()
    tasks = figure_tasks(maps, make_wcs(), fit={}, correlation_radius_deg=0.2,
                         suffix="_0.2deg", per_radius_only=True)
    names = [t[0] for t in tasks]
    assert "significance_0.2deg" in names and "flux_0.2deg" in names
    assert not any(n.startswith(("exposure", "livetime")) for n in names)
    assert all(str(t[2]).endswith(f"{t[0]}.png") for t in tasks)


def test_frame_labels_follow_the_map_frame():
    assert _frame_labels(make_wcs("icrs")) == ("Right ascension (ICRS)", "Declination (ICRS)")
    assert _frame_labels(make_wcs("galactic")) == (
        "Galactic longitude l",
        "Galactic latitude b",
    )


# --------------------------------------------------------------------------- labels


def test_units_become_readable_labels():
    assert format_unit("cm-2 s-1") == "cm\u207b\u00b2 s\u207b\u00b9"
    assert format_unit("m2 s") == "m\u00b2 s"
    assert format_unit("count") == "counts"
    assert format_unit("") == ""
    assert product_label("FLUX") == "Integral flux [cm\u207b\u00b2 s\u207b\u00b9]"
    assert product_label("FLUX", -12) == "Integral flux [10\u207b\u00b9\u00b2 cm\u207b\u00b2 s\u207b\u00b9]"
    assert product_label("LIVETIME") == "Live time [h]"
    assert product_label("SIGNIFICANCE") == "Significance [\u03c3]"


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_every_product_label_carries_its_unit(name):
    """Every map of the product table gets a label with its unit (from the table, or the
    display unit: hours for LIVETIME, sigma for SIGNIFICANCE)."""
    factor, shown = figures._display(name)
    label = product_label(name)
    if PRODUCTS[name].unit and name not in figures._DISPLAY_UNITS:
        assert shown == PRODUCTS[name].unit
    if shown:
        assert label.endswith(f"[{format_unit(shown)}]"), label
    else:
        assert "[" not in label


def test_colour_bar_label_has_the_unit_and_power_of_ten(tmp_path):
    """The flux figure's colour bar: the unit of the product table, scaled to readable
    numbers (the data divided by the power of ten shown in the label)."""
    from matplotlib.colors import Normalize

    maps = make_maps()
    wcs = make_wcs()
    flux = maps["FLUX"]
    exponent = figures._power_of_ten(flux)
    assert exponent == -11  # peak ~1e-11
    m = figures.map_figure(flux / 10.0**exponent, wcs, label=product_label("FLUX", exponent),
                           cmap="inferno", norm=Normalize(-1, 1))
    cbar_label = m.colorbar.label
    assert "cm\u207b\u00b2 s\u207b\u00b9" in cbar_label and "10\u207b\u00b9\u00b9" in cbar_label


# --------------------------------------------------------------------------- draw_map


def test_draw_map_on_wcsaxes_with_colour_bar_and_contour():
    from matplotlib.figure import Figure

    maps = make_maps()
    wcs = make_wcs()
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot(projection=wcs)
    image = draw_map(ax, maps["EXPOSURE"], wcs, label=product_label("EXPOSURE"),
                     exclusion=maps["EXCLUSION"])
    assert image.colorbar.ax.get_ylabel() == "Exposure [m\u00b2 s]"
    assert len(ax.collections) == 1  # the dashed exclusion contour
    assert ax.coords[0].get_axislabel() == "Right ascension (ICRS)"
    fig.canvas.draw()


def test_draw_map_downsamples_big_maps_to_the_axes_resolution():
    """A map with many more pixels than the axes is averaged over blocks before drawing,
    and still spans the whole map."""
    from matplotlib.figure import Figure

    shape = (1200, 1500)
    data = np.arange(shape[0] * shape[1], dtype=float).reshape(shape)
    wcs = make_wcs(shape=shape, binsize=0.002)
    fig = Figure(figsize=(4, 3.2), dpi=100)
    ax = fig.add_axes([0.1, 0.1, 0.6, 0.8], projection=wcs)
    image = draw_map(ax, data, wcs, label="x")
    shown = image.get_array()
    assert shown.shape[0] < shape[0] / 3 and shown.shape[1] < shape[1] / 3
    x0, x1, y0, y1 = image.get_extent()
    assert x0 == -0.5 and y0 == -0.5 and x1 >= shape[1] - 0.5 and y1 >= shape[0] - 0.5
    assert ax.get_xlim() == (-0.5, shape[1] - 0.5)
    # block means: the first shown pixel is the mean of the first block
    factor = round(shape[1] / shown.shape[1])
    assert shown[0, 0] == pytest.approx(data[:factor, :factor].mean())


def test_block_mean_ignores_nan_and_pads_edges():
    data = np.arange(30, dtype=float).reshape(5, 6)
    data[0, 0] = np.nan
    data[3:, 4:] = np.nan  # a whole (padded) edge block
    out = figures._block_mean(data, 2)
    assert out.shape == (3, 3)
    assert out[0, 0] == pytest.approx(np.nanmean(data[:2, :2]))
    assert np.isnan(out[2, 2])
    assert out[2, 0] == pytest.approx(data[4, :2].mean())


def test_write_png_round_trips():
    from matplotlib.image import imread

    rgb = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = write_png(Path(folder) / "x.png", rgb)
        assert png_size(path) == (53, 37)
        np.testing.assert_array_equal((imread(path) * 255).round().astype(np.uint8), rgb)


# --------------------------------------------------------------------------- layouts


def test_wide_survey_map_is_cut_into_strips_of_sensible_size():
    """A 110 x 10 deg Galactic survey map at 0.02 deg (5500 x 500 px)."""
    layout = map_layout((500, 5500), 0.02, panel_deg=1.7)
    assert len(layout.strips) == 3
    assert layout.strips[0][0] == 0 and layout.strips[-1][1] == 5500
    assert all(a[1] == b[0] for a, b in zip(layout.strips, layout.strips[1:]))
    assert all((x1 - x0) / 500 <= figures.MAX_STRIP_RATIO for x0, x1 in layout.strips)
    width, height = layout.size_in
    assert 8 < width < 18 and 5 < height < 16
    # strips stacked top to bottom, inside the figure, not overlapping
    bottoms = [rect[1] for rect in layout.axes]
    assert bottoms == sorted(bottoms, reverse=True)
    for upper, lower in zip(layout.axes, layout.axes[1:]):
        assert lower[1] + lower[3] < upper[1]
    assert all(0 <= r[0] and r[0] + r[2] <= 1 and 0 <= r[1] and r[1] + r[3] <= 1
               for r in layout.axes + [layout.colorbar, layout.panel])


@pytest.mark.parametrize("shape", [(150, 150), (500, 5500), (400, 100), (60, 400)])
def test_map_axes_keep_the_map_aspect(shape):
    """Square pixels: each strip's axes has the aspect of its pixel range (so WCSAxes does
    not shrink it), whatever the map's shape."""
    layout = map_layout(shape, 0.02)
    width_in, height_in = layout.size_in
    for rect, (x0, x1) in zip(layout.axes, layout.strips):
        axes_ratio = (rect[2] * width_in) / (rect[3] * height_in)
        assert axes_ratio == pytest.approx((x1 - x0) / shape[0], rel=1e-6)
    assert 3 < width_in < 18 and 3 < height_in < 16


def test_wide_map_figure_is_written_with_a_sensible_size(tmp_path):
    shape = (500, 5500)
    rng = np.random.default_rng(0)
    data = rng.normal(size=shape)
    exclusion = np.ones(shape, bool)
    exclusion[200:300, 1000:1100] = False
    path = plot_map(tmp_path / "wide.png", data, make_wcs("galactic", shape), label="x",
                    title="wide", exclusion=exclusion)
    width, height = png_size(path)
    assert 1000 < width < 2200 and 600 < height < 1800  # not 5500 px wide, not 200 px tall


def test_ring_panel_is_beside_the_map_not_over_it():
    """The ring for scale is drawn in its own axes, outside the map (and colour bar), at
    the map's angular scale when it fits."""
    maps = make_maps(shape=(150, 150))
    wcs = make_wcs(shape=(150, 150))
    m = significance_figure(maps["SIGNIFICANCE"], wcs, maps["EXCLUSION"], 0.5, 0.8,
                            correlation_radius_deg=0.04)
    fig = m.fig
    fig.canvas.draw()
    panel = fig.axes[-1]
    assert panel not in m.axes
    panel_box = panel.get_window_extent()
    # the map axes and the colour bar (with its labels)
    for box in [ax.get_window_extent() for ax in m.axes] + [m.colorbar.get_window_extent()]:
        assert not _overlap(panel_box, box)
    assert not m.axes[0].patches  # nothing of the ring on the map
    # same scale: one degree spans as many screen pixels in the panel as on the map
    map_tr, panel_tr = m.axes[0].transData, panel.transData
    one_deg_map = map_tr.transform([1 / 0.02, 0])[0] - map_tr.transform([0, 0])[0]
    one_deg_panel = panel_tr.transform([1, 0])[0] - panel_tr.transform([0, 0])[0]
    assert one_deg_panel == pytest.approx(one_deg_map, rel=0.02)


def test_ring_larger_than_the_panel_is_drawn_smaller_and_said_so(tmp_path):
    maps = make_maps(shape=(40, 60))
    wcs = make_wcs("icrs", shape=(40, 60), projection="TAN")
    m = significance_figure(maps["SIGNIFICANCE"], wcs, maps["EXCLUSION"], 1.5, 2.5)
    texts = [t.get_text() for t in m.fig.axes[-1].texts]
    assert any("\u00d7 map scale" in t for t in texts)
    path = plot_significance(tmp_path / "sig.png", maps["SIGNIFICANCE"], wcs,
                             maps["EXCLUSION"].astype(bool), r_in_deg=0.7, r_out_deg=1.0)
    assert_good_png(path, min_bytes=10_000)


# --------------------------------------------------------------------------- special figures


def test_exclusion_figure_marks_catalogue_sources_in_any_frame(tmp_path):
    maps = make_maps()
    wcs = make_wcs("galactic")
    m = figures.map_figure(maps["SIGNIFICANCE"], wcs, label="s", cmap="Greys",
                           norm=figures._percentile_norm(maps["SIGNIFICANCE"]))
    lon, lat = wcs.wcs_pix2world([[60, 45]], 0)[0]
    from ringbg.geom import to_frame

    ra, dec = to_frame(lon, lat, "galactic", "icrs")
    sources = [{"name": "A", "lon": float(lon), "lat": float(lat), "frame": "galactic"},
               {"name": "B", "lon": float(ra), "lat": float(dec), "frame": "icrs"},
               {"name": "far", "lon": 10.0, "lat": 40.0, "frame": "galactic"}]
    assert figures._draw_sources(m, wcs, sources) == 3
    (line,) = m.axes[0].lines
    xy = np.column_stack(line.get_data())
    assert xy.shape == (2, 2)  # the one far away is off the map
    np.testing.assert_allclose(xy, [[60, 45], [60, 45]], atol=1e-6)
    path = figures.plot_exclusion(tmp_path / "x.png", maps["SIGNIFICANCE"], maps["EXCLUSION"],
                                  wcs, sources=sources)
    assert_good_png(path)


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
        plot_map(tmp_path / "m.png", nan_map, wcs, label="x", exclusion=all_used),
        figures.plot_exclusion(tmp_path / "x.png", nan_map, all_used, wcs),
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
    maps = {k: v for k, v in make_maps().items()
            if k in ("SIGNIFICANCE", "EXCESS", "EXCLUSION")}
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


# --------------------------------------------------------------------------- frames


def test_prepared_frames_are_the_ones_the_figures_use(tmp_path, monkeypatch):
    """prepare_frames draws (ahead of the maps) exactly the coordinate frames that the map
    figures of that geometry lay over their drawing: rendering them draws no new frame."""
    monkeypatch.setattr(figures, "_FRAMES", {})
    maps, wcs = make_maps(), make_wcs()
    figures.prepare_frames(wcs, maps["SIGNIFICANCE"].shape,
                           (None, figures.ring_panel_deg(0.8)))
    prepared = dict(figures._FRAMES)
    assert len(prepared) == 3  # map figures with and without the grid, the ring panel's
    written = make_figures(tmp_path, maps, wcs, {"n_obs": 2}, 0.5, 0.8, workers=1)
    assert "significance" in written and "counts" in written and "excess" in written
    assert figures._FRAMES.keys() == prepared.keys()
    assert all(figures._FRAMES[k] is prepared[k] for k in prepared)


@pytest.mark.parametrize("shape", [(90, 120), (60, 1000), (300, 80)])
def test_coordinate_frame_lies_on_the_map_axes(shape):
    """The frame drawn by WCSAxes alone, laid over the figure, sits on the plain axes the
    map is drawn on (its black border on their edges), strip by strip."""
    import io

    from matplotlib.image import imread

    data = np.full(shape, 0.5)
    wcs = make_wcs(shape=shape)
    m = figures.map_figure(data, wcs, label="x", cmap="viridis",
                           norm=__import__("matplotlib.colors").colors.Normalize(0, 1),
                           title="t", grid=False)
    png = io.BytesIO()
    figures._save_map(m, png)
    rgb = (imread(io.BytesIO(png.getvalue())) * 255).round()
    height = rgb.shape[0]
    dark = rgb.max(axis=2) < 80
    for ax in m.axes:
        box = ax.get_window_extent()
        x0, x1 = int(round(box.x0)), int(round(box.x1))
        top, bottom = height - int(round(box.y1)), height - int(round(box.y0))
        rows = slice(top + 5, bottom - 5)
        left = dark[rows, x0 - 1:x0 + 2].any(axis=1).mean()
        right = dark[rows, x1 - 2:x1 + 1].any(axis=1).mean()
        inside = dark[rows, (x0 + x1) // 2].mean()
        assert left > 0.95 and right > 0.95 and inside < 0.05, (left, right, inside)
        cols = slice(x0 + 5, x1 - 5)
        assert dark[top - 1:top + 2, cols].any(axis=0).mean() > 0.95
        assert dark[bottom - 2:bottom + 1, cols].any(axis=0).mean() > 0.95


def _matplotlib_colour_bar(size_in, rect, cmap, norm, label, extend):
    from matplotlib.cm import ScalarMappable

    fig = figures._new_figure(size_in)
    cax = fig.add_axes(rect)
    cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, extend=extend)
    cbar.set_label(label)
    fig.canvas.draw()
    ticks = [(t.get_loc(), t.label2.get_text()) for t in cax.yaxis._update_ticks()]
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int), ticks, \
        cax.yaxis.get_offset_text().get_text()


@pytest.mark.parametrize("vmin, vmax, extend, cmap, height_in", [
    (0.0, 1.0, "neither", "viridis", 4.0), (-7.0, 7.0, "both", "RdBu_r", 5.4),
    (0.2, 3.3e3, "max", "magma", 3.0), (-1.3e-3, 2.7e-2, "min", "inferno", 6.5),
    (1801.0, 1853.0, "neither", "cividis", 4.5), (5.0, 5.0, "both", "viridis", 2.0),
    (-2.5, -0.1, "max", "Greys", 1.2), (1e-7, 3e-7, "neither", "viridis", 8.0)])
def test_colour_bar_draws_what_matplotlibs_colour_bar_draws(vmin, vmax, extend, cmap,
                                                            height_in):
    """The colour bar of the map figures, drawn without axes, has the ticks, tick labels,
    offset, extensions, colours and label of matplotlib's Colorbar in the same place,
    pixel for pixel."""
    from matplotlib.colors import Normalize

    size_in, rect = (3.0, height_in + 1.0), [0.3, 0.5 / (height_in + 1), 0.08,
                                              height_in / (height_in + 1)]
    label = "Flux (10\u207b\u00b9\u00b9 cm\u207b\u00b2 s\u207b\u00b9)"
    fig = figures._new_figure(size_in)
    bar = figures._colour_bar(fig, rect, figures._cmap(cmap), Normalize(vmin, vmax), label,
                              extend)
    fig.canvas.draw()
    ours = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)
    theirs, ticks, offset = _matplotlib_colour_bar(size_in, rect, figures._cmap(cmap),
                                                   Normalize(vmin, vmax), label, extend)
    values, labels, our_offset = bar.ticks
    assert [text for _, text in ticks] == list(labels)
    np.testing.assert_allclose(values, [loc for loc, _ in ticks], rtol=1e-12, atol=1e-300)
    assert our_offset == offset
    assert ours.shape == theirs.shape
    differ = np.abs(ours - theirs).max(axis=2) > 2
    assert differ.sum() <= 4, differ.sum()
    assert bar.get_window_extent().x1 > fig.transFigure.transform(
        (rect[0] + rect[2], 0))[0] + 10  # the labels are in its extent


def test_colour_bar_ticks_follow_matplotlibs_for_any_range():
    """`colourbar_ticks` (no axes) chooses the ticks and labels matplotlib's colour bar
    axis draws, over ranges of every size and sign."""
    from matplotlib.colors import Normalize

    rng = np.random.default_rng(3)
    for _ in range(25):
        centre = rng.normal() * 10.0 ** rng.integers(-8, 8)
        span = abs(rng.normal()) * 10.0 ** rng.integers(-9, 6)
        height_in = float(rng.uniform(1.0, 9.0))
        size_in, rect = (2.0, height_in + 1), [0.3, 0.5 / (height_in + 1), 0.1,
                                                height_in / (height_in + 1)]
        _, ticks, offset = _matplotlib_colour_bar(size_in, rect, figures._cmap("viridis"),
                                                  Normalize(centre, centre + span), "x",
                                                  "neither")
        values, labels, our_offset = figures.colourbar_ticks(centre, centre + span,
                                                             height_in * 72)
        assert list(labels) == [text for _, text in ticks], (centre, span, height_in)
        assert our_offset == offset


def test_map_figure_draws_what_a_wcsaxes_draws():
    """The map on plain axes with the coordinate frame laid over it is the figure WCSAxes
    draws (draw_map on the same layout), but for a few pixels where the grid crosses the
    exclusion contour (WCSAxes draws the contour over the grid)."""
    import io

    from matplotlib.colors import Normalize
    from matplotlib.image import imread

    maps, wcs = make_maps(), make_wcs()
    data, exclusion = maps["COUNTS"], maps["EXCLUSION"] > 0.5
    norm = Normalize(50, 300)
    m = figures.map_figure(data, wcs, label="counts", cmap="magma", norm=norm,
                           exclusion=exclusion)
    png = io.BytesIO()
    figures._save_map(m, png)
    framed = (imread(io.BytesIO(png.getvalue())) * 255).round()
    fig = figures._new_figure(m.layout.size_in)
    ax = fig.add_axes(m.layout.axes[0], projection=wcs)
    draw_map(ax, data, wcs, label="counts", cmap="magma", norm=norm, exclusion=exclusion,
             cax=fig.add_axes(m.layout.colorbar))
    fig.canvas.draw()
    reference = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float)
    assert framed.shape == reference.shape
    differ = np.abs(framed - reference).max(axis=2) > 2
    assert differ.sum() < 100, differ.sum()


def test_legends_cover_the_coordinate_grid():
    """As WCSAxes draws them, legends lie over the grid: the frame's pixels inside a
    legend are not laid over the figure."""
    import io

    maps, wcs = make_maps(), make_wcs()
    m = figures.significance_figure(maps["SIGNIFICANCE"], wcs, maps["EXCLUSION"] > 0.5)
    figures._legend(m.axes[0], figures._exclusion_handle(maps["EXCLUSION"] > 0.5))
    m.fig.canvas.draw()
    plain = np.asarray(m.fig.canvas.buffer_rgba())[..., :3].copy()
    png = io.BytesIO()
    figures._save_map(m, png)
    from matplotlib.image import imread

    framed = (imread(io.BytesIO(png.getvalue())) * 255).round().astype(np.uint8)
    box = m.axes[0].get_legend().get_window_extent()
    height = plain.shape[0]
    rows = slice(height - int(box.y1) + 1, height - int(box.y0) - 1)
    cols = slice(int(box.x0) + 1, int(box.x1) - 1)
    np.testing.assert_array_equal(framed[rows, cols], plain[rows, cols])
    assert (framed != plain).any()  # the frame is there elsewhere


@pytest.mark.parametrize("shape, x_range", [((90, 120), (0, 120)), ((37, 301), (100, 250)),
                                            ((160, 41), (0, 41))])
def test_pixel_image_draws_what_imshow_draws(shape, x_range):
    """A map not downsampled is drawn pixel for pixel as matplotlib's imshow ("nearest")
    draws it, NaN included, for a strip of a wider map too (matplotlib >= 3.11; older
    versions get imshow itself)."""
    from matplotlib.colors import Normalize

    if not figures._pixel_images_match_imshow():
        fig = figures._new_figure((6, 5))
        ax = fig.add_axes([0.1, 0.1, 0.6, 0.8])
        figures._draw_image(ax, np.zeros(shape), x_range, figures._cmap("magma"),
                            Normalize(-2, 2))
        assert len(ax.images) == 1  # imshow
        return

    data = np.random.default_rng(1).normal(size=shape)
    data[3:9, 5:30] = np.nan
    cmap, norm = figures._cmap("magma"), Normalize(-2, 2)
    x0, x1 = x_range
    rect = [0.1, 0.1, 0.6, 0.8]
    buffers = []
    for pixel in (True, False):
        fig = figures._new_figure((6, 5))
        ax = fig.add_axes(rect)
        ax.set_axis_off()
        ax.set_aspect("equal")  # as map_figure's axes (and imshow's default)
        if pixel:
            mappable, factor = figures._draw_image(ax, data, x_range, cmap, norm)
            assert factor == 1 and not ax.images and mappable.norm is norm
        else:
            ax.imshow(data[:, x0:x1], origin="lower", cmap=cmap, norm=norm,
                      interpolation="nearest", interpolation_stage="data",
                      extent=(x0 - 0.5, x1 - 0.5, -0.5, shape[0] - 0.5))
            ax.set_xlim(x0 - 0.5, x1 - 0.5)
            ax.set_ylim(-0.5, shape[0] - 0.5)
        fig.canvas.draw()
        buffers.append(np.asarray(fig.canvas.buffer_rgba()).copy())
    assert (buffers[0] != 255).any()
    np.testing.assert_array_equal(buffers[0], buffers[1])


def test_log_axis_minor_ticks_are_one_line_of_tick_markers():
    from matplotlib.ticker import NullLocator

    fig = figures._new_figure((4, 3))
    ax = fig.add_axes([0.2, 0.2, 0.7, 0.7])
    ax.set_yscale("log")
    ax.set_ylim(1.5e-3, 2.0)
    figures._log_minor_ticks(ax)
    assert isinstance(ax.yaxis.get_minor_locator(), NullLocator)
    (line,) = ax.lines
    expected = [k * 10.0**d for d in (-3, -2, -1, 0) for k in range(2, 10)
                if 1.5e-3 <= k * 10.0**d <= 2.0]
    np.testing.assert_allclose(line.get_ydata(), expected)
    assert not line.get_clip_on()
    assert ax.get_ylim() == pytest.approx((1.5e-3, 2.0))


# --------------------------------------------------------------------------- rendering


def test_renderer_processes_draw_the_same_bytes_as_this_process(tmp_path):
    maps = make_maps()
    wcs = make_wcs()
    here = make_figures(tmp_path / "here", maps, wcs, {"n_obs": 2}, 0.5, 0.8, workers=1)
    there = make_figures(tmp_path / "there", maps, wcs, {"n_obs": 2}, 0.5, 0.8, workers=2)
    assert list(here) == list(there) == list(FIGURES)
    for name in here:
        assert here[name].read_bytes() == there[name].read_bytes(), name


def test_started_renderer_draws_the_figures(tmp_path):
    renderer = figures.start_renderer(2)
    assert figures.start_renderer() is renderer  # one per process
    maps = make_maps()
    written = make_figures(tmp_path / "r", maps, make_wcs(), {}, 0.5, 0.8)
    here = make_figures(tmp_path / "h", maps, make_wcs(), {}, 0.5, 0.8, workers=1)
    assert list(written) == list(here)
    for name in written:
        assert written[name].read_bytes() == here[name].read_bytes(), name
    figures.stop_renderer()
    assert not renderer._process.is_alive() and figures._renderer is None


def test_a_job_nobody_collected_does_not_answer_the_next(tmp_path):
    """A run that failed after handing its figures to the renderer leaves their result in
    the pipe: the next run gets its own figures, not those."""
    renderer = figures.start_renderer(2)
    maps = make_maps()
    first = figure_tasks(maps, make_wcs(), fit={}, names=["counts", "alpha"])
    second = figure_tasks(maps, make_wcs(), fit={}, names=["exposure", "livetime"])
    figures.start_render(first)  # never collected
    written = figures.start_render(second).result(tmp_path)
    assert set(written) == {"exposure", "livetime"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exposure.png", "livetime.png"]
    assert renderer.usable
    figures.stop_renderer()


def test_jobs_waiting_in_the_pipe_are_drawn_together(tmp_path, monkeypatch):
    """Jobs that reach the renderer while it is busy are drawn in one round by the same
    workers (not each waiting for the slowest figure of the one before), and each job
    still gets its own figures, as this process draws them."""
    figures.stop_renderer()
    rounds = tmp_path / "rounds.txt"
    render_job = figures._render_job

    def counting(tasks, workers, arrived=None):  # (the renderer is forked from here)
        with open(rounds, "a") as f:
            f.write(f"{len(tasks)}\n")
        return render_job(tasks, workers, arrived)

    monkeypatch.setattr(figures, "_render_job", counting)
    maps, wcs = make_maps(), make_wcs()
    names = [["counts", "alpha"], ["exposure"], ["livetime", "excess", "background"]]
    figures.start_renderer(2)  # warming up: the three jobs wait in the pipe
    jobs = [figure_tasks(maps, wcs, fit={}, names=n) for n in names]
    pending = [figures.start_render(tasks) for tasks in jobs]
    for k, (job, tasks) in enumerate(zip(pending, jobs)):
        folder = tmp_path / f"job{k}"
        folder.mkdir()
        written = job.result(folder)
        assert sorted(written) == sorted(names[k])
        here = figures.render(tasks, tmp_path, workers=1)
        for name in written:
            assert written[name].read_bytes() == here[name].read_bytes(), name
    assert rounds.read_text().split() == ["6"]
    figures.stop_renderer()


def test_a_job_that_comes_while_the_workers_draw_joins_them(tmp_path, monkeypatch):
    """A job that reaches the renderer while its workers draw another (a run's correlated
    maps' figures while its stack's are drawn) is drawn by the same workers in the same
    round, not in a round of its own after it; its figures (pickled to the workers) are
    those this process draws."""
    import time

    figures.stop_renderer()
    log = tmp_path / "rounds.txt"
    render_job = figures._render_job

    def logging(tasks, workers, arrived=None):
        with open(log, "a") as f:
            f.write(f"round {len(tasks)}\n")

        def logged():
            late = arrived()
            if late:
                with open(log, "a") as f:
                    f.write(f"late {len(late)}\n")
            return late

        return render_job(tasks, workers, logged if arrived is not None else None)

    monkeypatch.setattr(figures, "_render_job", logging)
    shape = (500, 500)
    maps, wcs = make_maps(shape), make_wcs(shape=shape)
    figures.start_renderer(2)
    figures.render(figure_tasks(maps, wcs, fit={}, names=["alpha"]), tmp_path)  # warm, idle
    first = figure_tasks(maps, wcs, fit={}, names=["counts", "background", "flux", "alpha",
                                                   "exposure", "livetime", "excess"])
    late = figure_tasks(make_maps(shape, seed=1), wcs, fit={"mean": 0.0, "sigma": 1.0},
                        names=["significance_distribution", "counts"])
    pending = figures.start_render(first)
    deadline = time.monotonic() + 60
    while "round 7" not in log.read_text():  # the workers draw the first job
        assert time.monotonic() < deadline
        time.sleep(0.002)
    pending_late = figures.start_render(late)
    assert sorted(pending.result(tmp_path)) == sorted(task[0] for task in first)
    folder = tmp_path / "late"
    folder.mkdir()
    written = pending_late.result(folder)
    assert log.read_text().split("\n")[1:] == ["round 7", "late 2", ""]
    (tmp_path / "here").mkdir()
    here = figures.render(late, tmp_path / "here", workers=1)
    assert sorted(written) == ["counts", "significance_distribution"]
    for name in written:
        assert written[name].read_bytes() == here[name].read_bytes(), name
    figures.stop_renderer()


def test_jobs_bigger_than_the_pipe_follow_each_other(tmp_path):
    """Two jobs of big maps handed to the renderer at once (the stack's figures, then the
    others): the second waits in the pipe while the first is drawn, and the first's PNGs
    come back meanwhile (a run used to wait for the second to get into the pipe before
    reading, while the renderer waited for it to read the first's)."""
    code = f"""
import sys
sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r})
from test_figures import make_maps, make_wcs
import ringbg.figures as figures
from ringbg.figures import figure_tasks
import numpy as np
renderer = figures.start_renderer(2)
maps, wcs = make_maps(shape=(700, 700)), make_wcs(shape=(700, 700))
noise = np.random.default_rng(1).uniform(1, 2, (700, 700))  # PNGs of megabytes
maps.update({{name: noise for name in ("EXPOSURE", "LIVETIME", "COUNTS", "ALPHA")}})
first = figures.start_render(figure_tasks(maps, wcs, fit={{}}, names=["exposure", "livetime"]))
second = figures.start_render(figure_tasks(maps, wcs, fit={{}}, names=["counts", "alpha"]))
assert set(first.result({str(tmp_path)!r})) == {{"exposure", "livetime"}}
assert set(second.result({str(tmp_path)!r})) == {{"counts", "alpha"}}
assert renderer.usable
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "alpha.png", "counts.png", "exposure.png", "livetime.png"]


def test_a_dead_renderer_is_not_used(tmp_path):
    renderer = figures.start_renderer(2)
    renderer._process.kill()
    renderer._process.join()
    assert not renderer.usable
    written = make_figures(tmp_path, make_maps(), make_wcs(), {}, names=["counts", "alpha"])
    assert set(written) == {"counts", "alpha"}
    for path in written.values():
        assert_good_png(path)
    figures.stop_renderer()


def test_a_renderer_dying_during_the_job_is_replaced_by_workers(tmp_path, caplog,
                                                                monkeypatch):
    def dies(self, job=None):
        self._process.kill()
        raise EOFError("renderer gone")

    caplog.set_level("WARNING", logger="ringbg.figures")
    figures.start_renderer(2)
    monkeypatch.setattr(figures.Renderer, "collect", dies)
    written = make_figures(tmp_path, make_maps(), make_wcs(), {}, names=["counts", "alpha"])
    assert set(written) == {"counts", "alpha"}
    for path in written.values():
        assert_good_png(path)
    assert "drawing the figures without it" in caplog.text
    assert figures._renderer is None


def test_a_job_that_cannot_reach_the_renderer_is_drawn_without_it(tmp_path, caplog,
                                                                  monkeypatch):
    """The job is written into the renderer's pipe by a thread: what stops it there (the
    renderer gone meanwhile) comes out when the figures are collected, and they are drawn
    without the renderer."""
    caplog.set_level("WARNING", logger="ringbg.figures")
    renderer = figures.start_renderer(2)

    def broken(data):
        raise BrokenPipeError("renderer gone")

    monkeypatch.setattr(renderer._conn, "send_bytes", broken)
    pending = figures.start_render(figure_tasks(make_maps(), make_wcs(), fit={},
                                                names=["counts", "alpha"]))
    written = pending.result(tmp_path)
    assert set(written) == {"counts", "alpha"}
    for path in written.values():
        assert_good_png(path)
    assert "drawing the figures without it" in caplog.text
    assert figures._renderer is None


def test_failing_workers_fall_back_to_this_process(tmp_path, caplog, monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    def broken(tasks, workers):
        raise BrokenProcessPool("killed")

    caplog.set_level("WARNING", logger="ringbg.figures")
    monkeypatch.setattr(figures, "_render_job", broken)
    written = make_figures(tmp_path, make_maps(), make_wcs(), {}, names=["counts", "alpha"])
    assert set(written) == {"counts", "alpha"}
    assert "drawing the figures in this process" in caplog.text


def test_interrupted_workers_are_gone_when_render_returns(tmp_path, monkeypatch,
                                                         sigint_default):
    """Ctrl-C while the workers draw: the figures not started are dropped, the ones being
    drawn finish (the workers write no file; killed halfway through handing back a PNG, a
    worker once left the executor waiting for the rest of it for ever), and the workers are
    gone before the interrupt goes on."""
    import multiprocessing
    import threading
    import os
    import signal

    tasks = figure_tasks(make_maps((400, 400)), make_wcs(shape=(400, 400)), fit={})
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        for _ in range(50):  # more than 0.3 s of drawing
            figures._render_job(tasks, 2)
    timer.cancel()
    assert multiprocessing.active_children() == []


def test_making_figures_does_not_load_matplotlib_in_the_caller(tmp_path):
    """The caller hands the maps to the renderer processes: matplotlib (~0.4 s of imports)
    stays out of the run's process, and importing ringbg.figures is cheap."""
    code = f"""
import sys, numpy as np
sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r})
from test_figures import make_maps, make_wcs
import ringbg.figures as figures
assert "matplotlib" not in sys.modules
written = figures.make_figures({str(tmp_path)!r}, make_maps(), make_wcs(), {{}}, 0.5, 0.8)
assert len(written) == {len(FIGURES)}, written
assert "matplotlib" not in sys.modules, "matplotlib imported by the caller"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(list(tmp_path.glob("*.png"))) == len(FIGURES)


def test_the_renderer_warms_up_without_importing_pytest(tmp_path):
    """astropy's WCSAxes imports pytest when it is installed (a tenth of a second of the
    renderer's start-up): the renderer imports WCSAxes without it, and leaves pytest
    importable."""
    code = f"""
import sys
from astropy.wcs import WCS
import ringbg.figures as figures
wcs = WCS(naxis=2)
wcs.wcs.ctype = ["GLON-CAR", "GLAT-CAR"]
wcs.wcs.cdelt = [-0.02, 0.02]
wcs.wcs.crpix = [75.5, 75.5]
figures.warm_up()
figures.prepare_frames(wcs, (150, 150))
assert "astropy.visualization.wcsaxes" in sys.modules
assert "pytest" not in sys.modules, sys.modules.get("pytest")
import pytest
assert pytest.__name__ == "pytest"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_no_renderer_where_processes_cannot_be_forked(tmp_path, monkeypatch):
    """macOS and Windows: no renderer, the figures are drawn in the calling process."""
    figures.stop_renderer()
    monkeypatch.setattr(figures.sys, "platform", "darwin")
    assert figures.start_renderer() is None
    written = make_figures(tmp_path, make_maps(), make_wcs(), {}, names=["counts", "alpha"])
    assert set(written) == {"counts", "alpha"}


@pytest.mark.parametrize("shape", [(150, 150), (500, 5500)])
def test_ring_panel_and_its_text_fit_in_the_figure(shape):
    wcs = make_wcs("galactic", shape)
    m = significance_figure(np.zeros(shape), wcs, None, 0.5, 0.8, correlation_radius_deg=0.1,
                            r_out_max_deg=1.2)
    fig = m.fig
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    panel = fig.axes[-1]
    for text in panel.texts:
        box = text.get_window_extent(renderer)
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and box.y1 <= page.y1, text.get_text()
    for ax in m.axes:
        assert not _overlap(panel.get_window_extent(), ax.get_window_extent())
