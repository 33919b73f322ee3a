"""Correlated excess maps: Li & Ma against the textbook formula, top-hat sums against a direct
sum over the disk, alpha for both ways of treating the off counts, and flux maps."""

from itertools import pairwise

import numpy as np
import pytest
from scipy.integrate import quad

from ringbg.excess import excess_maps, flux_weights, power_law_integral


def li_ma_17(n_on, n_off, alpha):
    """Li & Ma (1983) eq. 17 as printed, signed by the excess."""
    total = n_on + n_off
    term_on = n_on * np.log((1 + alpha) / alpha * n_on / total) if n_on > 0 else 0.0
    term_off = n_off * np.log((1 + alpha) * n_off / total) if n_off > 0 else 0.0
    s = np.sqrt(2.0 * (term_on + term_off))
    return s if n_on >= alpha * n_off else -s


def tophat_sum(image, radius):
    """Sum over pixels whose centre is within ``radius`` pixels (zero beyond the image)."""
    ny, nx = image.shape
    r = int(np.floor(radius))
    padded = np.zeros((ny + 2 * r, nx + 2 * r))
    padded[r:r + ny, r:r + nx] = image
    out = np.zeros(image.shape)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dx * dx + dy * dy <= radius * radius:
                out += padded[r + dy:r + dy + ny, r + dx:r + dx + nx]
    return out


CASES = [(10, 20, 0.1), (130, 505, 0.2), (99, 15600, 0.0044712), (3, 40, 0.25),
         (0, 12, 0.3), (25, 0, 0.5), (1000, 900, 1.0), (42, 400, 0.1)]


def scalar_images(cases):
    """One pixel per case, with zero-valued pixels between them (radius < 1: no mixing)."""
    n = len(cases)
    counts = np.zeros((3, 2 * n + 1))
    off = np.zeros_like(counts)
    acc = np.zeros_like(counts)
    acc_off = np.ones_like(counts)
    for k, (n_on, n_off, alpha) in enumerate(cases):
        counts[1, 2 * k + 1], off[1, 2 * k + 1], acc[1, 2 * k + 1] = n_on, n_off, alpha
    return counts, off, acc, acc_off


@pytest.mark.parametrize("correlate_off", [False, True])
def test_significance_is_li_ma_for_single_pixels(correlate_off):
    counts, off, acc, acc_off = scalar_images(CASES)
    mask = np.ones(counts.shape, bool)
    maps = excess_maps(counts, off, acc, acc_off, mask, radius_px=0.5,
                       correlate_off=correlate_off)
    for k, (n_on, n_off, alpha) in enumerate(CASES):
        pixel = (1, 2 * k + 1)
        assert maps["counts"][pixel] == n_on
        assert maps["n_off"][pixel] == n_off
        if n_off == 0:
            # no off counts: alpha undefined (NaN, as gammapy), see test_no_off_counts_*
            assert np.isnan(maps["alpha"][pixel])
            continue
        assert maps["alpha"][pixel] == pytest.approx(alpha, rel=1e-12)
        assert maps["background"][pixel] == pytest.approx(alpha * n_off, rel=1e-12)
        assert maps["excess"][pixel] == pytest.approx(n_on - alpha * n_off, rel=1e-12, abs=1e-9)
        expected = li_ma_17(n_on, n_off, alpha)
        assert maps["significance"][pixel] == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert maps["ts"][pixel] == pytest.approx(expected ** 2, rel=1e-9, abs=1e-9)
        assert maps["excess_err"][pixel] == pytest.approx(np.sqrt(n_on + alpha ** 2 * n_off),
                                                          rel=1e-12)


def test_no_off_counts_uncorrelated():
    """Without off counts in the pixel, n_off = 0 and alpha is NaN."""
    n_on, alpha = 25, 0.5
    counts, off, acc, acc_off = scalar_images([(n_on, 0, alpha)])
    maps = excess_maps(counts, off, acc, acc_off, np.ones(counts.shape, bool), 0.5)
    assert maps["n_off"][1, 1] == 0
    # gammapy: acceptance_off resampled as NaN where off == 0, so alpha is NaN there
    assert np.isnan(maps["alpha"][1, 1])


