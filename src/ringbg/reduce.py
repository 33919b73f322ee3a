"""One observation -> counts, exposure and background cubes and the safe mask on its cutout.

What gammapy 2.1's ``DatasetsMaker(cutout_mode="trim")`` + ``MapDatasetMaker`` +
``SafeMaskMaker`` compute (see ``ALGORITHMS.md``), on plain arrays. The cutout is an aligned
sub-grid of the full geometry, so all sky coordinates and solid angles come from the full
geometry, computed once.
"""

from dataclasses import dataclass

import numpy as np

from .edisp import observation_response
from .geom import offset_frame_lonlat
from .irf import (
    aeff_values_m2,
    bkg_log_rate_at_edges,
    integrate_power_law_log,
    interp_missing_energy,
    log_values,
)

__all__ = ["ReducedObservation", "reduce_observation", "SAFE_MASK_METHODS"]

SAFE_MASK_METHODS = ("aeff-default", "offset-max", "aeff-max", "bkg-peak")
#: gammapy's ``fov_rotation_step`` for ALTAZ-aligned backgrounds
FOV_ROTATION_STEP_DEG = 1.0
MINIMUM_TIME_STEP_S = 1.0
EARTH_ANGULAR_VELOCITY_DEG_S = 360.0 / 86400.0
#: more rotation steps than this means broken GTI times (a day at 10 s steps)
MAX_ALTAZ_STEPS = 10000


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
        (n_energy, ny, nx) predicted background counts.
    mask_safe : `~numpy.ndarray`
        (n_energy, ny, nx) bool.
    edisp : `~ringbg.edisp.EdispResponse` or None
        The energy-dispersion kernel on the IRF grid, when asked for.
    """

    obs_id: int
    slices: tuple
    counts: np.ndarray
    exposure: np.ndarray
    background: np.ndarray
    mask_safe: np.ndarray
    livetime_s: float
    ontime_s: float
    edisp: object = None


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
    if geom.frame != "icrs":
        # gammapy transforms the event list's float32 columns as they are: do the same, so
        # that events on pixel borders land in the same pixel
        ra_deg, dec_deg = (np.asarray(a, dtype=np.float32) for a in (ra_deg, dec_deg))
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


def _prepared_background(bkg):
    """Background values after gammapy's missing-data fill (and offset padding for BKG_2D)."""
    values = interp_missing_energy(bkg.values)
    spatial = bkg.spatial
    if not bkg.is_3d:
        values = np.pad(values, ((0, 0), (1, 1)), mode="edge")
        spatial = (spatial[0].padded(),)
    return values, spatial


def _altaz_fov_coords(obs, ra_deg, dec_deg):
    """FoV (lon, lat) in the AltAz-aligned frame at gammapy's rotation time steps.

    Returns the list of (fov_lon, fov_lat) arrays, one per time, and the times (s from start).
    """
    import astropy.units as u
    from astropy.coordinates import AltAz, EarthLocation, SkyCoord
    from astropy.time import Time

    if obs.location is None:
        raise ValueError(
            f"observation {obs.obs_id}: ALTAZ background needs the observatory location "
            "(GEOLON, GEOLAT, ALTITUDE in the EVENTS header)"
        )
    lon, lat, height = obs.location
    location = EarthLocation(lon=lon * u.deg, lat=lat * u.deg, height=height * u.m)
    t_ref = Time(obs.time_ref_mjd, format="mjd", scale=obs.time_scale)
    t_start = t_ref + obs.gti_start_s[0] * u.s
    duration = obs.ontime_s
    pointing = SkyCoord(obs.pointing_ra_deg, obs.pointing_dec_deg, unit="deg", frame="icrs")

    def altaz(times):
        return pointing.transform_to(AltAz(obstime=times, location=location))

    offsets = [0.0]
    while offsets[-1] < duration:
        pnt = altaz(t_start + offsets[-1] * u.s)
        denom = EARTH_ANGULAR_VELOCITY_DEG_S * np.cos(np.radians(lat)) * abs(np.cos(pnt.az.rad))
        step = FOV_ROTATION_STEP_DEG * np.cos(pnt.alt.rad) / denom if denom > 0 else np.inf
        step = max(step, MINIMUM_TIME_STEP_S)
        offsets.append(min(offsets[-1] + step, duration))
        if len(offsets) > MAX_ALTAZ_STEPS:
            raise ValueError(
                f"observation {obs.obs_id}: its GTIs ({duration:.0f} s) need more than "
                f"{MAX_ALTAZ_STEPS} field-rotation steps; check the GTI times"
            )
    offsets = np.array(offsets)
    times = t_start + offsets * u.s

    # pixels to AltAz at every time step, as gammapy: with astropy's interpolated
    # Earth-orientation terms (1000 s); the FoV frame is centred on the exact pointing
    from astropy.coordinates.erfa_astrom import ErfaAstromInterpolator, erfa_astrom

    pnt_altaz = pointing.transform_to(AltAz(obstime=times, location=location))
    pixels = SkyCoord(np.ravel(ra_deg)[:, None], np.ravel(dec_deg)[:, None], unit="deg",
                      frame="icrs")
    with erfa_astrom.set(ErfaAstromInterpolator(1000 * u.s)):
        pix_altaz = pixels.transform_to(AltAz(obstime=times[None, :], location=location))
    az, alt = pix_altaz.az.deg, pix_altaz.alt.deg
    coords = []
    for k in range(len(times)):
        lon, lat = offset_frame_lonlat(az[:, k], alt[:, k], pnt_altaz[k].az.deg,
                                       pnt_altaz[k].alt.deg)
        # gammapy's FoV AltAz frame has its longitude reflected
        coords.append((-lon.reshape(np.shape(ra_deg)), lat.reshape(np.shape(ra_deg))))
    return coords, offsets


