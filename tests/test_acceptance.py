"""Unit tests of the data template functions (synthetic flat-sky cutouts, numpy only)."""

import numpy as np
import pytest

from ringbg import acceptance as dt

BINSIZE_DEG = 0.02


def cutout(n=200, centre=(100.0, 100.0), binsize_deg=BINSIZE_DEG):
    """Pixel offsets (deg) from a pointing at pixel ``centre`` and pixel solid angles (sr)
    of an n x n flat-sky cutout."""
    y, x = np.mgrid[0:n, 0:n].astype(float)
    offset = np.hypot(x - centre[0], y - centre[1]) * binsize_deg
    omega = np.full((n, n), np.radians(binsize_deg) ** 2)
    return offset, omega


def gaussian_density(offset_deg, sigma_deg=1.0, norm=1e9):
    return norm * np.exp(-0.5 * (offset_deg / sigma_deg) ** 2)


def expected_counts(offset, omega, n_energy=3, scale=(1.0, 0.5, 0.2)):
    """Noise-free 'counts': density x solid angle, one Gaussian shape in every bin."""
    image = gaussian_density(offset) * omega
    return np.stack([s * image for s in scale[:n_energy]])


def disk(offset_shape, cx, cy, radius_px):
    y, x = np.mgrid[0:offset_shape[0], 0:offset_shape[1]]
    return np.hypot(x - cx, y - cy) < radius_px


def test_fine_edges_end_at_offset_max():
    edges = dt.fine_offset_edges_deg(1.05, 0.1)
    assert edges[0] == 0 and edges[-1] == 1.05 and len(edges) == 12
    assert np.allclose(np.diff(edges)[:-1], 0.1)
    with pytest.raises(ValueError, match="positive"):
        dt.fine_offset_edges_deg(0.0, 0.1)


def test_histograms_count_only_usable_pixels_and_their_solid_angle():
    offset, omega = cutout(60, (30, 30))
    rng = np.random.default_rng(1)
    counts = rng.poisson(2.0, (2,) + offset.shape).astype(np.float32)
    usable = ~disk(offset.shape, 40, 30, 8)
    edges = dt.fine_offset_edges_deg(float(offset.max()) * 1.0001, 0.1)
    hist, area = dt.radial_histograms(counts, offset, omega, usable, edges)
    assert np.isclose(area.sum(), omega[usable].sum())
    np.testing.assert_allclose(hist.sum(axis=1), counts[:, usable].sum(axis=(1)))
    # one bin checked by hand
    k = 3
    sel = usable & (offset >= edges[k]) & (offset < edges[k + 1])
    assert np.isclose(area[k], omega[sel].sum())
    np.testing.assert_allclose(hist[:, k], counts[:, sel].sum(axis=1))


def test_template_predicts_the_counts_outside_the_exclusion_per_energy_bin():
    offset, omega = cutout()
    rng = np.random.default_rng(2)
    counts = rng.poisson(expected_counts(offset, omega)).astype(np.float32)
    exclusion = ~disk(offset.shape, 120, 100, 20)
    template = dt.radial_data_template(counts, offset, omega, exclusion)
    np.testing.assert_allclose(template[:, exclusion].sum(axis=1),
                               counts[:, exclusion].sum(axis=1), rtol=1e-10)
    # the excluded pixels get the template too (the ring needs their acceptance)
    assert np.all(template[:, ~exclusion] > 0)


@pytest.mark.parametrize("smoothing, interpolation", [("fit", "log"), ("nodes", "lin")])
def test_excluded_area_does_not_bias_the_shape(smoothing, interpolation):
    """Noise-free counts of a Gaussian acceptance: with a large exclusion region off the
    pointing, the template's density still follows the acceptance (the solid angle outside
    the exclusion corrects each offset bin), within the smoothing's error."""
    offset, omega = cutout()
    counts = expected_counts(offset, omega, 1) * 1.0
    exclusion = ~disk(offset.shape, 130, 100, 35)  # 0.7 deg radius, 0.6 deg off axis
    kw = {"smoothing": smoothing, "interpolation": interpolation, "min_counts_node": 2000}
    with_excl = dt.radial_data_template(counts, offset, omega, exclusion, **kw)[0]
    without = dt.radial_data_template(counts, offset, omega, None, **kw)[0]
    inner = offset < 1.5
    truth = counts[0]
    assert np.max(np.abs(with_excl[inner] / truth[inner] - 1)) < 0.02
    assert np.max(np.abs(with_excl[inner] / without[inner] - 1)) < 0.01
    # a template that ignored the excluded solid angle would be ~20 % off there
    ring = (offset > 0.4) & (offset < 0.8)
    naive = counts[0][exclusion & ring].sum() / omega[ring].sum()
    assert abs(naive / (counts[0][ring].sum() / omega[ring].sum()) - 1) > 0.1