def _random_field(seed=0, shape=(30, 34)):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(4.0, shape).astype(float)
    off = rng.poisson(60.0, shape).astype(float)
    off[3, 4] = 0.0
    acc = rng.uniform(0.5, 1.5, shape)
    acc_off = acc * rng.uniform(8, 20, shape)
    mask = np.ones(shape, bool)
    mask[10:14, 20:25] = False
    mask[0, :] = False
    return counts, off, acc, acc_off, mask


@pytest.mark.parametrize("radius", [1.0, 2.3, 4.0])
def test_correlated_maps_without_off_correlation(radius):
    counts, off, acc, acc_off, mask = _random_field()
    maps = excess_maps(counts, off, acc, acc_off, mask, radius, correlate_off=False)
    n_on = tophat_sum(counts * mask, radius)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = tophat_sum(acc * mask, radius) / np.where(off > 0, acc_off, np.nan)
    m = mask
    np.testing.assert_array_equal(maps["counts"][m], n_on[m])
    np.testing.assert_array_equal(maps["n_off"][m], off[m])
    np.testing.assert_allclose(maps["alpha"][m], alpha[m], rtol=1e-10)
    np.testing.assert_allclose(maps["excess"][m], (n_on - alpha * off)[m], rtol=1e-9,
                               atol=1e-9)
    np.testing.assert_allclose(maps["background"][m], (alpha * off)[m], rtol=1e-10)
    finite = m & (off > 0)
    sig = np.array([li_ma_17(a, b, c) for a, b, c in
                    zip(n_on[finite], off[finite], alpha[finite])])
    np.testing.assert_allclose(maps["significance"][finite], sig, rtol=1e-8, atol=1e-8)
    # outside the mask: NaN everywhere
    for name, values in maps.items():
        assert np.all(np.isnan(values[~m])), name


@pytest.mark.parametrize("radius", [1.5, 3.0])
def test_correlated_maps_with_off_correlation(radius):
    counts, off, acc, acc_off, mask = _random_field(seed=1)
    maps = excess_maps(counts, off, acc, acc_off, mask, radius, correlate_off=True)
    n_on = tophat_sum(counts * mask, radius)
    n_off = tophat_sum(off * mask, radius)
    with np.errstate(divide="ignore", invalid="ignore"):  # masked pixels with no off counts
        alpha = tophat_sum(acc / acc_off * off * mask, radius) / n_off
    m = mask
    np.testing.assert_array_equal(maps["counts"][m], n_on[m])
    np.testing.assert_array_equal(maps["n_off"][m], n_off[m])
    np.testing.assert_allclose(maps["alpha"][m], alpha[m], rtol=1e-10)
    sig = np.array([li_ma_17(a, b, c) for a, b, c in zip(n_on[m], n_off[m], alpha[m])])
    np.testing.assert_allclose(maps["significance"][m], sig, rtol=1e-8, atol=1e-8)


def test_masked_counts_do_not_leak_into_neighbours():
    counts = np.zeros((9, 9))
    counts[4, 4] = 1000.0
    off = np.full((9, 9), 100.0)
    acc, acc_off = np.ones((9, 9)), np.full((9, 9), 10.0)
    mask = np.ones((9, 9), bool)
    mask[4, 4] = False
    maps = excess_maps(counts, off, acc, acc_off, mask, 2.0)
    assert np.nansum(maps["counts"]) == 0
    assert np.isnan(maps["counts"][4, 4])


def test_errors_and_upper_limits():
    counts, off, acc, acc_off, mask = _random_field(seed=2)
    maps = excess_maps(counts, off, acc, acc_off, mask, 2.0, correlate_off=True,
                       n_sigma=1.0, n_sigma_ul=3.0)
    m = mask
    assert np.all(maps["excess_errn"][m] > 0) and np.all(maps["excess_errp"][m] > 0)
    assert np.all(maps["excess_ul"][m] > maps["excess"][m] + maps["excess_errp"][m])
    no_errors = excess_maps(counts, off, acc, acc_off, mask, 2.0, correlate_off=True,
                            errors=False)
    assert not {"excess_errn", "excess_errp", "excess_ul"} & set(no_errors)
    for name in no_errors:
        np.testing.assert_array_equal(no_errors[name], maps[name])
    two_sigma = excess_maps(counts, off, acc, acc_off, mask, 2.0, correlate_off=True,
                            n_sigma=2.0, errors=False)
    np.testing.assert_allclose(two_sigma["excess_err"][m], 2 * maps["excess_err"][m])


# --------------------------------------------------------------------------------------------
# flux


