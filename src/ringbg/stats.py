"""On/off counting statistics: WStat (Li & Ma 1983 eq. 17), errors and upper limits.

All functions work element-wise on arrays of ``n_on``, ``n_off`` and ``alpha`` (the ratio of
on to off exposure). The significance is the signed square root of the likelihood-ratio test
statistic, which for on/off counting is Li & Ma's equation 17.
"""

import math
import warnings

import numpy as np

#: Fewest finite values for which `fit_gaussian` attempts a fit.
MIN_FIT_VALUES = 10
#: Histogram bins of the fit, as gammapy's ``plot_distribution`` in the tutorial.
FIT_BINS = 51

__all__ = [
    "fit_gaussian",
    "wstat",
    "wstat_mu_bkg",
    "ts",
    "significance",
    "excess",
    "excess_error",
    "excess_errn",
    "excess_errp",
    "excess_upper_limit",
    "excess_matching_significance",
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
        stat, _ = _wstat_terms(n_on, n_off, alpha, mu_sig, mu_bkg)
        stat += _gof(n_on)
        stat += _gof(n_off)
    stat *= 2
    return stat


def _wstat_terms(n_on, n_off, alpha, mu_sig, mu_bkg):
    """Half of `wstat` without its constant (saturated-model) terms, ``mu + (1 + alpha)
    mu_bkg - n_on log(npred) - n_off log(mu_bkg)``, and ``npred = mu + alpha mu_bkg``."""
    npred = mu_sig + alpha * mu_bkg
    stat = (1 + alpha) * mu_bkg
    stat += mu_sig
    stat -= _xlogy(n_on, npred)
    stat -= _xlogy(n_off, mu_bkg)
    return stat, npred


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


def _xlogy(x, y):
    """``x * log(y)``, 0 where ``x == 0`` (whatever ``y``)."""
    out = np.log(y) * x
    zero = x == 0
    return np.where(zero, 0.0, out) if np.any(zero) else out


def _gof(n):
    """WStat's saturated-model term of counts ``n``: ``-n (1 - log n)``, 0 where n = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (1 - np.log(n)) * -n
    zero = n == 0
    return np.where(zero, 0.0, out) if np.any(zero) else out


def _newton_profile(mu, rows):
    """One Newton step on ``WStat(mu) = target`` for the parameter ``rows`` (``n_on``,
    ``n_off``, ``alpha``, ``h = target / 2 - gof``, ...): with the background profiled,
    ``WStat / 2 = g(mu) + gof`` (`_wstat_terms`) and ``dWStat/dmu / 2 = 1 - n_on / npred``
    (envelope theorem)."""
    n_on, n_off, alpha, h = rows[:4]
    g, npred = _wstat_terms(n_on, n_off, alpha, mu, wstat_mu_bkg(n_on, n_off, alpha, mu))
    g -= h
    slope = n_on / npred
    zero_on = n_on == 0
    if zero_on.any():
        slope = np.where(zero_on, 0.0, slope)
    return mu - g / (1.0 - slope)


def _profile_root(n_on, n_off, alpha, start, stop, delta, from_stop):
    """Signal ``mu`` in [start, stop] where WStat rises by ``delta`` above its minimum.

    WStat is convex in ``mu``, so Newton's method started from the bracket end where the
    offset function is positive (``stop`` above the excess, ``start`` below it) moves
    monotonically onto the root without overshooting. NaN where the interval does not
    bracket a root.
    """
    n_on, n_off, alpha, start, stop = np.broadcast_arrays(*_f64(n_on, n_off, alpha, start, stop))
    target = wstat(n_on, n_off, alpha, excess(n_on, n_off, alpha)) + delta
    f_lo = _wstat_offset(start, n_on, n_off, alpha, target)
    f_hi = _wstat_offset(stop, n_on, n_off, alpha, target)
    ok = np.isfinite(f_lo) & np.isfinite(f_hi) & (np.sign(f_lo) != np.sign(f_hi)) & (start < stop)
    root = np.full(n_on.shape, np.nan)
    idx = np.flatnonzero(ok)
    mu = (stop if from_stop else start)[ok].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        on, off = n_on[ok], n_off[ok]
        # per pixel: n_on, n_off, alpha, h (see `_newton_profile`), the bracket
        rows = np.stack([on, off, alpha[ok], 0.5 * target[ok] - _gof(on) - _gof(off),
                         start[ok], stop[ok]])
        # a converged pixel keeps being iterated (its root is taken when it converges) until
        # half are: the arrays are compacted then, not at every step
        active = np.ones(idx.size, dtype=bool)
        for _ in range(40):
            if idx.size == 0:
                break
            new = np.clip(_newton_profile(mu, rows), rows[4], rows[5])
            done = ~np.isfinite(new) | (np.abs(new - mu) <= 1e-10 * (1 + np.abs(mu)))
            done &= active
            if done.any():
                root[idx[done]] = np.where(np.isfinite(new[done]), new[done], mu[done])
                active &= ~done
                if 2 * np.count_nonzero(active) <= active.size:
                    idx, new, rows = idx[active], new[active], rows[:, active]
                    active = active[active]
            mu = new
        root[idx[active]] = mu[active]
        # where the profile is not smooth (n_on = 0 at the edge of the physical region)
        # Newton may stall: finish those with a bracketing method
        residual = _wstat_offset(root, n_on, n_off, alpha, target)
        slow = ok & ~(np.abs(residual) <= 1e-8 * (1 + np.abs(target)))
    if slow.any():
        from scipy.optimize.elementwise import find_root

        res = find_root(_wstat_offset, (start[slow], stop[slow]),
                        args=(n_on[slow], n_off[slow], alpha[slow], target[slow]),
                        tolerances={"xrtol": 1e-12, "xatol": 1e-12})
        root[slow] = res.x
    exact = np.isfinite(f_lo) & (f_lo == 0)
    return np.where(exact, start, root)


def excess_errn(n_on, n_off, alpha, n_sigma=1.0):
    """Negative error of the excess where the profile TS rises by ``n_sigma**2``.

    Where no root exists below the excess (small counts), the error is ``n_on`` (as gammapy).
    """
    n_on, n_off, alpha = np.broadcast_arrays(*_f64(n_on, n_off, alpha))
    exc = excess(n_on, n_off, alpha)
    err = excess_error(n_on, n_off, alpha)
    root = _profile_root(n_on, n_off, alpha, exc - 2 * n_sigma * (err + 1), exc, n_sigma**2,
                         from_stop=False)
    return np.where(np.isnan(root), n_on, exc - root)


def excess_errp(n_on, n_off, alpha, n_sigma=1.0):
    """Positive error of the excess where the profile TS rises by ``n_sigma**2``."""
    n_on, n_off, alpha = np.broadcast_arrays(*_f64(n_on, n_off, alpha))
    exc = excess(n_on, n_off, alpha)
    err = excess_error(n_on, n_off, alpha)
    root = _profile_root(n_on, n_off, alpha, exc, exc + 2 * n_sigma * (err + 1), n_sigma**2,
                         from_stop=True)
    return root - exc


def excess_upper_limit(n_on, n_off, alpha, n_sigma=2.0):
    """Upper limit on the signal counts: the TS rises by ``n_sigma**2`` above the excess."""
    n_on, n_off, alpha = np.broadcast_arrays(*_f64(n_on, n_off, alpha))
    exc = excess(n_on, n_off, alpha)
    err = excess_error(n_on, n_off, alpha)
    return _profile_root(n_on, n_off, alpha, exc, exc + 2 * n_sigma * (err + 1), n_sigma**2,
                         from_stop=True)


def _significance_offset(n_sig, n_off, alpha, target):
    return significance(n_sig + alpha * n_off, n_off, alpha) - target


def _li_ma_half_ts(n_sig, n_off, alpha):
    """Half the TS at ``n_on = n_sig + alpha n_off`` for ``n_sig >= 0`` (Li & Ma 1983 eq. 17
    squared, over 2) and ``log((1 + alpha) n_on / (alpha (n_on + n_off)))``, half its
    derivative in ``n_sig``."""
    n_on = alpha * n_off
    n_on += n_sig
    total = n_on + n_off
    b = 1 + alpha
    log_on = np.log(b * n_on / (alpha * total))
    half_ts = n_on * log_on
    half_ts += _xlogy(n_off, b * n_off / total)
    return half_ts, log_on


def excess_matching_significance(n_off, alpha, n_sigma=5.0):
    """Excess counts that would be detected at ``n_sigma`` over the background ``alpha n_off``.

    The inverse of `significance` in the signal (gammapy's
    ``WStatCountsStatistic.n_sig_matching_significance``): the ``n_sig`` with
    ``significance(n_sig + alpha n_off, n_off, alpha) = n_sigma``. The TS is convex and
    increasing in the signal above the background, so Newton's method on ``TS = n_sigma**2``
    (Li & Ma's closed form: the same TS as `ts`, without its cancellation) started above the
    root descends onto it without overshooting (a bracketing search finishes the few that do
    not converge). NaN where ``alpha`` or ``n_off`` is not finite or ``alpha <= 0``.
    """
    n_off, alpha = np.broadcast_arrays(*_f64(n_off, alpha))
    out = np.full(n_off.shape, np.nan)
    ok = np.isfinite(n_off) & np.isfinite(alpha) & (alpha > 0) & (n_off >= 0)
    if not ok.any():
        return out
    b, a = n_off[ok], alpha[ok]
    half_target = 0.5 * float(n_sigma) ** 2
    # a start above the root: the Gaussian guess grown until the significance is above
    hi = np.maximum(n_sigma * np.sqrt(a * b), 1.0) + n_sigma**2
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(60):
            low = ~(_li_ma_half_ts(hi, b, a)[0] >= half_target)
            if not low.any():
                break
            hi = np.where(low, 2 * hi, hi)
        root = np.full(b.shape, np.nan)
        idx = np.flatnonzero(~low)
        mu, bb, aa = hi[idx], b[idx], a[idx]
        for _ in range(60):
            if idx.size == 0:
                break
            half_ts, slope = _li_ma_half_ts(mu, bb, aa)
            half_ts -= half_target
            new = np.clip(mu - half_ts / slope, 0.0, mu)
            done = np.isfinite(new) & (np.abs(new - mu) <= 1e-12 * (1 + np.abs(mu)))
            keep = ~done & np.isfinite(new)
            if keep.all():
                mu = new
                continue
            root[idx[done]] = new[done]
            idx, mu, bb, aa = idx[keep], new[keep], bb[keep], aa[keep]
        slow = ~np.isfinite(root) & ~low
        if slow.any():
            from scipy.optimize.elementwise import find_root

            target = np.full(int(slow.sum()), float(n_sigma))
            res = find_root(_significance_offset, (np.zeros(slow.sum()), hi[slow]),
                            args=(b[slow], a[slow], target),
                            tolerances={"xrtol": 1e-12, "xatol": 1e-12})
            root[slow] = np.where(res.success, res.x, np.nan)
    out[ok] = root
    return out


def fit_gaussian(values):
    """Fit a Gaussian to the distribution of values, as gammapy 2.1 does.

    Reproduces ``gammapy.visualization.plot_distribution(..., func="norm",
    kwargs_hist={"bins": 51})``: the finite values are histogrammed in 51 bins over
    their full range with ``density=True``, and the normal pdf is fitted to
    (bin centre, density) with an unweighted `scipy.optimize.curve_fit` started at
    ``mu = 1, sigma = 1``. The errors are the square roots of the covariance diagonal.

    Parameters
    ----------
    values : array_like
        Values (e.g. significances of off-region pixels); NaN and inf are ignored.

    Returns
    -------
    fit : dict
        ``mean``, ``sigma``, ``mean_err``, ``sigma_err`` (floats) and ``n_pixels`` (int,
        the number of finite values used). The fitted values are NaN when there are
        fewer than `MIN_FIT_VALUES` finite values or the fit fails.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    finite = np.ravel(np.asarray(values, dtype=float))
    finite = finite[np.isfinite(finite)]
    result = {
        "mean": math.nan,
        "sigma": math.nan,
        "mean_err": math.nan,
        "sigma_err": math.nan,
        "n_pixels": int(finite.size),
    }
    if finite.size < MIN_FIT_VALUES:
        return result

    density, edges = np.histogram(
        finite, bins=FIT_BINS, range=[finite.min(), finite.max()], density=True
    )
    centers = 0.5 * (edges[1:] + edges[:-1])

    def pdf(x, mu, sigma):
        # scipy.stats.norm.pdf, written out (NaN for sigma <= 0 as there)
        if sigma <= 0:
            return np.full_like(x, np.nan)
        y = (x - mu) / sigma
        return np.exp(-(y**2) / 2.0) / np.sqrt(2 * np.pi) / sigma

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            pars, cov = curve_fit(pdf, centers, density, p0=(1.0, 1.0))
    except (RuntimeError, ValueError):
        return result

    errors = np.sqrt(np.diag(cov))
    result.update(
        mean=float(pars[0]),
        # norm.pdf is symmetric in sigma only for sigma > 0; the fit may land on -sigma.
        sigma=float(abs(pars[1])),
        mean_err=float(errors[0]),
        sigma_err=float(errors[1]),
    )
    return result
