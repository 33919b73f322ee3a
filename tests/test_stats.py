"""Statistics against Li & Ma (1983) eq. 17 and its limits."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringbg import stats


def li_ma_17(n_on, n_off, alpha):
    """Li & Ma 1983 eq. 17, written out as in the paper."""
    t1 = n_on * np.log((1 + alpha) / alpha * n_on / (n_on + n_off)) if n_on > 0 else 0.0
    t2 = n_off * np.log((1 + alpha) * n_off / (n_on + n_off)) if n_off > 0 else 0.0
    s = np.sqrt(2 * (t1 + t2))
    return s if n_on >= alpha * n_off else -s


@pytest.mark.parametrize(
    "n_on, n_off, alpha",
    [(10, 20, 0.1), (130, 505, 0.2), (99, 15600, 0.0044712), (5, 100, 0.1), (1000, 900, 1.0)],
)
def test_significance_equals_li_ma_eq17(n_on, n_off, alpha):
    assert stats.significance(n_on, n_off, alpha) == pytest.approx(li_ma_17(n_on, n_off, alpha),
                                                                  rel=1e-9, abs=1e-9)


def test_limit_n_on_zero():
    n_off, alpha = 50.0, 0.2
    expected = -np.sqrt(2 * n_off * np.log(1 + alpha))
    assert stats.significance(0, n_off, alpha) == pytest.approx(expected, rel=1e-12)


def test_limit_n_off_zero():
    n_on, alpha = 7.0, 0.3
    expected = np.sqrt(2 * n_on * np.log((1 + alpha) / alpha))
    assert stats.significance(n_on, 0, alpha) == pytest.approx(expected, rel=1e-12)


def test_limit_alpha_to_zero_is_cash_with_known_background():
    n_on, mu_b = 30.0, 18.0
    alpha = 1e-7
    n_off = mu_b / alpha
    cash = np.sqrt(2 * (n_on * np.log(n_on / mu_b) - (n_on - mu_b)))
    assert stats.significance(n_on, n_off, alpha) == pytest.approx(cash, rel=1e-4)


def test_zero_excess_has_zero_significance():
    assert stats.significance(20, 200, 0.1) == 0.0


def test_errors_bracket_excess_and_ul_above():
    n_on, n_off, alpha = np.array([50.0, 3.0]), np.array([400.0, 40.0]), np.array([0.1, 0.1])
    exc = stats.excess(n_on, n_off, alpha)
    errn = stats.excess_errn(n_on, n_off, alpha)
    errp = stats.excess_errp(n_on, n_off, alpha)
    ul = stats.excess_upper_limit(n_on, n_off, alpha, 2.0)
    assert np.all(errn > 0) and np.all(errp > 0)
    assert np.all(ul > exc + errp)
    # at the profile points the TS has risen by exactly n_sigma^2
    stat_max = stats.wstat(n_on, n_off, alpha, exc)
    assert stats.wstat(n_on, n_off, alpha, exc + errp) - stat_max == pytest.approx([1, 1], 1e-6)
    assert stats.wstat(n_on, n_off, alpha, ul) - stat_max == pytest.approx([4, 4], 1e-6)
    # large counts: errors close to the symmetric error
    assert errp[0] == pytest.approx(stats.excess_error(50, 400, 0.1), rel=0.1)


@settings(max_examples=200, deadline=None)
@given(
    n_on=st.integers(0, 5000),
    n_off=st.integers(0, 50000),
    alpha=st.floats(1e-4, 10),
)
def test_significance_monotonic_in_n_on_and_finite(n_on, n_off, alpha):
    s0 = stats.significance(n_on, n_off, alpha)
    s1 = stats.significance(n_on + 1, n_off, alpha)
    assert np.isfinite(s0) and np.isfinite(s1)
    assert s1 >= s0 - 1e-9


def test_excess_matching_significance():
    """The excess detected at n_sigma: the significance of the result is n_sigma, and it is
    gammapy 2.1's WStatCountsStatistic.n_sig_matching_significance."""
    from gammapy.stats import WStatCountsStatistic

    rng = np.random.default_rng(3)
    n_off = rng.integers(0, 5000, 300).astype(float)
    alpha = 10 ** rng.uniform(-3, 0, 300)
    n_off[:5] = [0, 1, 2, 5, 10]
    for n_sigma in (3.0, 5.0):
        ours = stats.excess_matching_significance(n_off, alpha, n_sigma)
        np.testing.assert_allclose(
            stats.significance(ours + alpha * n_off, n_off, alpha), n_sigma, rtol=1e-9)
        ref = WStatCountsStatistic(n_on=alpha * n_off, n_off=n_off,
                                   alpha=alpha).n_sig_matching_significance(n_sigma)
        np.testing.assert_allclose(ours, ref, rtol=1e-9)
    bad = stats.excess_matching_significance([10.0, np.nan, 10.0], [0.0, 0.1, np.nan])
    assert np.all(np.isnan(bad))


