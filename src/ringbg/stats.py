"""On/off counting statistics: WStat (Li & Ma 1983 eq. 17), errors and upper limits.

All functions work element-wise on arrays of ``n_on``, ``n_off`` and ``alpha`` (the ratio of
on to off exposure). The significance is the signed square root of the likelihood-ratio test
statistic, which for on/off counting is Li & Ma's equation 17.
"""

import numpy as np

__all__ = [
    "wstat",
    "wstat_mu_bkg",
    "ts",
    "significance",
    "excess",
    "excess_error",
    "excess_errn",
    "excess_errp",
    "excess_upper_limit",
]


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def wstat_mu_bkg(n_on, n_off, alpha, mu_sig):
    """Profile-likelihood background (off-region counts scale) for a given signal ``mu_sig``."""
    n_on, n_off, alpha, mu_sig = _f64(n_on, n_off, alpha, mu_sig)
    c = alpha * (n_on + n_off) - (1 + alpha) * mu_sig
    d = np.sqrt(c**2 + 4 * alpha * (alpha + 1) * n_off * mu_sig)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (c + d) / (2 * alpha * (alpha + 1))


def wstat(n_on, n_off, alpha, mu_sig):
    """-2 log likelihood ratio to the saturated model (WStat) for signal ``mu_sig``."""
    n_on, n_off, alpha, mu_sig = _f64(n_on, n_off, alpha, mu_sig)
    mu_bkg = wstat_mu_bkg(n_on, n_off, alpha, mu_sig)
    with np.errstate(invalid="ignore", divide="ignore"):
        term_on = np.where(n_on == 0, 0.0, -n_on * np.log(mu_sig + alpha * mu_bkg))
        term_off = np.where(n_off == 0, 0.0, -n_off * np.log(mu_bkg))
        gof_on = np.where(n_on == 0, 0.0, -n_on * (1 - np.log(n_on)))
        gof_off = np.where(n_off == 0, 0.0, -n_off * (1 - np.log(n_off)))
    return 2 * (mu_sig + (1 + alpha) * mu_bkg + term_on + term_off + gof_on + gof_off)


def excess(n_on, n_off, alpha):
    """Excess counts ``n_on - alpha * n_off``."""
    n_on, n_off, alpha = _f64(n_on, n_off, alpha)
    return n_on - alpha * n_off


def ts(n_on, n_off, alpha):
    """Test statistic of the excess against no signal (>= 0), Li & Ma 1983 eq. 17 squared."""
    n_on, n_off, alpha = _f64(n_on, n_off, alpha)
    stat_null = wstat(n_on, n_off, alpha, 0.0)
    stat_max = wstat(n_on, n_off, alpha, excess(n_on, n_off, alpha))
    return np.clip(stat_null - stat_max, 0, None)


def significance(n_on, n_off, alpha):
    """Signed Li & Ma significance ``sign(excess) * sqrt(ts)``."""
    return np.sign(excess(n_on, n_off, alpha)) * np.sqrt(ts(n_on, n_off, alpha))


def excess_error(n_on, n_off, alpha):
    """Symmetric error of the excess, ``sqrt(n_on + alpha**2 n_off)``."""
    n_on, n_off, alpha = _f64(n_on, n_off, alpha)
    return np.sqrt(n_on + alpha**2 * n_off)


def _wstat_offset(mu, n_on, n_off, alpha, target):
    return wstat(n_on, n_off, alpha, mu) - target


def _profile_root(n_on, n_off, alpha, start, stop, delta):
    """Signal ``mu`` in [start, stop] where WStat rises by ``delta`` above its minimum.

    Vectorised Chandrupatla root finding; NaN where the interval does not bracket a root.
    """
    from scipy.optimize.elementwise import find_root

    n_on, n_off, alpha, start, stop = np.broadcast_arrays(*_f64(n_on, n_off, alpha, start, stop))
    target = wstat(n_on, n_off, alpha, excess(n_on, n_off, alpha)) + delta
    f_lo = _wstat_offset(start, n_on, n_off, alpha, target)
    f_hi = _wstat_offset(stop, n_on, n_off, alpha, target)
    ok = np.isfinite(f_lo) & np.isfinite(f_hi) & (np.sign(f_lo) != np.sign(f_hi)) & (start < stop)
    root = np.full(n_on.shape, np.nan)
    if ok.any():
        res = find_root(_wstat_offset, (start[ok], stop[ok]),
                        args=(n_on[ok], n_off[ok], alpha[ok], target[ok]),
                        tolerances={"xrtol": 1e-12, "xatol": 1e-12})
        root[ok] = res.x
    exact = np.isfinite(f_lo) & (f_lo == 0)
    return np.where(exact, start, root)


def excess_errn(n_on, n_off, alpha, n_sigma=1.0):
    """Negative error of the excess where the profile TS rises by ``n_sigma**2``.

    Where no root exists below the excess (small counts), the error is ``n_on`` (as gammapy).
    """
    n_on, n_off, alpha = np.broadcast_arrays(*_f64(n_on, n_off, alpha))
    exc = excess(n_on, n_off, alpha)
    err = excess_error(n_on, n_off, alpha)
    root = _profile_root(n_on, n_off, alpha, exc - 2 * n_sigma * (err + 1), exc, n_sigma**2)
    return np.where(np.isnan(root), n_on, exc - root)


def excess_errp(n_on, n_off, alpha, n_sigma=1.0):
    """Positive error of the excess where the profile TS rises by ``n_sigma**2``."""
    n_on, n_off, alpha = np.broadcast_arrays(*_f64(n_on, n_off, alpha))
    exc = excess(n_on, n_off, alpha)
    err = excess_error(n_on, n_off, alpha)
    root = _profile_root(n_on, n_off, alpha, exc, exc + 2 * n_sigma * (err + 1), n_sigma**2)
    return root - exc


def excess_upper_limit(n_on, n_off, alpha, n_sigma=2.0):
    """Upper limit on the signal counts: the TS rises by ``n_sigma**2`` above the excess."""
    n_on, n_off, alpha = np.broadcast_arrays(*_f64(n_on, n_off, alpha))
    exc = excess(n_on, n_off, alpha)
    err = excess_error(n_on, n_off, alpha)
    return _profile_root(n_on, n_off, alpha, exc, exc + 2 * n_sigma * (err + 1), n_sigma**2)
