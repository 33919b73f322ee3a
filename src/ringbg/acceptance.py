"""The acceptance built from the events themselves: the ``data`` background template.

The radial method (Berge, Funk & Hinton 2007, A&A 466, 1219, section 4): per observation,
the counts outside the exclusion regions and the solid angle outside them are histogrammed
in fine bins of field-of-view offset, per reconstructed-energy bin. Dividing the two gives
the background density per steradian at each offset; the excluded area and the edge of the
map or field of view only remove solid angle, so they need no other correction.

- Energy bins are merged, from the highest down, until a group has ``min_counts_group``
  counts; the bins of a group share one radial shape.
- The shape is smoothed with a minimum number of counts per node: fine offset bins are
  merged, from the centre out, until a node has ``min_counts_node`` counts; the nodes sit
  at their solid-angle-weighted mean offsets. Default (``smoothing="fit"``,
  ``interpolation="log"``): the log density is piecewise linear between the nodes
  (constant inside the first, the last segment extended beyond the last) and its node
  values are a Poisson maximum-likelihood fit to the fine bins (`fit_log_density`): it
  reproduces each node's counts and follows the steep fall-off at the edge of the field of
  view, where a node's mean density placed at one offset is biased. ``smoothing="nodes"``:
  the node values are the nodes' counts over their solid angles.
- Template value of a pixel = density(offset) x pixel solid angle, zero beyond
  ``offset_max_deg``; each energy bin is scaled so that the template summed over the
  usable pixels equals the counts there, so the template predicts the observation's counts
  outside the exclusion regions.
- Several observations can share one shape (`pooled_shape`: runs of similar zenith angle,
  or a list of off observations), each still normalised to its own counts.

Plain numpy on arrays: counts cubes ``(n_energy, ny, nx)``, images ``(ny, nx)``.
"""

from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULTS",
    "RadialShape",
    "density_at",
    "fine_offset_edges_deg",
    "fit_log_density",
    "group_images",
    "merge_energy_bins",
    "normalise_to_counts",
    "offset_nodes",
    "pooled_shape",
    "radial_data_template",
    "radial_histograms",
    "radial_shape",
]

#: defaults, chosen on the validation runs (H.E.S.S. MSH 15-52, MAGIC Crab, simulated null
#: and source fields; README "Instruments without a background IRF"): nodes of 200 counts
#: (100 behaves the same, 400 worse), groups of about ten nodes
DEFAULTS = {
    "fine_width_deg": 0.02,
    "min_counts_node": 200,
    "min_counts_group": 2000,
    "offset_max_deg": None,
    "interpolation": "log",
    "smoothing": "fit",
    "max_node_width_deg": None,
}


@dataclass
class RadialShape:
    """Radial background densities per energy group.

    Attributes
    ----------
    group : `~numpy.ndarray`
        (n_energy,) index of each energy bin's group.
    node_offset_deg : list of `~numpy.ndarray`
        Per group: the node positions (solid-angle-weighted mean offsets, deg).
    node_density_sr : list of `~numpy.ndarray`
        Per group: the node densities (counts per sr, in the units of the histograms:
        summed over the group's bins, or a relative shape when pooled).
    node_counts : list of `~numpy.ndarray`
        Per group: the counts of each node.
    """

    group: np.ndarray
    node_offset_deg: list
    node_density_sr: list
    node_counts: list


def fine_offset_edges_deg(offset_max_deg, width_deg=DEFAULTS["fine_width_deg"]):
    """Edges of the fine offset bins, ``0, width, 2 width, ...`` up to ``offset_max_deg``.

    The last bin ends at ``offset_max_deg`` exactly (it may be narrower than ``width_deg``).
    """
    if not (offset_max_deg > 0 and width_deg > 0):
        raise ValueError(f"offset_max_deg ({offset_max_deg}) and width_deg ({width_deg}) "
                         "must be positive")
    n = int(np.ceil(offset_max_deg / width_deg - 1e-9))
    edges = np.arange(n + 1) * width_deg
    edges[-1] = offset_max_deg
    return edges


