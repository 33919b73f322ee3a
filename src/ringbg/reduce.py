"""One observation -> counts, exposure and background cubes and the safe mask on its cutout.

What gammapy 2.1's ``DatasetsMaker(cutout_mode="trim")`` + ``MapDatasetMaker`` +
``SafeMaskMaker`` compute (see ``ALGORITHMS.md``), on plain arrays. The cutout is an aligned
sub-grid of the full geometry, so all sky coordinates and solid angles come from the full
geometry, computed once.
"""

from dataclasses import dataclass

import numpy as np

from .background import background_template, template_name
from .edisp import observation_response
from .irf import aeff_values_m2
from .safemask import Cutout, safe_mask

__all__ = ["ReducedObservation", "reduce_observation", "bin_events", "empty_mask_reason"]

@dataclass
class ReducedObservation:
    """Per-observation cubes on the cutout ``slices`` of the full geometry.

    Attributes
    ----------
    counts : `~numpy.ndarray`
        (n_energy, ny, nx) float32 counts in reconstructed energy.
    exposure : `~numpy.ndarray`
        (n_true, ny, nx) exposure in m2 s at the true-energy bin centres.
    background : `~numpy.ndarray`
        (n_energy, ny, nx) predicted background counts (the template ``template``).
    mask_safe : `~numpy.ndarray`
        (n_energy, ny, nx) bool.
    template : str
        The background template used (`ringbg.background.TEMPLATES`).
    edisp : `~ringbg.edisp.EdispResponse` or None
        The energy-dispersion kernel on the IRF grid, when asked for.
    point_like : bool
        The effective area is point-like (no flux maps from it).
    gti_tt_s : `~numpy.ndarray` or None
        (n, 2) good time intervals, TT seconds since `ringbg.dl3.GTI_REF_MJD_TT` (None:
        the time reference is unknown).
    """

    obs_id: int
    slices: tuple
    counts: np.ndarray
    exposure: np.ndarray
    background: np.ndarray
    mask_safe: np.ndarray
    livetime_s: float
    ontime_s: float
    template: str = "irf"
    edisp: object = None
    point_like: bool = False
    gti_tt_s: object = None


def bin_events(geom, slices, ra_deg, dec_deg, energy_tev):
    """Counts cube of events on the cutout; events outside the cutout or energy range drop."""
    sy, sx = slices
    shape = (geom.n_energy, sy.stop - sy.start, sx.stop - sx.start)
    with np.errstate(invalid="ignore", divide="ignore"):
        ie = np.floor(np.interp(np.log(energy_tev), np.log(geom.energy_edges_tev),
                                np.arange(geom.n_energy + 1), left=-1, right=np.inf))
    # only events in the energy range are projected
    in_energy = (ie >= 0) & (ie < shape[0])
    ra_deg, dec_deg, ie = (np.asarray(a)[in_energy] for a in (ra_deg, dec_deg, ie))
    if len(ie) == 0:
        return np.zeros(shape, dtype=np.float32)
    # gammapy wraps (RA into [0, 360)) and transforms the event list's columns in their own
    # precision (float32 in DL3 files; `ringbg.dl3.read_events` keeps it): so does
    # `Geom.world_to_pix`, so that events on pixel borders land in the same pixel
    x, y = geom.world_to_pix(ra_deg, dec_deg, "icrs")
    with np.errstate(invalid="ignore"):
        ix = np.floor(x + 0.5) - sx.start
        iy = np.floor(y + 0.5) - sy.start
    ok = (ix >= 0) & (ix < shape[2]) & (iy >= 0) & (iy < shape[1])
    flat = (ie[ok].astype(np.int64) * shape[1] + iy[ok].astype(np.int64)) * shape[2] + ix[
        ok
    ].astype(np.int64)
    counts = np.bincount(flat, minlength=int(np.prod(shape)))
    return counts.reshape(shape).astype(np.float32)


def empty_mask_reason(obs, geom, methods):
    """Why an observation is skipped for an empty safe mask (``obs`` None: a cached one)."""
    details = []
    if obs is not None and "aeff-default" in methods:
        for key, value in (("LO_THRES", obs.aeff.lo_thres_tev),
                           ("HI_THRES", obs.aeff.hi_thres_tev)):
            if value is not None:
                details.append(f"AEFF {key} = {value:g} TeV")
    edges = geom.energy_edges_tev
    details.append(f"map energies {edges[0]:g} to {edges[-1]:g} TeV")
    return ("its safe mask is empty: no energy bin of any pixel of its cutout is safe "
            f"(safe_mask.methods {', '.join(methods)}; {', '.join(details)})")


def reduce_observation(obs, geom, offset_max_deg, methods=("aeff-default",), parameters=None,
                       template="irf", exclusion=None, template_parameters=None,
                       energy_true_edges_tev=None, irf=None):
    """Counts, exposure, background and safe mask of one observation on its cutout.

    Parameters
    ----------
    obs : `~ringbg.dl3.Observation`
        The observation.
    geom : `~ringbg.geom.Geom`
        The full geometry.
    offset_max_deg : float
        Half-width of the cutout around the pointing.
    methods : sequence of str
        Safe mask methods.
    parameters : dict, optional
        Safe mask parameters (``aeff_percent``, ``offset_max_deg``, ``irfs``).
    template : str
        The background template (`ringbg.background.TEMPLATES`, or ``"auto"``).
    exclusion : `~numpy.ndarray`, optional
        The exclusion mask on the full geometry (True = usable), for templates made from
        the data.
    template_parameters : dict, optional
        Parameters of that template.
    energy_true_edges_tev : `~numpy.ndarray`, optional
        True-energy bin edges of the exposure; the reconstructed-energy edges by default.
    irf : `~ringbg.edisp.IrfGrid`, optional
        The IRF grid: compute the energy-dispersion response on it (the diagonal one when the
        observation has no energy dispersion).

    Returns
    -------
    reduced : `ReducedObservation` or None
        None when the cutout does not overlap the geometry.
    """
    parameters = parameters or {}
    slices = geom.cutout_slices(obs.pointing_ra_deg, obs.pointing_dec_deg, 2 * offset_max_deg)
    if slices is None:
        return None
    counts = bin_events(geom, slices, obs.ra_deg, obs.dec_deg, obs.energy_tev)
    frame = geom.pointing_frame(slices, obs.pointing_ra_deg, obs.pointing_dec_deg)
    offset = frame[2]
    if energy_true_edges_tev is None:
        true_centers = geom.energy_center_tev
    else:
        e = np.asarray(energy_true_edges_tev, dtype=float)
        true_centers = np.sqrt(e[:-1] * e[1:])
    exposure = aeff_values_m2(obs.aeff, true_centers, offset, scale=obs.livetime_s)
    background = background_template(template, obs, geom, slices, frame, counts, exclusion,
                                     template_parameters)
    mask = safe_mask(obs, Cutout(geom, slices, offset, background, exposure, true_centers),
                     methods, parameters)
    response = None
    if irf is not None:
        e_true = geom.energy_edges_tev if energy_true_edges_tev is None else e
        response = observation_response(obs, geom, slices, mask, irf, e_true,
                                        2 * offset_max_deg)
    return ReducedObservation(
        obs_id=obs.obs_id,
        slices=slices,
        counts=counts,
        exposure=exposure,
        background=background,
        mask_safe=mask,
        livetime_s=obs.livetime_s,
        ontime_s=obs.ontime_s,
        template=template_name(template, obs.bkg is not None),
        edisp=response,
        point_like=obs.aeff.point_like,
        gti_tt_s=obs.gti_tt_s(),
    )