def test_fov_edge_of_a_trimmed_cutout_does_not_bias_the_shape():
    """The pointing near the cutout's edge: offsets beyond the edge exist only on one side,
    the solid angle per offset bin says so and the density is unchanged."""
    offset, omega = cutout(200, (20.0, 100.0))
    counts = expected_counts(offset, omega, 1) * 1.0
    template = dt.radial_data_template(counts, offset, omega, min_counts_node=2000)[0]
    inner = offset < 2.0
    assert np.max(np.abs(template[inner] / counts[0][inner] - 1)) < 0.02


def test_nothing_beyond_offset_max_and_normalised_inside():
    offset, omega = cutout()
    rng = np.random.default_rng(3)
    counts = rng.poisson(expected_counts(offset, omega)).astype(np.float32)
    template = dt.radial_data_template(counts, offset, omega, offset_max_deg=1.5)
    assert np.all(template[:, offset >= 1.5] == 0)
    inside = offset < 1.5
    np.testing.assert_allclose(template[:, inside].sum(axis=1),
                               counts[:, inside].sum(axis=1), rtol=1e-10)


def test_one_node_is_the_flat_template():
    offset, omega = cutout(80, (40, 40))
    rng = np.random.default_rng(4)
    counts = rng.poisson(1.0, (2,) + offset.shape).astype(np.float32)
    exclusion = ~disk(offset.shape, 50, 40, 10)
    template = dt.radial_data_template(counts, offset, omega, exclusion,
                                       min_counts_node=1e12)
    flat = omega * counts[:, exclusion].sum(axis=1)[:, None, None] / omega[exclusion].sum()
    np.testing.assert_allclose(template, flat, rtol=1e-10)


def test_energy_bins_merged_from_the_top_until_enough_counts():
    counts = np.array([5000, 3000, 900, 500, 300, 150, 40, 10])
    group = dt.merge_energy_bins(counts, 1000)
    # top down: 10+40+150+300+500 = 1000 -> group; 900 + 3000 -> group; 5000 alone
    np.testing.assert_array_equal(group, [0, 1, 1, 2, 2, 2, 2, 2])
    for g in np.unique(group):
        assert counts[group == g].sum() >= 1000
    # groups are runs of adjacent bins
    assert np.all(np.diff(group) >= 0)


def test_energy_remainder_at_the_bottom_joins_the_group_above():
    group = dt.merge_energy_bins([100, 2000, 2000], 1000)
    np.testing.assert_array_equal(group, [0, 0, 1])


def test_too_few_counts_give_one_group_and_masked_bins_add_nothing():
    np.testing.assert_array_equal(dt.merge_energy_bins([10, 20, 30], 1000), [0, 0, 0])
    mask = np.array([False, True, True, True])
    group = dt.merge_energy_bins([5000, 600, 600, 600], 1000, mask)
    # the unsafe lowest bin's 5000 counts do not count: 600+600 then 600 joins them
    np.testing.assert_array_equal(group, [0, 0, 0, 0])


def test_each_node_has_the_minimum_counts():
    rng = np.random.default_rng(5)
    edges = dt.fine_offset_edges_deg(3.0, 0.02)
    centre = 0.5 * (edges[1:] + edges[:-1])
    area = 2 * np.pi * centre * 0.02 * 1e-4
    counts = rng.poisson(gaussian_density(centre) * area).astype(float)
    o, d, n = dt.offset_nodes(counts, area, edges, 300)
    assert len(n) > 5 and np.all(n >= 300)
    assert n.sum() == counts.sum()
    assert np.all(np.diff(o) > 0)
    # density x node solid angle = node counts
    assert np.isclose(np.sum(n / d), area.sum())


def test_node_width_limit_closes_wide_nodes_at_the_edge():
    edges = dt.fine_offset_edges_deg(3.0, 0.02)
    centre = 0.5 * (edges[1:] + edges[:-1])
    area = 2 * np.pi * centre * 0.02 * 1e-4
    counts = np.round(gaussian_density(centre, 0.8, norm=1e6) * area)
    o_free, _, _ = dt.offset_nodes(counts, area, edges, 500)
    o_lim, _, n_lim = dt.offset_nodes(counts, area, edges, 500, max_width_deg=0.3)
    assert len(o_lim) > len(o_free)
    assert np.all(n_lim >= 1)


def test_nodes_skip_bins_without_solid_angle():
    edges = np.linspace(0, 1, 11)
    counts = np.array([0, 0, 50, 50, 50, 50, 0, 0, 0, 0], float)
    area = np.array([0, 0, 1, 1, 1, 1, 1, 1, 0, 0], float)
    o, d, n = dt.offset_nodes(counts, area, edges, 100)
    np.testing.assert_allclose(n, [100, 100])
    np.testing.assert_allclose(o, [0.3, 0.6])  # the empty remainder joins
    np.testing.assert_allclose(d, [50, 25])


def test_log_interpolation_is_exact_for_an_exponential():
    x = np.array([0.2, 0.6, 1.0])
    y = 5 * np.exp(-2 * x)
    r = np.array([0.0, 0.1, 0.4, 0.8, 1.3])
    got = dt.density_at(r, x, y, "log")
    expected = 5 * np.exp(-2 * np.maximum(r, 0.2))  # constant inside the first node
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    lin = dt.density_at(np.array([0.4, 5.0]), x, y, "lin")
    assert np.isclose(lin[0], 0.5 * (y[0] + y[1])) and lin[1] == 0.0  # clipped at zero