def background_cube(obs, geom, slices, pointing_frame=None):
    """Predicted background counts (n_energy, ny, nx) on the cutout.

    ``pointing_frame``: ``geom.pointing_frame(slices, ra_pnt, dec_pnt)`` when already at hand.
    """
    sy, sx = slices
    ra, dec = (a[sy, sx] for a in geom.radec_deg)
    solid_angle = geom.solid_angle_sr[sy, sx]
    bkg = obs.bkg
    values, spatial = _prepared_background(bkg)
    prepared = type(bkg)(bkg.energy, spatial, values, bkg.alignment)
    logv = log_values(values)
    edges = geom.energy_edges_tev

    def integrated(coords):
        log_rate, inside = bkg_log_rate_at_edges(prepared, logv, edges, coords)
        return integrate_power_law_log(log_rate, inside, edges)

    if bkg.alignment != "ALTAZ" and pointing_frame is None:
        pointing_frame = geom.pointing_frame(slices, obs.pointing_ra_deg, obs.pointing_dec_deg)
    if not bkg.is_3d:
        per_mev = integrated((pointing_frame[2],))
    elif bkg.alignment == "ALTAZ":
        coords, times = _altaz_fov_coords(obs, ra, dec)
        stack = np.stack([integrated(c) for c in coords], axis=0)
        if len(times) > 1:
            per_mev = np.trapezoid(stack, times, axis=0) / (times[-1] - times[0])
        else:
            per_mev = stack[0]
    else:
        lon, lat, _ = pointing_frame
        sign = 1.0 if bkg.alignment == "REVERSE_LON_RADEC" else -1.0
        per_mev = integrated((sign * lon, lat))
    # rate per MeV integrated over TeV -> x 1e6
    per_mev *= (solid_angle * (1e6 * obs.ontime_s))[None]
    return per_mev


def _energy_mask(edges, energy_min=None, energy_max=None):
    mask = np.ones(len(edges) - 1, dtype=bool)
    if energy_min is not None:
        mask &= edges[:-1] >= energy_min
    if energy_max is not None:
        mask &= edges[1:] <= energy_max
    return mask


def _aeff_max_threshold(aeff, percent):
    """Lowest IRF energy edge where the on-axis effective area exceeds ``percent`` of its max."""
    edges_tev = np.exp(aeff.energy.edges)
    values = aeff_values_m2(aeff, edges_tev, np.zeros(1))[:, 0]
    valid = edges_tev[values > percent * np.max(values) / 100]
    return float(np.min(valid)) if len(valid) else None


def _bkg_peak_threshold(bkg):
    """Lower edge of the IRF energy bin with the highest offset-integrated background rate."""
    values = interp_missing_energy(bkg.values)
    if bkg.is_3d:
        lon, lat = bkg.spatial
        j = int(np.argmin(np.abs(lat.nodes)))
        keep = lon.nodes >= 0
        offset = lon.nodes[keep]
        profile = values[:, keep, j]
    else:
        offset = bkg.spatial[0].nodes
        profile = values
    order = np.argsort(offset)
    offset, profile = offset[order], profile[:, order]
    spectrum = np.trapezoid(profile * 2 * np.pi * np.radians(offset), np.radians(offset), axis=1)
    idx = int(np.argmax(spectrum))
    return float(np.exp(bkg.energy.edges[idx]))


def safe_mask(obs, geom, slices, background, methods, parameters, offset_deg=None):
    """Safe mask (n_energy, ny, nx) as gammapy's ``SafeMaskMaker`` for the given methods.

    ``offset_deg``: the cutout pixels' offsets from the pointing, when already at hand.
    """
    unknown = set(methods) - set(SAFE_MASK_METHODS)
    if unknown:
        raise ValueError(f"unknown safe mask methods {sorted(unknown)}")
    edges = geom.energy_edges_tev
    mask = np.isfinite(background) & (background > 0)
    if "offset-max" in methods:
        if offset_deg is None:
            offset_deg = geom.pointing_frame(slices, obs.pointing_ra_deg,
                                             obs.pointing_dec_deg)[2]
        offset_max = float(parameters.get("offset_max_deg", 3.0))
        mask &= (offset_deg < offset_max)[None]
    energy_min, energy_max = [], []
    if "aeff-default" in methods:
        if obs.aeff.lo_thres_tev:
            energy_min.append(obs.aeff.lo_thres_tev)
        if obs.aeff.hi_thres_tev:
            energy_max.append(obs.aeff.hi_thres_tev)
    if "aeff-max" in methods:
        threshold = _aeff_max_threshold(obs.aeff, float(parameters.get("aeff_percent", 10.0)))
        if threshold is not None:
            energy_min.append(threshold)
    if "bkg-peak" in methods:
        energy_min.append(_bkg_peak_threshold(obs.bkg))
    for e_min in energy_min:
        mask &= _energy_mask(edges, energy_min=e_min)[:, None, None]
    for e_max in energy_max:
        mask &= _energy_mask(edges, energy_max=e_max)[:, None, None]
    return mask


def reduce_observation(obs, geom, offset_max_deg, methods=("aeff-default",), parameters=None,
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
        Safe mask parameters (``aeff_percent``, ``offset_max_deg``).
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
    background = background_cube(obs, geom, slices, frame)
    mask = safe_mask(obs, geom, slices, background, methods, parameters, offset)
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
        edisp=response,
    )
