"""Evaluating IRFs on sky pixels: effective area, energy dispersion and the energy-integrated
background rate.

Interpolation is multilinear on the IRF nodes in the interpolation scale of each axis (ln E,
linear angles), with linear extrapolation up to the axis edges and zero beyond them, as gammapy
2.1's ``ScaledRegularGridInterpolator``. The background is interpolated in log values and each
energy bin is integrated as a power law between its edges (gammapy's ``integrate_log_log``).
"""

from dataclasses import dataclass

import numpy as np

__all__ = [
    "IrfAxis",
    "EffectiveArea",
    "EnergyDispersion",
    "Background",
    "interp_missing_energy",
    "log_values",
    "aeff_values_m2",
    "edisp_kernel",
    "bkg_log_rate_at_edges",
    "integrate_power_law_log",
    "trapezoid",
]

TINY_F32 = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class IrfAxis:
    """An IRF axis: ``nodes`` and ``edges`` in the interpolation scale (ln E or linear)."""

    name: str
    nodes: np.ndarray
    edges: np.ndarray
    log: bool

    @classmethod
    def from_lo_hi(cls, name, lo, hi, log):
        """Axis from GADF ``_LO``/``_HI`` columns, as gammapy's ``MapAxes.from_table``.

        Equal ``lo`` and ``hi`` are nodes (edges half way between them, extrapolated at the
        ends); otherwise they are bin edges with centres half way in the interpolation scale.
        """
        lo = np.atleast_1d(np.asarray(lo, dtype=float))
        hi = np.atleast_1d(np.asarray(hi, dtype=float))
        scale = np.log if log else (lambda x: x)
        if np.allclose(lo, hi):
            nodes = scale(lo)
            if len(nodes) == 1:
                edges = np.array([nodes[0] - 0.5, nodes[0] + 0.5])
            else:
                pix = np.arange(len(nodes) + 1) - 0.5
                edges = _interp_extrapolate(pix, np.arange(len(nodes)), nodes)
        else:
            edges = scale(np.append(lo, hi[-1]))
            nodes = 0.5 * (edges[:-1] + edges[1:])
        return cls(name=name, nodes=nodes, edges=edges, log=log)

    def scaled(self, values):
        """Values in the interpolation scale."""
        values = np.asarray(values, dtype=float)
        if not self.log:
            return values
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(values)

    def padded(self):
        """The axis with one more bin of the same width at each end (gammapy's ``pad(1)``)."""
        edges = self.edges
        edges = np.concatenate([[2 * edges[0] - edges[1]], edges, [2 * edges[-1] - edges[-2]]])
        nodes = 0.5 * (edges[:-1] + edges[1:])
        return IrfAxis(self.name, nodes, edges, self.log)