@pytest.mark.parametrize("index", [2.3, 2.0, 1.0, 0.5])
def test_power_law_integral(index):
    lo, hi = np.array([0.5, 1.0, 3.0]), np.array([1.0, 3.0, 100.0])
    ours = power_law_integral(lo, hi, index)
    for k in range(3):
        exact, _ = quad(lambda e: e ** -index, lo[k], hi[k], epsrel=1e-13)
        assert ours[k] == pytest.approx(exact, rel=1e-10)


def test_flux_with_uniform_exposure():
    counts, off, acc, acc_off, mask = _random_field(seed=3)
    edges = np.geomspace(0.5, 10, 5)
    exposure = np.full((4,) + counts.shape, 3e9)  # m2 s
    maps = excess_maps(counts, off, acc, acc_off, mask, 2.0, exposure=exposure,
                       energy_edges_tev=edges)
    m = mask
    np.testing.assert_allclose(maps["flux"][m], maps["excess"][m] / (3e9 * 1e4), rtol=1e-10)
    np.testing.assert_allclose(maps["flux_err"][m], maps["excess_err"][m] / 3e13, rtol=1e-10)
    np.testing.assert_allclose(maps["flux_ul"][m], maps["excess_ul"][m] / 3e13, rtol=1e-10)
    assert np.all(np.isnan(maps["flux"][~m]))


def test_no_flux_where_there_is_no_exposure():
    """Safe pixels with no exposure within the correlation radius (beyond the IRF's offsets)
    get NaN flux maps, not infinities; the counts-based maps stay."""
    counts, off, acc, acc_off, mask = _random_field(seed=4)
    edges = np.geomspace(0.5, 10, 5)
    exposure = np.full((4,) + counts.shape, 3e9)
    exposure[:, :, :10] = 0.0  # a strip with no effective area
    maps = excess_maps(counts, off, acc, acc_off, mask, 2.0, exposure=exposure,
                       energy_edges_tev=edges, sensitivity={})
    dark = np.zeros(counts.shape, bool)
    dark[:, :8] = True  # farther than the radius (2 px) from any exposure
    assert (mask & dark).any()
    for name in ("flux", "flux_err", "flux_ul", "flux_sensitivity"):
        assert np.all(np.isnan(maps[name][dark])), name
        lit = maps[name][:, 13:][mask[:, 13:]]  # exposure all around
        assert np.all(np.isfinite(lit)), name
    counts_only = excess_maps(counts, off, acc, acc_off, mask, 2.0)
    np.testing.assert_array_equal(maps["significance"], counts_only["significance"])


def test_flux_weights_the_exposure_by_the_spectrum():
    """Expected counts per unit integral flux: the exposure of each energy bin weighted by the
    fraction of a power-law flux in that bin; averaged over the top-hat's unmasked pixels."""
    shape = (12, 12)
    counts = np.full(shape, 30.0)
    off = np.full(shape, 200.0)
    acc, acc_off = np.ones(shape), np.full(shape, 10.0)
    mask = np.ones(shape, bool)
    edges = np.array([0.5, 1.0, 4.0, 10.0])
    per_bin = np.array([1e9, 4e9, 7e9])
    exposure = per_bin[:, None, None] * np.ones((3,) + shape)
    index = 2.3
    fractions = np.array([quad(lambda e: e ** -index, a, b, epsrel=1e-13)[0]
                          for a, b in zip(edges[:-1], edges[1:])])
    fractions /= quad(lambda e: e ** -index, edges[0], edges[-1], epsrel=1e-13)[0]
    expected_npred = np.sum(fractions * per_bin) * 1e4  # cm2 s
    maps = excess_maps(counts, off, acc, acc_off, mask, 1.5, exposure=exposure,
                       energy_edges_tev=edges, spectral_index=index)
    excess = tophat_sum(counts, 1.5) - tophat_sum(acc, 1.5) / acc_off * off
    np.testing.assert_allclose(maps["flux"], excess / expected_npred, rtol=1e-9)