def test_excess_matching_significance_is_the_root_of_the_significance():
    """Newton's iterations land on the root that a bracketing search finds, from no off
    counts to survey-size ones."""
    from scipy.optimize import brentq

    n_off = np.array([0.0, 1.0, 3.0, 40.0, 700.0, 2.0e4, 1.0e6])
    for alpha in (1e-3, 0.05, 1.0):
        ours = stats.excess_matching_significance(n_off, np.full(n_off.shape, alpha), 5.0)
        for b, value in zip(n_off, ours):
            ref = brentq(lambda s: float(stats.significance(s + alpha * b, b, alpha)) - 5.0,
                         1e-9, 1e7, xtol=1e-12, rtol=1e-14)
            assert value == pytest.approx(ref, rel=1e-9)


def _li_ma_significance_long(n_sig, n_off, alpha):
    """Li & Ma's eq. 17 for a positive excess, in extended precision (the reference)."""
    n_sig, n_off, alpha = (np.asarray(v, dtype=np.longdouble) for v in (n_sig, n_off, alpha))
    n_on = n_sig + alpha * n_off
    total = n_on + n_off
    half_ts = n_on * np.log((1 + alpha) * n_on / (alpha * total))
    half_ts += np.where(n_off > 0, n_off * np.log((1 + alpha) * n_off / total), 0)
    return np.sqrt(2 * half_ts)


def test_excess_matching_significance_is_precise_at_survey_counts():
    """Millions of off counts: the TS taken as a difference of two WStat values of ~1e9
    loses ~1e-7 of the significance; Li & Ma's closed form keeps the root to ~1e-9."""
    rng = np.random.default_rng(5)
    n_off = rng.uniform(1e5, 5e6, 200).round()
    alpha = 10 ** rng.uniform(-3, 1, 200)
    for n_sigma in (3.0, 5.0):
        ours = stats.excess_matching_significance(n_off, alpha, n_sigma)
        np.testing.assert_allclose(_li_ma_significance_long(ours, n_off, alpha).astype(float),
                                   n_sigma, rtol=0, atol=1e-8)


def test_root_searches_of_a_pixel_do_not_depend_on_the_others():
    """Each pixel's errors and upper limit are the same bits alone, in a chunk or in the
    whole map (chunks differ with the number of processes)."""
    rng = np.random.default_rng(7)
    n = 3000
    n_on = rng.poisson(rng.choice([0.5, 5, 50, 5000], n)).astype(float)
    n_off = rng.poisson(rng.choice([1, 50, 5e4], n)).astype(float)
    alpha = 10 ** rng.uniform(-4, 0, n)
    funcs = (stats.excess_errn, stats.excess_errp, stats.excess_upper_limit)
    whole = [f(n_on, n_off, alpha) for f in funcs]
    for part in (slice(0, 1), slice(17, 18), slice(100, 400), slice(2500, None)):
        for f, ref in zip(funcs, whole):
            np.testing.assert_array_equal(f(n_on[part], n_off[part], alpha[part]), ref[part])
    sens = stats.excess_matching_significance(n_off, alpha)
    np.testing.assert_array_equal(stats.excess_matching_significance(n_off[5:9], alpha[5:9]),
                                  sens[5:9])