def _bin_index(offset_deg, offset_edges_deg):
    """Fine-bin index of each pixel ([lo, hi) bins), -1 outside the edges."""
    idx = np.searchsorted(offset_edges_deg, offset_deg, side="right") - 1
    idx[(idx < 0) | (idx >= len(offset_edges_deg) - 1)] = -1
    return idx


def radial_histograms(counts, offset_deg, solid_angle_sr, usable, offset_edges_deg):
    """Counts per energy bin and solid angle in fine offset bins, over the usable pixels.

    Parameters
    ----------
    counts : `~numpy.ndarray`
        (n_energy, ny, nx) counts in reconstructed energy.
    offset_deg : `~numpy.ndarray`
        (ny, nx) pixel offsets from the pointing (deg).
    solid_angle_sr : `~numpy.ndarray`
        (ny, nx) pixel solid angles (sr).
    usable : `~numpy.ndarray`
        (ny, nx) bool: pixels outside the exclusion regions (True = usable).
    offset_edges_deg : `~numpy.ndarray`
        Fine offset bin edges (deg).

    Returns
    -------
    counts_hist : `~numpy.ndarray`
        (n_energy, n_bins) counts of the usable pixels per offset bin.
    solid_angle_hist_sr : `~numpy.ndarray`
        (n_bins,) solid angle of the usable pixels per offset bin (sr).
    """
    n_e = counts.shape[0]
    n_bins = len(offset_edges_deg) - 1
    idx = _bin_index(offset_deg, offset_edges_deg)
    keep = np.asarray(usable, bool) & (idx >= 0)
    solid_angle_hist_sr = np.bincount(idx[keep], weights=solid_angle_sr[keep],
                                      minlength=n_bins)
    # counts are sparse: histogram the occupied voxels only
    flat = counts.reshape(n_e, -1)
    e, pix = np.nonzero(flat)
    ok = keep.ravel()[pix]
    e, pix = e[ok], pix[ok]
    where = e * n_bins + idx.ravel()[pix]
    counts_hist = np.bincount(where, weights=flat[e, pix], minlength=n_e * n_bins)
    return counts_hist.reshape(n_e, n_bins), solid_angle_hist_sr


def merge_energy_bins(counts_per_energy, min_counts, energy_mask=None):
    """Groups of adjacent energy bins with at least ``min_counts`` counts each.

    Bins are taken from the highest energy down (where counts are fewest) until a group
    holds ``min_counts``; a remainder at the low end that has fewer joins the group above
    it. Bins outside ``energy_mask`` add no counts and join their neighbour's group.

    Parameters
    ----------
    counts_per_energy : `~numpy.ndarray`
        (n_energy,) counts of each bin (outside the exclusion).
    min_counts : float
        Minimum counts of a group.
    energy_mask : `~numpy.ndarray`, optional
        (n_energy,) bool, the bins whose counts may be used (e.g. the safe ones).

    Returns
    -------
    group : `~numpy.ndarray`
        (n_energy,) int, group index of each bin, 0 for the lowest group. A single group
        when all bins together have fewer than ``min_counts``.
    """
    counts = np.asarray(counts_per_energy, float)
    if energy_mask is not None:
        counts = np.where(energy_mask, counts, 0.0)
    n = len(counts)
    group = np.zeros(n, dtype=int)
    label, total = 0, 0.0
    for k in range(n - 1, -1, -1):
        group[k] = label
        total += counts[k]
        if total >= min_counts and k > 0 and counts[:k].sum() >= min_counts:
            label, total = label + 1, 0.0
    # labels were given top-down: make 0 the lowest group
    return group.max() - group