def test_flux_through_a_response_on_a_true_energy_axis():
    """The energy dispersion: each true-energy bin's expected counts times the probability
    that they are counted (``response``); the flux is the integral flux in the reconstructed
    range, whatever the true-energy axis."""
    shape = (10, 10)
    counts, off = np.full(shape, 30.0), np.full(shape, 200.0)
    acc, acc_off = np.ones(shape), np.full(shape, 10.0)
    mask = np.ones(shape, bool)
    true = np.array([0.2, 0.5, 1.0, 4.0, 10.0, 40.0])
    response = np.array([0.1, 0.7, 0.98, 0.9, 0.05])
    per_bin = np.array([2e8, 1e9, 4e9, 7e9, 8e9])
    exposure = per_bin[:, None, None] * np.ones((5,) + shape)
    index = 2.3

    def integral(a, b):
        return quad(lambda e: e ** -index, a, b, epsrel=1e-13)[0]

    weights = np.array([integral(a, b) for a, b in pairwise(true)])
    weights *= response / integral(0.5, 10.0)
    np.testing.assert_allclose(flux_weights(true, index, response, (0.5, 10.0)), weights,
                               rtol=1e-10)
    maps = excess_maps(counts, off, acc, acc_off, mask, 1.5, exposure=exposure,
                       energy_edges_tev=true, spectral_index=index, response=response,
                       energy_range_tev=(0.5, 10.0))
    np.testing.assert_allclose(maps["flux"], maps["excess"] / (weights @ per_bin * 1e4),
                               rtol=1e-9)
    # no response and the range of the edges by default: the flux without dispersion
    np.testing.assert_array_equal(flux_weights(true, index),
                                  flux_weights(true, index, None, (0.2, 40.0)))
    np.testing.assert_array_equal(flux_weights(true, index, np.ones(5)), flux_weights(true, index))


def test_per_pixel_searches_by_chunks_give_the_same_bits(monkeypatch):
    """The errors, upper limits and sensitivity are searched a chunk of pixels at a time
    (bounded memory on survey maps), on local processes with ``jobs``: the same values as
    all at once."""
    import ringbg.excess as excess_module

    counts, off, acc, acc_off, mask = _random_field(seed=6)
    kwargs = dict(exposure=np.full((2,) + counts.shape, 1e9),
                  energy_edges_tev=np.geomspace(1, 10, 3), sensitivity={})
    whole = excess_maps(counts, off, acc, acc_off, mask, 2.0, **kwargs)
    monkeypatch.setattr(excess_module, "CHUNK_PIXELS", 37)
    chunked = excess_maps(counts, off, acc, acc_off, mask, 2.0, **kwargs)
    assert mask.sum() > 10 * 37
    for name in ("excess_errn", "excess_errp", "excess_ul", "flux_sensitivity"):
        np.testing.assert_array_equal(chunked[name], whole[name])
    on_processes = excess_maps(counts, off, acc, acc_off, mask, 2.0, jobs=2, **kwargs)
    assert list(on_processes) == list(whole)
    for name in whole:
        np.testing.assert_array_equal(on_processes[name], whole[name])
    assert np.isfinite(whole["flux_sensitivity"][mask]).any()


@pytest.mark.parametrize("correlate_off", [False, True])
def test_map_steps_give_the_quick_maps_first_then_those_of_excess_maps(correlate_off):
    """`excess_map_steps`: the maps without root searches first, then every map of
    `excess_maps` (same bits, the first step's arrays among them); numpy's floating-point
    error state of the caller is left as it was between and after the steps."""
    from ringbg.excess import excess_map_steps

    counts, off, acc, acc_off, mask = _random_field(seed=8)
    kwargs = dict(correlate_off=correlate_off, exposure=np.full((2,) + counts.shape, 1e9),
                  energy_edges_tev=np.geomspace(1, 10, 3), sensitivity={})
    before = np.geterr()
    with np.errstate(divide="raise"):
        steps = excess_map_steps(counts, off, acc, acc_off, mask, 2.0, **kwargs)
        quick = next(steps)
        assert np.geterr()["divide"] == "raise"
    assert np.geterr() == before
    full = next(steps)
    assert np.geterr() == before
    with pytest.raises(StopIteration):
        next(steps)
    assert set(quick) == {"counts", "n_off", "alpha", "background", "excess", "ts",
                          "significance", "excess_err", "flux", "flux_err"}
    whole = excess_maps(counts, off, acc, acc_off, mask, 2.0, **kwargs)
    assert set(full) == set(whole) > set(quick)
    for name in whole:
        np.testing.assert_array_equal(full[name], whole[name])
    for name in quick:
        assert quick[name] is full[name]
        assert np.isnan(quick[name][~mask]).all()
