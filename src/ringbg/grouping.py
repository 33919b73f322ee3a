"""Radial shapes shared by groups of observations, for the background built from the data.

With ``background.data.group`` ``zenith`` or ``all``, or with ``off_obs_ids``, the radial
shape of an observation's template comes from several observations: a first pass over them
histograms their events (counts and solid angle outside the exclusion, per energy bin and
fine offset bin, `histogram_task`), `group_shapes` pools each group's histograms into one
`~ringbg.acceptance.RadialShape`, and the reduction of each observation normalises that
shape to its own counts. Off observations are histogrammed on a geometry of their own,
centred on their pointing, with the exclusion regions of the config.
"""

import numpy as np

from .acceptance import fine_offset_edges_deg, radial_histograms, radial_shape
from .errors import DL3Error

__all__ = ["common_offset_edges_deg", "observation_zenith_deg", "histogram_task",
           "group_shapes"]


def common_offset_edges_deg(offset_max_deg, fine_width_deg):
    """Fine offset edges that cover any pixel of a square cutout of half-width
    ``offset_max_deg`` (its corners are ``sqrt(2)`` times as far)."""
    return fine_offset_edges_deg(np.sqrt(2.0) * offset_max_deg + fine_width_deg,
                                 fine_width_deg)


def observation_zenith_deg(obs, obs_row=None):
    """Zenith angle of the pointing: ``90 - ALT_PNT`` of the EVENTS header, else the
    obs-index ``ZEN_PNT``; `DL3Error` when neither is known."""
    alt = obs.meta.get("ALT_PNT")
    if isinstance(alt, (int, float)) and np.isfinite(alt):
        return 90.0 - float(alt)
    zen = (obs_row or {}).get("ZEN_PNT")
    if isinstance(zen, (int, float)) and np.isfinite(zen):
        return float(zen)
    raise DL3Error(f"observation {obs.obs_id}: no zenith angle (ALT_PNT in the EVENTS header "
                   "or ZEN_PNT in the obs-index) to group it by (background.data.group: "
                   "zenith)")


def histogram_task(store, obs_id, geom, exclusion, offset_max_deg, edges_deg, own_geom):
    """Radial histograms of one observation: ``(zenith_deg, counts (n_e, n_bins),
    solid angle (n_bins,))``.

    ``own_geom``: a function ``pointing -> (geom, exclusion)`` for observations off the map
    (None: the map's geometry and ``exclusion``).
    """
    from .reduce import bin_events

    obs = store.load(obs_id)
    if own_geom is not None:
        geom, exclusion = own_geom(obs.pointing_ra_deg, obs.pointing_dec_deg)
    slices = geom.cutout_slices(obs.pointing_ra_deg, obs.pointing_dec_deg, 2 * offset_max_deg)
    if slices is None:
        raise DL3Error(f"observation {obs_id}: its cutout does not overlap the map")
    sy, sx = slices
    counts = bin_events(geom, slices, obs.ra_deg, obs.dec_deg, obs.energy_tev)
    offset = geom.pointing_frame(slices, obs.pointing_ra_deg, obs.pointing_dec_deg)[2]
    usable = np.ones(offset.shape, bool) if exclusion is None else exclusion[slices]
    hist, area = radial_histograms(counts, offset, np.asarray(geom.solid_angle_sr[sy, sx],
                                                              float), usable, edges_deg)
    return observation_zenith_deg(obs, store.obs_info(obs_id)), hist, area


def group_shapes(histograms, mode, zenith_bin_deg, edges_deg, shape_ids, params):
    """One radial shape per group, and the group of each observation.

    Parameters
    ----------
    histograms : dict
        ``obs_id -> (zenith_deg, counts_hist, solid_angle_hist)``, of the observations that
        give shapes and of those that take them.
    mode : {"zenith", "all", "run"}
        How observations are grouped (``run`` with off observations: one group).
    zenith_bin_deg : float
        Width of the zenith bins.
    edges_deg : `~numpy.ndarray`
        The fine offset edges of the histograms.
    shape_ids : list of int
        The observations whose events make the shapes (the off runs, or all of them).
    params : dict
        ``min_counts_node``, ``min_counts_group``, ``smoothing``.

    Returns
    -------
    shapes : dict
        ``obs_id -> RadialShape`` for every observation of ``histograms``.
    """
    ids = list(histograms)
    zenith = np.array([histograms[i][0] for i in ids])
    if mode == "zenith":
        bins = np.floor(zenith / zenith_bin_deg).astype(int)
    else:
        bins = np.zeros(len(ids), dtype=int)
    sources = {i for i in shape_ids if i in histograms}
    by_bin = {}
    for obs_id, b in zip(ids, bins):
        if obs_id in sources:
            by_bin.setdefault(int(b), []).append(obs_id)
    if not by_bin:
        raise DL3Error("no observation to build the background shape from "
                       "(background.data.off_obs_ids)")
    shapes_of_bin = {}
    for b, members in by_bin.items():
        counts = np.stack([histograms[i][1] for i in members])
        areas = np.stack([histograms[i][2] for i in members])
        shapes_of_bin[b] = radial_shape(counts, areas, edges_deg, params["min_counts_node"],
                                        params["min_counts_group"],
                                        smoothing=params["smoothing"])
    known = np.array(sorted(shapes_of_bin))
    out = {}
    for obs_id, b in zip(ids, bins):
        # an observation whose zenith bin has no shape takes the nearest bin's
        nearest = int(known[np.argmin(np.abs(known - b))])
        out[obs_id] = shapes_of_bin[nearest]
    return out