def offset_nodes(counts_hist, solid_angle_hist_sr, offset_edges_deg, min_counts,
                 max_width_deg=None):
    """Nodes of at least ``min_counts`` counts, from fine offset bins merged outward.

    Parameters
    ----------
    counts_hist : `~numpy.ndarray`
        (n_bins,) counts per fine offset bin.
    solid_angle_hist_sr : `~numpy.ndarray`
        (n_bins,) solid angle per fine offset bin (sr).
    offset_edges_deg : `~numpy.ndarray`
        Fine bin edges (deg).
    min_counts : float
        Minimum counts of a node; the outermost remainder with fewer joins the node
        inside it. Bins without solid angle are skipped.
    max_width_deg : float, optional
        A node also closes when it is this wide, whatever its counts (so that the
        steep fall-off at the edge of the field of view keeps nodes).

    Returns
    -------
    node_offset_deg, node_density_sr, node_counts : `~numpy.ndarray`
        The nodes' solid-angle-weighted mean offsets (deg), counts per sr and counts.
        Empty when no bin has solid angle.
    """
    counts = np.asarray(counts_hist, float)
    area = np.asarray(solid_angle_hist_sr, float)
    lo, hi = offset_edges_deg[:-1], offset_edges_deg[1:]
    has_area = area > 0
    counts, area, lo, hi = counts[has_area], area[has_area], lo[has_area], hi[has_area]
    if len(counts) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    max_width = np.inf if max_width_deg is None else max_width_deg
    ends, total, start = [], 0.0, 0
    for k in range(len(counts)):
        total += counts[k]
        if total >= min_counts or (hi[k] - lo[start] >= max_width and total > 0):
            ends.append(k + 1)
            total, start = 0.0, k + 1
    if not ends:
        ends = [len(counts)]
    elif ends[-1] != len(counts):
        if total >= min(min_counts, 1.0) and hi[-1] - lo[start] >= max_width:
            ends.append(len(counts))
        else:
            ends[-1] = len(counts)  # the remainder joins the last node
    starts = [0] + ends[:-1]
    centre = 0.5 * (lo + hi)
    n_node = np.array([counts[a:b].sum() for a, b in zip(starts, ends)])
    a_node = np.array([area[a:b].sum() for a, b in zip(starts, ends)])
    o_node = np.array([np.sum(centre[a:b] * area[a:b]) for a, b in zip(starts, ends)]) / a_node
    return o_node, n_node / a_node, n_node


def density_at(offset_deg, node_offset_deg, node_density_sr, scale="log"):
    """Density at ``offset_deg`` from the nodes, interpolated between node centres.

    ``scale="log"`` (default): piecewise linear in the log of the density (exact for an
    exponential fall-off, and never negative), extrapolated beyond the last node along the
    last segment and held constant inside the first node; nodes without counts are
    dropped. ``scale="lin"``: piecewise linear, the last segment's line clipped at zero
    beyond the last node. One node: constant.
    """
    if scale not in ("log", "lin"):
        raise ValueError(f"interpolation must be 'log' or 'lin', not {scale!r}")
    x, y = np.asarray(node_offset_deg, float), np.asarray(node_density_sr, float)
    offset = np.asarray(offset_deg, float)
    if scale == "log":
        keep = y > 0
        x, y = x[keep], np.log(y[keep])
    if len(x) == 0:
        return np.zeros_like(offset)
    out = np.interp(offset, x, y)
    if len(x) > 1:
        slope = (y[-1] - y[-2]) / (x[-1] - x[-2])
        beyond = offset > x[-1]
        out[beyond] = y[-1] + slope * (offset[beyond] - x[-1])
    if scale == "log":
        return np.exp(np.minimum(out, y.max()))
    return np.clip(out, 0.0, None)


def _hat_basis(offset_deg, knots_deg):
    """(n, n_knots) weights of piecewise-linear interpolation between knots: constant inside
    the first, the last segment extended beyond the last (as `density_at`)."""
    x = np.asarray(offset_deg, float)
    n_k = len(knots_deg)
    basis = np.zeros((len(x), n_k))
    if n_k == 1:
        basis[:, 0] = 1.0
        return basis
    k = np.clip(np.searchsorted(knots_deg, x, side="right") - 1, 0, n_k - 2)
    t = (x - knots_deg[k]) / (knots_deg[k + 1] - knots_deg[k])
    t = np.where(x < knots_deg[0], 0.0, t)  # constant inside the first knot
    rows = np.arange(len(x))
    basis[rows, k] = 1.0 - t
    basis[rows, k + 1] = t
    return basis