def test_poisson_fit_recovers_a_representable_density_and_keeps_the_counts():
    """A density that the model can represent exactly (log-linear between the knots,
    constant inside the first): the fit finds it from noise-free counts, starting from
    node values that are biased (a node's mean placed at one offset)."""
    edges = dt.fine_offset_edges_deg(2.0, 0.02)
    centre = 0.5 * (edges[1:] + edges[:-1])
    area = 2 * np.pi * centre * 0.02 * 1e-4
    knots = np.array([0.2, 0.5, 0.9, 1.4, 1.8])
    values = 1e7 * np.exp(-1.5 * knots ** 2)
    counts = area * dt.density_at(centre, knots, values, "log")
    fitted = dt.fit_log_density(counts, area, edges, knots, values * 1.3)
    np.testing.assert_allclose(fitted, values, rtol=1e-6)
    rng = np.random.default_rng(6)
    noisy = rng.poisson(counts).astype(float)
    o, d, _ = dt.offset_nodes(noisy, area, edges, 200)
    fitted = dt.fit_log_density(noisy, area, edges, o, d)
    predicted = area * dt.density_at(centre, o, fitted, "log")
    assert np.isclose(predicted.sum(), noisy.sum(), rtol=1e-6)


def test_pooled_shape_is_unbiased_with_different_rates_and_exclusions():
    """Two runs, the same shape, rates 1 and 4, and different excluded solid angles per
    offset bin: the pooled shape is the true one; the plain ratio of sums is not."""
    edges = np.linspace(0, 2, 21)
    centre = 0.5 * (edges[1:] + edges[:-1])
    shape = np.exp(-centre)
    area = np.stack([np.ones(20), np.where(centre < 1, 0.2, 1.0)])
    rate = np.array([1.0, 4.0])
    counts = rate[:, None] * shape[None] * area * 1e4
    n, weight = dt.pooled_shape(counts, area)
    s = n / weight
    np.testing.assert_allclose(s / s[-1], shape / shape[-1], rtol=1e-6)
    naive = counts.sum(axis=0) / area.sum(axis=0)
    assert np.max(np.abs(naive / naive[-1] / (shape / shape[-1]) - 1)) > 0.2


def test_shared_shape_normalised_to_each_observation():
    offset, omega = cutout(100, (50, 50))
    rng = np.random.default_rng(7)
    runs = [rng.poisson(k * expected_counts(offset, omega, 2)).astype(np.float32)
            for k in (0.5, 2.0)]
    edges = dt.fine_offset_edges_deg(float(offset.max()) * 1.0001)
    hists = [dt.radial_histograms(c, offset, omega, np.ones(offset.shape, bool), edges)
             for c in runs]
    shape = dt.radial_shape(np.stack([h[0] for h in hists]), np.stack([h[1] for h in hists]),
                            edges)
    for c in runs:
        t = dt.radial_data_template(c, offset, omega, shape=shape)
        np.testing.assert_allclose(t.sum(axis=(1, 2)), c.sum(axis=(1, 2)), rtol=1e-10)
    a = dt.radial_data_template(runs[0], offset, omega, shape=shape)
    b = dt.radial_data_template(runs[1], offset, omega, shape=shape)
    ratio = a[0] / b[0]
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-10)  # one shape


def test_empty_energy_bin_gets_a_zero_template():
    offset, omega = cutout(60, (30, 30))
    counts = np.zeros((2,) + offset.shape, np.float32)
    counts[1] = np.random.default_rng(8).poisson(3.0, offset.shape)
    template = dt.radial_data_template(counts, offset, omega)
    assert np.all(template[0] == 0) and template[1].sum() == pytest.approx(counts[1].sum())


def test_poisson_fit_follows_a_steep_fall_off_that_node_means_miss():
    """Wide nodes on a steep acceptance (Gaussian, sigma 0.5 deg): a node's mean density
    placed at its mean offset is biased where the density curves; the fit is not."""
    offset, omega = cutout()
    counts = (gaussian_density(offset, 0.5) * omega)[None]
    inner = offset < 1.0

    def worst(smoothing):
        t = dt.radial_data_template(counts, offset, omega, smoothing=smoothing,
                                    min_counts_node=20000)[0]
        return np.max(np.abs(t[inner] / counts[0][inner] - 1))

    assert worst("fit") < 0.03
    assert worst("nodes") > 0.05


def test_unknown_method_names_are_refused():
    offset, omega = cutout(40, (20, 20))
    counts = np.ones((1,) + offset.shape)
    with pytest.raises(ValueError, match="smoothing"):
        dt.radial_data_template(counts, offset, omega, smoothing="spline")
    with pytest.raises(ValueError, match="interpolation"):
        dt.radial_data_template(counts, offset, omega, interpolation="cubic")