def _interp_extrapolate(x, xp, fp):
    """Piecewise-linear interpolation with linear extrapolation beyond the ends."""
    x = np.asarray(x, dtype=float)
    y = np.interp(x, xp, fp)
    lo, hi = x < xp[0], x > xp[-1]
    y[lo] = fp[0] + (x[lo] - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0])
    y[hi] = fp[-1] + (x[hi] - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    return y


@dataclass(frozen=True)
class EffectiveArea:
    """AEFF_2D: ``values_m2[i_energy, i_offset]`` with the safe thresholds of its header."""

    energy: IrfAxis
    offset: IrfAxis
    values_m2: np.ndarray
    lo_thres_tev: float | None
    hi_thres_tev: float | None
    #: ``HDUCLAS3 = POINT-LIKE``: the area of the events within RAD_MAX of a point source
    point_like: bool = False


@dataclass(frozen=True)
class EnergyDispersion:
    """EDISP_2D: ``values[i_energy_true, i_migra, i_offset]``, the probability density of the
    migration ``E_reco / E_true`` (per unit migration).

    ``point_like``: the HDU says ``HDUCLAS3 = POINT-LIKE`` (such files often have a single
    offset bin; the values are then the same at every offset inside it).
    """

    energy: IrfAxis
    migra: IrfAxis
    offset: IrfAxis
    values: np.ndarray
    point_like: bool = False


@dataclass(frozen=True)
class Background:
    """BKG_3D (``values[i_energy, i_lon, i_lat]``) or BKG_2D (``values[i_energy, i_offset]``).

    Values are in s-1 MeV-1 sr-1. ``alignment`` is ``RADEC``, ``REVERSE_LON_RADEC`` (the H.E.S.S.
    DR1 files) or ``ALTAZ``; ``spatial`` holds the (lon, lat) axes or the (offset,) axis.
    """

    energy: IrfAxis
    spatial: tuple
    values: np.ndarray
    alignment: str = "RADEC"

    @property
    def is_3d(self):
        return len(self.spatial) == 2


def _bracket(nodes, x):
    """Index of the lower node and the fractional position for linear interpolation.

    Positions beyond the first or last node extrapolate linearly from the outer pair.
    """
    n = len(nodes)
    if n == 1:
        return np.zeros(np.shape(x), dtype=int), np.zeros(np.shape(x)), True
    x = np.asarray(x, dtype=float)
    step = (nodes[-1] - nodes[0]) / (n - 1)
    if step > 0 and np.all(np.abs(nodes - (nodes[0] + step * np.arange(n))) <= 0.25 * step):
        # (nearly) even nodes: the index from arithmetic is off by at most one, then
        # corrected to what searchsorted gives (a binary search per value costs 3x more)
        with np.errstate(invalid="ignore"):
            guess = np.asarray(np.subtract(x, nodes[0]))
            guess /= step
            # NaN -> 0 (fmax), then into [0, n - 2]: the floor is the integer part
            np.minimum(np.fmax(guess, 0.0, out=guess), n - 2, out=guess)
        idx = guess.astype(np.intp)
        # one step down below the lower node, up at or above the upper one; NaN at the
        # ends, where no step is taken (a comparison with NaN is False)
        lower = np.array(nodes, dtype=float)
        lower[0] = np.nan
        upper = np.array(nodes[1:], dtype=float)
        upper[-1] = np.nan
        idx -= x < lower[idx]
        idx += x >= upper[idx]
    else:
        idx = np.clip(np.searchsorted(nodes, x, side="right") - 1, 0, n - 2)
    # nodes[idx + 1] - nodes[idx], the same subtraction, from the n - 1 widths
    t = (x - nodes[idx]) / np.diff(nodes)[idx]
    return idx, t, False


def _inside(axis, x):
    return (x >= axis.edges[0]) & (x <= axis.edges[-1])


def interp_1d_axis(values, axis, x, along=0):
    """Linear interpolation of ``values`` along ``along`` at positions ``x`` (scaled)."""
    idx, t, single = _bracket(axis.nodes, x)
    v = np.moveaxis(values, along, 0)
    if single:
        out = v[idx]
    else:
        shape = (len(np.atleast_1d(x)),) + (1,) * (v.ndim - 1)
        t = np.reshape(t, shape)
        out = v[idx] * (1 - t) + v[idx + 1] * t
    return np.moveaxis(out, 0, along)


def aeff_values_m2(aeff, energy_tev, offset_deg, scale=1.0):
    """Effective area (m2) at energies ``energy_tev`` (n,) and offsets (any shape).

    Returns an array of shape ``(n,) + offset.shape``; non-finite or negative values become 0.
    ``scale`` multiplies the result (e.g. a live time, for an exposure in m2 s).
    """
    log_e = aeff.energy.scaled(energy_tev)
    values = np.nan_to_num(aeff.values_m2, nan=0.0, posinf=0.0, neginf=0.0)
    per_energy = interp_1d_axis(values, aeff.energy, log_e, along=0)  # (n, n_offset)
    per_energy[~_inside(aeff.energy, log_e)] = 0.0
    offset = np.asarray(offset_deg, dtype=float)
    flat = offset.ravel()
    idx, t, single = _bracket(aeff.offset.nodes, flat)
    if single:
        out = np.take(per_energy, idx, axis=1, mode="clip")
    else:
        # lower node plus t times the step to the next: one gather of each per energy row
        step = np.diff(per_energy, axis=1)
        out = np.take(step, idx, axis=1, mode="clip")
        out *= t
        out += np.take(per_energy, idx, axis=1, mode="clip")
    outside = ~_inside(aeff.offset, flat)
    if outside.any():
        np.copyto(out, 0.0, where=outside)
    np.clip(out, 0.0, None, out=out)
    if scale != 1.0:
        out *= scale
    return out.reshape((len(log_e),) + offset.shape)


def _edisp_density(values, offset_axis, offset):
    """EDISP_2D density at the migration nodes and offsets: shape (n_offset, n_true, n_migra).

    ``values``: (n_offset_nodes, n_true, n_migra), already interpolated in energy. Linear in
    offset with linear extrapolation, as gammapy's IRF interpolator; non-finite results give 0
    and negative ones are clipped. (Offsets outside the edges are the caller's business.)
    """
    idx, t, single = _bracket(offset_axis.nodes, offset)
    if single:
        out = values[idx]
    else:
        # lower node plus t times the step to the next
        out = np.diff(values, axis=0)[idx]
        out *= t[:, None, None]
        out += values[idx]
    if not np.all(np.isfinite(values)):
        out[~np.isfinite(out)] = 0.0
    return np.maximum(out, 0.0, out=out)


def _migra_bins(edges, migra):
    """The migration bin of each of ``migra`` and its fraction in it (clipped to the first
    and last bin, fraction in [0, 1]): how `_cdf_at_edges` reads the cumulative sum."""
    idx = np.clip(np.searchsorted(edges, migra, side="right") - 1, 0, len(edges) - 2)
    t = np.clip((migra - edges[idx]) / (edges[idx + 1] - edges[idx]), 0.0, 1.0)
    return idx, t


def _cdf_at_edges(density_width, edges, migra):
    """Cumulative integral of ``density * width`` (last axis: the migration bins between
    ``edges``) at the migrations ``migra`` (n_true, m), piecewise linear between the edges and
    constant beyond them (gammapy's edge padding); and the total. Shapes (..., n_true, m) and
    (..., n_true, 1)."""
    cumulative = np.cumsum(density_width, axis=-1)
    idx, t = _migra_bins(edges, migra)
    k = np.arange(migra.shape[0])[:, None]
    lower = np.where(idx > 0, cumulative[..., k, np.maximum(idx - 1, 0)], 0.0)
    return lower * (1 - t) + cumulative[..., k, idx] * t, cumulative[..., -1:]


def _add_clipped(cdf, total, values, idx, t, width, edges, migra):
    """Add to the interpolated ``cdf`` (n, n_true, m) and ``total`` (n, n_true, 1) of pixels
    between offset nodes ``idx`` and ``idx + 1`` (fraction ``t``) what clipping the density at
    zero adds: ``max(-d, 0)`` for each entry ``d`` (linear in offset) that is negative at
    either node, weighted as `_cdf_at_edges` weighs its migration bin."""
    n_true, m = migra.shape
    # weight of migration bin j in the cdf at migra[k, r]: 1 below its bin, the fraction in it
    bin_idx, frac = _migra_bins(edges, migra)
    j = np.arange(len(width))
    weight = (j < bin_idx[..., None]) + (j == bin_idx[..., None]) * frac[..., None]
    negative = values < 0
    for i in np.unique(idx):
        k, jj = np.nonzero(negative[i] | negative[i + 1])
        if k.size == 0:
            continue
        pix = np.flatnonzero(idx == i)
        low = values[i, k, jj]
        # as `_edisp_density`: the lower node plus t times the step to the next
        density = (values[i + 1, k, jj] - low) * t[pix, None]
        density += low
        added = np.maximum(-density, 0.0) * width[jj]  # (pixels, entries)
        rows = np.arange(k.size)
        to_cdf = np.zeros((k.size, n_true, m))
        to_cdf[rows, k] = weight[k, :, jj]
        cdf[pix] += (added @ to_cdf.reshape(k.size, -1)).reshape(pix.size, n_true, m)
        to_total = np.zeros((k.size, n_true))
        to_total[rows, k] = 1.0
        total[pix, :, 0] += added @ to_total


def edisp_kernel(edisp, offset_deg, energy_true_edges_tev, energy_edges_tev, threshold=1e-8):
    """Probability that an event of each true-energy bin is reconstructed in each bin.

    What gammapy 2.1's ``make_edisp_kernel_map`` computes per pixel: the EDISP_2D density at
    the true-energy bin centres (geometric) and the migration nodes (linear in ln E and offset,
    extrapolating; zero beyond the offset edges, clipped at zero), normalised along the
    migration so that it integrates to one, integrated (piecewise-linear cumulative sum over
    the migration edges) between ``E_reco / E_true`` of consecutive reconstructed-energy edges;
    probabilities below ``threshold`` are set to zero.

    Between the offset nodes (no extrapolation) the density is linear in offset, and so are
    its integrals: they are interpolated from the nodes' (the same numbers up to rounding, for
    a fraction of the work), and the few entries that the clipping at zero changes (a
    negative value at either node) are corrected (`_add_clipped`).

    Parameters
    ----------
    edisp : `~ringbg.dl3.EnergyDispersion`
        The energy dispersion.
    offset_deg : array-like
        Offsets from the pointing (any shape ``s``).
    energy_true_edges_tev, energy_edges_tev : array-like
        True and reconstructed energy bin edges (TeV).
    threshold : float
        Smaller probabilities are zero (gammapy's removal of numerical noise).

    Returns
    -------
    kernel : `~numpy.ndarray`
        Shape ``s + (n_true, n_reco)``.
    """
    e_true = np.asarray(energy_true_edges_tev, dtype=float)
    e_reco = np.asarray(energy_edges_tev, dtype=float)
    centers = np.sqrt(e_true[:-1] * e_true[1:])
    shape = np.shape(offset_deg)
    offset = np.ravel(np.asarray(offset_deg, dtype=float))
    values = interp_1d_axis(edisp.values, edisp.energy, np.log(centers), along=0)
    values = np.ascontiguousarray(np.moveaxis(values, 2, 0))  # (n_nodes, n_true, n_migra)
    edges = edisp.migra.edges
    width = np.diff(edges)
    migra = e_reco[None, :] / centers[:, None]  # (n_true, n_reco + 1)
    nodes = edisp.offset.nodes
    inside = _inside(edisp.offset, offset)
    linear = inside & (offset >= nodes[0]) & (offset <= nodes[-1])
    if not np.all(np.isfinite(values)):
        linear[:] = False
    cdf = np.zeros((len(offset), len(centers), len(e_reco)))
    total = np.zeros((len(offset), len(centers), 1))
    if linear.any():
        idx, t, single = _bracket(nodes, offset[linear])
        if single:
            node_cdf, node_total = _cdf_at_edges(np.maximum(values, 0.0) * width, edges, migra)
            cdf[linear], total[linear] = node_cdf[idx], node_total[idx]
        else:
            node_cdf, node_total = _cdf_at_edges(values * width, edges, migra)
            tt = t[:, None, None]
            lin_cdf = node_cdf[idx] * (1 - tt) + node_cdf[idx + 1] * tt
            lin_total = node_total[idx] * (1 - tt) + node_total[idx + 1] * tt
            if np.any(values < 0):
                _add_clipped(lin_cdf, lin_total, values, idx, t, width, edges, migra)
            cdf[linear], total[linear] = lin_cdf, lin_total
    other = inside & ~linear
    if other.any():
        density = _edisp_density(values, edisp.offset, offset[other])
        density *= width
        cdf[other], total[other] = _cdf_at_edges(density, edges, migra)
    with np.errstate(invalid="ignore", divide="ignore"):
        # normalised to one (gammapy's Map.normalize); no dispersion known: zero
        cdf = np.nan_to_num(cdf / total)
    kernel = np.clip(np.diff(cdf, axis=-1), 0.0, None)
    kernel[kernel < threshold] = 0.0
    return kernel.reshape(shape + kernel.shape[1:])


def interp_missing_energy(values):
    """Fill zero or non-finite values along axis 0 by log-linear interpolation.

    As gammapy's ``interp_missing_data(axis_name="energy")``: for each spatial bin, a missing
    value is replaced by interpolating the log of the valid values in the bin index, only when
    it is bracketed by valid values (no extrapolation at the ends). Negative values are valid
    and count as float32 tiny in the log, as there.
    """
    values = np.array(values, dtype=float, copy=True)
    flat = values.reshape(values.shape[0], -1)
    valid = np.isfinite(flat) & (flat != 0)
    n = flat.shape[0]
    # missing entries with a valid one below and above them: between the first and the last
    # valid index of their spatial bin
    row = np.arange(n)[:, None]
    first = np.argmax(valid, axis=0)
    last = n - 1 - np.argmax(valid[::-1], axis=0)
    fill = ~valid & (row > first) & (row < last) & valid.any(axis=0)
    if not fill.any():
        return values
    # in the spatial bins that have one: the nearest valid index below and above
    cols_fill = np.flatnonzero(fill.any(axis=0))
    sub = valid[:, cols_fill]
    below = np.maximum.accumulate(np.where(sub, row, -1), axis=0)
    above = np.flip(np.minimum.accumulate(np.flip(np.where(sub, row, n), axis=0), axis=0),
                    axis=0)
    rows, k = np.nonzero(fill[:, cols_fill])
    cols = cols_fill[k]
    lo, hi = below[rows, k], above[rows, k]
    with np.errstate(divide="ignore"):
        log_lo = np.log(np.maximum(flat[lo, cols], TINY_F32))
        log_hi = np.log(np.maximum(flat[hi, cols], TINY_F32))
    t = (rows - lo) / (hi - lo)
    flat[rows, cols] = np.exp(log_lo + t * (log_hi - log_lo))
    return flat.reshape(values.shape)


def log_values(values):
    """Natural log of IRF values as gammapy takes it: float32, zeros clipped at float32 tiny."""
    v = np.asarray(values, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        return np.log(np.maximum(v, np.float32(TINY_F32)))


def bkg_log_rate_at_edges(bkg, log_values_e, energy_edges_tev, spatial_coords):
    """Log of the background rate (s-1 MeV-1 sr-1) at the reconstructed-energy edges.

    Parameters
    ----------
    bkg : `~ringbg.dl3.Background`
        The background IRF.
    log_values_e : `~numpy.ndarray`
        ``log_values(bkg.values)`` (cached by the caller).
    energy_edges_tev : `~numpy.ndarray`
        Energy edges (m,) in TeV.
    spatial_coords : tuple of `~numpy.ndarray`
        (fov_lon, fov_lat) in deg for BKG_3D or (offset,) for BKG_2D, any common shape ``s``.

    Returns
    -------
    log_rate : `~numpy.ndarray`
        Shape ``(m,) + s``, multilinear in (ln E, lon, lat) or (ln E, offset).
    inside : `~numpy.ndarray`
        Shape ``(m,) + s``: False where a coordinate is outside the IRF axis edges.
    """
    log_e = np.log(energy_edges_tev)
    planes = interp_1d_axis(log_values_e, bkg.energy, log_e, along=0)
    e_inside = _inside(bkg.energy, log_e)
    shape = np.shape(spatial_coords[0])
    m = len(log_e)
    # one row per energy edge: each corner is one gather of all pixels per row
    table = planes.reshape(m, -1)
    spatial_shape = planes.shape[1:]
    strides = [int(np.prod(spatial_shape[k + 1:])) for k in range(len(spatial_shape))]
    inside = np.ones(int(np.prod(shape)), dtype=bool)
    corners = None  # (flat index, weight) of each corner of the pixels' IRF cells
    for axis, coord, stride in zip(bkg.spatial, spatial_coords, strides):
        flat = np.ravel(coord)
        idx, t, single = _bracket(axis.nodes, flat)
        lo = idx * stride if stride != 1 else idx
        hi = lo if single else lo + stride
        pairs = ((lo, 1.0 - t), (hi, t))
        corners = list(pairs) if corners is None else [
            (c + i, w * f) for c, w in corners for i, f in pairs]
        inside &= _inside(axis, flat)
    log_rate = term = None
    for flat_index, weight in corners:
        term = np.take(table, flat_index, axis=1, out=term, mode="clip")
        term *= weight
        if log_rate is None:
            log_rate, term = term, None
        else:
            log_rate += term
    # the pixels' row for each edge, False for the edges outside (row copies: a broadcast
    # logical_and of booleans is several times slower)
    inside = np.repeat(inside[None, :], m, axis=0)
    inside[~e_inside] = False
    return log_rate.reshape((m,) + shape), inside.reshape((m,) + shape)


def integrate_power_law_log(log_y, inside, energy_edges):
    """Integrate along axis 0 between consecutive edges, each bin as a power law.

    gammapy's ``integrate_log_log`` on ``exp(log_y)`` (zero where not ``inside``). With
    ``g`` the bin's index and ``r = E_hi / E_lo``, ``y_lo E_lo (r**(1-g) - 1) / (1-g)`` equals
    ``(E_hi y_hi - E_lo y_lo) / (1-g)``: one exponential per edge value, none per bin.
    ``log_y`` comes from `log_values` (>= log of float32 tiny), so a value is zero only
    outside the IRF.
    """
    e = np.asarray(energy_edges, dtype=float).reshape((-1,) + (1,) * (log_y.ndim - 1))
    log_ratio_e = np.log(e[1:] / e[:-1])
    ey = np.exp(log_y)
    ey *= e
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        val = np.subtract(log_y[1:], log_y[:-1])
        val /= log_ratio_e
        val += 1.0
        integral = np.subtract(ey[1:], ey[:-1])
        integral /= val
        flat = np.abs(val, out=val) <= 1e-8  # (val is not used again)
        if flat.any():
            integral[flat] = (ey[:-1] * log_ratio_e)[flat]
    both = inside[:-1] & inside[1:]
    if not both.all():
        np.copyto(integral, 0.0, where=~both)
    return integral


def trapezoid(y, x, axis=-1):
    """Trapezoidal integral of ``y`` over ``x`` along ``axis``: numpy >= 2's ``trapezoid``
    (``trapz`` before), written out so that numpy 1.26 gives the same bits."""
    y = np.asarray(y, float)
    shape = [1] * y.ndim
    shape[axis] = -1
    d = np.diff(np.asarray(x, float)).reshape(shape)
    upper = [slice(None)] * y.ndim
    lower = [slice(None)] * y.ndim
    upper[axis], lower[axis] = slice(1, None), slice(None, -1)
    return (d * (y[tuple(upper)] + y[tuple(lower)]) / 2.0).sum(axis)