def fit_log_density(counts_hist, solid_angle_hist_sr, offset_edges_deg, knots_deg,
                    start_density_sr, n_iter=12):
    """Knot densities of a piecewise-linear log density fitted to the fine bins.

    Poisson likelihood of the fine-bin counts ``n_f ~ Poisson(Omega_f exp(sum_k B_fk b_k))``
    with ``B`` the interpolation weights of `_hat_basis` (log link, Newton / IRLS steps).
    At the optimum each knot's weighted counts are reproduced, ``sum_f B_fk (n_f - mu_f) =
    0``: the smooth density predicts the counts node by node, without the bias of placing
    a node's mean density at one offset where the density is curved (the field-of-view
    edge).

    Returns
    -------
    density_sr : `~numpy.ndarray`
        (n_knots,) fitted densities; the start values where the fit fails.
    """
    area = np.asarray(solid_angle_hist_sr, float)
    counts = np.asarray(counts_hist, float)
    centre = 0.5 * (offset_edges_deg[1:] + offset_edges_deg[:-1])
    keep = area > 0
    basis = _hat_basis(centre[keep], np.asarray(knots_deg, float))
    n, omega = counts[keep], area[keep]
    start = np.log(np.asarray(start_density_sr, float))
    if not np.all(np.isfinite(start)):
        return np.asarray(start_density_sr, float)
    b = start
    for _ in range(n_iter):
        mu = omega * np.exp(basis @ b)
        hessian = basis.T @ (mu[:, None] * basis)
        try:
            step = np.linalg.solve(hessian, basis.T @ (n - mu))
        except np.linalg.LinAlgError:
            return np.exp(start)
        b = b + np.clip(step, -2.0, 2.0)
        if np.max(np.abs(step)) < 1e-6:
            break
    return np.exp(b) if np.all(np.isfinite(b)) else np.exp(start)


def pooled_shape(counts_hists, solid_angle_hists_sr, n_iter=20):
    """One radial shape of several observations, each with its own normalisation.

    Maximum-likelihood solution of ``n_i(r) ~ Poisson(a_i s(r) Omega_i(r))`` by alternating
    ``s(r) = sum_i n_i(r) / sum_i a_i Omega_i(r)`` and ``a_i = sum_r n_i(r) / sum_r s(r)
    Omega_i(r)``. A plain sum of counts over a sum of solid angles is biased where the
    observations exclude different areas at the same offset and have different rates.

    Parameters
    ----------
    counts_hists : `~numpy.ndarray`
        (n_obs, n_bins) counts per offset bin.
    solid_angle_hists_sr : `~numpy.ndarray`
        (n_obs, n_bins) usable solid angle per offset bin (sr).

    Returns
    -------
    counts_equivalent : `~numpy.ndarray`
        (n_bins,) the pooled counts per bin (for the node merging).
    solid_angle_equivalent_sr : `~numpy.ndarray`
        (n_bins,) ``sum_i a_i Omega_i(r)`` scaled so that the ratio of the two is ``s(r)``
        in counts per sr of the summed observations.
    """
    n = np.asarray(counts_hists, float)
    area = np.asarray(solid_angle_hists_sr, float)
    total = n.sum(axis=1)
    a = total / np.maximum(area.sum(axis=1), 1e-300)  # flat start
    for _ in range(n_iter):
        weight = (a[:, None] * area).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(weight > 0, n.sum(axis=0) / weight, 0.0)
        expected = (s[None] * area).sum(axis=1)
        a = np.where(expected > 0, total / np.maximum(expected, 1e-300), 0.0)
    weight = (a[:, None] * area).sum(axis=0)
    # express s in counts per sr of the sum: scale so sum(weight) = sum(area)
    scale = area.sum() / weight.sum() if weight.sum() > 0 else 1.0
    return n.sum(axis=0), weight * scale


def radial_shape(counts_hist, solid_angle_hist_sr, offset_edges_deg,
                 min_counts_node=DEFAULTS["min_counts_node"],
                 min_counts_group=DEFAULTS["min_counts_group"], energy_mask=None,
                 smoothing=None, max_node_width_deg=None):
    """The `RadialShape` of radial histograms: energy groups, then nodes per group.

    Parameters
    ----------
    counts_hist : `~numpy.ndarray`
        (n_energy, n_bins) counts per energy and fine offset bin of one observation, or
        (n_obs, n_energy, n_bins) of several sharing one shape (`pooled_shape`).
    solid_angle_hist_sr : `~numpy.ndarray`
        (n_bins,), or (n_obs, n_bins) with several observations: usable solid angle (sr).
    offset_edges_deg : `~numpy.ndarray`
        Fine bin edges (deg), common to all observations.
    min_counts_node, min_counts_group : float
        Minimum counts of an offset node and of an energy group (all observations).
    energy_mask : `~numpy.ndarray`, optional
        (n_energy,) bins whose counts may be used.
    smoothing : {"fit", "nodes"}, optional
        Node values from the Poisson fit (`fit_log_density`) or the nodes' counts over
        their solid angles; default ``DEFAULTS["smoothing"]``.
    max_node_width_deg : float, optional
        See `offset_nodes`.
    """
    smoothing = DEFAULTS["smoothing"] if smoothing is None else smoothing
    if smoothing not in ("fit", "nodes"):
        raise ValueError(f"smoothing must be 'fit' or 'nodes', not {smoothing!r}")
    hist = np.asarray(counts_hist, float)
    hist = hist[None] if hist.ndim == 2 else hist
    area = np.asarray(solid_angle_hist_sr, float).reshape(hist.shape[0], -1)
    n_e = hist.shape[1]
    mask = np.ones(n_e, bool) if energy_mask is None else np.asarray(energy_mask, bool)
    group = merge_energy_bins(hist.sum(axis=(0, 2)), min_counts_group, mask)
    offsets, densities, node_counts = [], [], []
    for g in range(group.max() + 1):
        sel = (group == g) & mask
        if not sel.any():
            sel = group == g
        per_obs = hist[:, sel].sum(axis=1)
        if len(per_obs) == 1:
            n, omega = per_obs[0], area[0]
        else:
            n, omega = pooled_shape(per_obs, area)
        o, d, c = offset_nodes(n, omega, offset_edges_deg, min_counts_node,
                               max_node_width_deg)
        if smoothing == "fit" and len(o) > 1:
            d = fit_log_density(n, omega, offset_edges_deg, o, d)
        offsets.append(o)
        densities.append(d)
        node_counts.append(c)
    return RadialShape(group, offsets, densities, node_counts)


def group_images(shape, offset_deg, solid_angle_sr, offset_max_deg=None,
                 interpolation=DEFAULTS["interpolation"]):
    """Unnormalised template images: density(offset) x pixel solid angle per energy group.

    Parameters
    ----------
    shape : `RadialShape`
    offset_deg, solid_angle_sr : `~numpy.ndarray`
        (ny, nx) pixel offsets (deg) and solid angles (sr).
    offset_max_deg : float, optional
        Zero beyond it.
    interpolation : {"log", "lin"}
        See `density_at`.

    Returns
    -------
    images : `~numpy.ndarray`
        (n_groups, ny, nx); the template of energy bin ``k`` is proportional to
        ``images[shape.group[k]]``.
    """
    inside = np.ones(offset_deg.shape, bool) if offset_max_deg is None else (
        offset_deg < offset_max_deg)
    omega = np.where(inside, solid_angle_sr, 0.0)
    return np.stack([density_at(offset_deg, o, d, interpolation) * omega
                     for o, d in zip(shape.node_offset_deg, shape.node_density_sr)])


def normalise_to_counts(template, counts, usable):
    """Scale each energy bin of ``template`` so its sum over ``usable`` equals the counts
    there (in place; bins without usable template or counts become zero).

    Parameters
    ----------
    template, counts : `~numpy.ndarray`
        (n_energy, ny, nx).
    usable : `~numpy.ndarray`
        (ny, nx) bool.

    Returns
    -------
    template : `~numpy.ndarray`
        The same array.
    """
    usable = np.asarray(usable, bool)
    predicted = template[:, usable].sum(axis=1)
    observed = counts[:, usable].sum(axis=1, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(predicted > 0, observed / predicted, 0.0)
    template *= scale[:, None, None]
    return template


def _usable(offset_deg, exclusion, offset_max_deg):
    usable = np.ones(offset_deg.shape, bool) if exclusion is None else np.asarray(exclusion,
                                                                                   bool)
    if offset_max_deg is not None:
        usable = usable & (offset_deg < offset_max_deg)
    return usable


def radial_data_template(counts, offset_deg, solid_angle_sr, exclusion=None,
                         offset_max_deg=DEFAULTS["offset_max_deg"],
                         fine_width_deg=DEFAULTS["fine_width_deg"],
                         min_counts_node=DEFAULTS["min_counts_node"],
                         min_counts_group=DEFAULTS["min_counts_group"],
                         interpolation=DEFAULTS["interpolation"],
                         smoothing=DEFAULTS["smoothing"],
                         max_node_width_deg=DEFAULTS["max_node_width_deg"], energy_mask=None,
                         shape=None):
    """The radial data template of one observation on its cutout.

    Parameters
    ----------
    counts : `~numpy.ndarray`
        (n_energy, ny, nx) counts.
    offset_deg, solid_angle_sr : `~numpy.ndarray`
        (ny, nx) pixel offsets from the pointing (deg) and solid angles (sr).
    exclusion : `~numpy.ndarray`, optional
        (ny, nx) bool, True = usable for the background.
    offset_max_deg : float, optional
        Template zero beyond; default: none (the whole cutout, so that every count that
        can enter a ring has acceptance).
    fine_width_deg, min_counts_node, min_counts_group : float
        See `fine_offset_edges_deg` and `radial_shape`.
    interpolation : {"log", "lin"}
        Between node centres: linear in log density or in density (`density_at`).
    energy_mask : `~numpy.ndarray`, optional
        (n_energy,) bins whose counts may build the shape (e.g. the safe ones).
    shape : `RadialShape`, optional
        A shape built elsewhere (`pooled_shape` of a group of observations); then only the
        normalisation comes from this observation.

    Returns
    -------
    template : `~numpy.ndarray`
        (n_energy, ny, nx) predicted background counts; per energy bin, its sum over the
        usable pixels equals the counts there.
    """
    usable = _usable(offset_deg, exclusion, offset_max_deg)
    if offset_max_deg is None:
        edge = float(offset_deg.max()) * (1 + 1e-9)
    else:
        edge = offset_max_deg
    # with a given shape only the totals are needed: one offset bin
    edges = fine_offset_edges_deg(edge, fine_width_deg if shape is None else edge)
    hist, area = radial_histograms(counts, offset_deg, solid_angle_sr, usable, edges)
    if shape is None:
        shape = radial_shape(hist, area, edges, min_counts_node, min_counts_group,
                             energy_mask, smoothing, max_node_width_deg)
    images = group_images(shape, offset_deg, solid_angle_sr, offset_max_deg, interpolation)
    # per energy bin: the counts of the usable pixels over the template's sum there
    observed = hist.sum(axis=1)
    predicted = images[:, usable].sum(axis=1)[shape.group]
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(predicted > 0, observed / predicted, 0.0)
    return images[shape.group] * scale[:, None, None]
