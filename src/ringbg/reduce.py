"""One observation -> counts, exposure and background cubes and the safe mask on its cutout.

What gammapy 2.1's ``DatasetsMaker(cutout_mode="trim")`` + ``MapDatasetMaker`` +
``SafeMaskMaker`` compute (see ``ALGORITHMS.md``), on plain arrays. The cutout is an aligned
sub-grid of the full geometry, so all sky coordinates and solid angles come from the full
geometry, computed once.
"""

from dataclasses import dataclass

import numpy as np

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
        (n_energy, ny, nx) exposure in m2 s at the true-energy bin centres.
    background : `~numpy.ndarray`
        (n_energy, ny, nx) predicted background counts.
    mask_safe : `~numpy.ndarray`
        (n_energy, ny, nx) bool.
    """

    obs_id: int
    slices: tuple
    counts: np.ndarray
    exposure: np.ndarray
    background: np.ndarray
    mask_safe: np.ndarray
    livetime_s: float
    ontime_s: float


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
            per_mev = _trapezoid(stack, times, axis=0) / (times[-1] - times[0])
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


def _aeff_max_threshold_dl3(aeff, percent):
    """Lowest IRF energy edge where the on-axis effective area exceeds ``percent`` of its max
    (gammapy's ``SafeMaskMaker(irfs="DL3")``)."""
    edges_tev = np.exp(aeff.energy.edges)
    values = aeff_values_m2(aeff, edges_tev, np.zeros(1))[:, 0]
    valid = edges_tev[values > percent * np.max(values) / 100]
    return float(np.min(valid)) if len(valid) else None


def _log_log_interpolant(x, y):
    """``f(x0)``: linear interpolation of ``ln y`` in ``ln x``, extrapolated beyond the ends;
    ``y`` is clipped at the float tiny before the log and results at tiny become 0 (the
    log scale of gammapy's ``TemplateSpectralModel``)."""
    tiny = np.finfo(float).tiny
    log_x = np.log(x)
    log_y = np.log(np.clip(y, tiny, None))

    def f(x0):
        lx = np.log(np.asarray(x0, float))
        if len(log_x) == 1:
            out = np.full(lx.shape, log_y[0])
        else:
            k = np.clip(np.searchsorted(log_x, lx, side="right") - 1, 0, len(log_x) - 2)
            t = (lx - log_x[k]) / (log_x[k + 1] - log_x[k])
            out = log_y[k] + t * (log_y[k + 1] - log_y[k])
        value = np.exp(out)
        return np.where(np.abs(value) - tiny <= tiny, 0.0, value)

    return f


def _first_crossing(f, level, x_min, x_max, n_grid=100):
    """Lowest root of ``f(x) = level`` in [x_min, x_max]: a sign change on ``n_grid`` log
    steps, then Brent's method in that step (gammapy's ``find_roots``); NaN without one."""
    from scipy.optimize import brentq

    grid = np.exp(np.linspace(np.log(x_min), np.log(x_max), n_grid + 1))
    signs = np.sign(f(grid) - level)
    change = np.nonzero(signs[:-1] != signs[1:])[0]
    if len(change) == 0:
        return np.nan
    k = int(change[0])
    try:
        return float(brentq(lambda x: float(f(np.array([x]))[0] - level), grid[k], grid[k + 1]))
    except (RuntimeError, ValueError):
        return np.nan


def _aeff_max_threshold_dl4(exposure_m2s, livetime_s, energy_true_center_tev, center, percent):
    """Energy where the effective area at the cutout centre pixel, from the exposure cube,
    reaches ``percent`` of its maximum (gammapy's ``SafeMaskMaker(irfs="DL4")``).

    The area spectrum is interpolated log-log between the true-energy bin centres; the
    threshold is the lowest crossing between the first non-zero centre and the last centre
    (the first non-zero centre itself when there is none). None: no area at that pixel.
    """
    j, i = center
    aeff_m2 = exposure_m2s[:, j, i] / livetime_s
    positive = np.nonzero(aeff_m2 > 0)[0]
    if len(positive) == 0:
        return None
    energy_min = float(energy_true_center_tev[positive[0]])
    level = percent / 100 * np.max(aeff_m2)
    f = _log_log_interpolant(energy_true_center_tev, aeff_m2)
    root = _first_crossing(f, level, energy_min, float(energy_true_center_tev[-1]))
    return energy_min if np.isnan(root) else root


def cutout_center_pixel(geom, slices):
    """``(j, i)`` of the cutout pixel nearest to its centre, found as gammapy finds it: the
    centre's sky position (``SkyCoord.from_pixel``) converted back to a pixel and rounded."""
    from astropy.coordinates import SkyCoord

    sy, sx = slices
    wcs = geom.sub_wcs(slices)
    cx, cy = (sx.stop - sx.start - 1) / 2, (sy.stop - sy.start - 1) / 2
    centre = SkyCoord.from_pixel(cx, cy, wcs)
    x, y = wcs.world_to_pixel(centre)
    return int(np.floor(float(y) + 0.5)), int(np.floor(float(x) + 0.5))


def _trapezoid(y, x, axis=-1):
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


def _bkg_peak_threshold_dl3(bkg):
    """Lower edge of the IRF energy bin with the highest offset-integrated background rate
    (gammapy's ``SafeMaskMaker(irfs="DL3")``)."""
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
    spectrum = _trapezoid(profile * 2 * np.pi * np.radians(offset), np.radians(offset), axis=1)
    idx = int(np.argmax(spectrum))
    return float(np.exp(bkg.energy.edges[idx]))


def _bkg_peak_threshold_dl4(background, energy_edges_tev):
    """Lower edge of the reconstructed-energy bin where the cutout's predicted background,
    summed over its pixels, peaks (gammapy's ``SafeMaskMaker(irfs="DL4")``)."""
    spectrum = np.nansum(background.reshape(background.shape[0], -1), axis=1)
    return float(energy_edges_tev[int(np.argmax(spectrum))])


def safe_mask(obs, geom, slices, background, methods, parameters, offset_deg=None,
              exposure=None):
    """Safe mask (n_energy, ny, nx) as gammapy's ``SafeMaskMaker`` for the given methods.

    ``parameters``: ``offset_max_deg`` (default 3), ``aeff_percent`` (default 10) and
    ``irfs``: ``"DL4"`` (default, as gammapy: aeff-max from the exposure cube at the cutout
    centre, bkg-peak from the cutout's background cube) or ``"DL3"`` (from the IRFs on axis).
    ``offset_deg`` and ``exposure`` (m2 s on the true-energy centres): when already at hand.
    """
    unknown = set(methods) - set(SAFE_MASK_METHODS)
    if unknown:
        raise ValueError(f"unknown safe mask methods {sorted(unknown)}")
    irfs = parameters.get("irfs", "DL4")
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
        percent = float(parameters.get("aeff_percent", 10.0))
        if irfs == "DL3":
            threshold = _aeff_max_threshold_dl3(obs.aeff, percent)
        else:
            if exposure is None:
                offset = geom.pointing_frame(slices, obs.pointing_ra_deg,
                                             obs.pointing_dec_deg)[2]
                exposure = aeff_values_m2(obs.aeff, geom.energy_center_tev, offset,
                                          scale=obs.livetime_s)
            threshold = _aeff_max_threshold_dl4(exposure, obs.livetime_s,
                                                geom.energy_center_tev,
                                                cutout_center_pixel(geom, slices), percent)
            if threshold is None:  # no area at the centre: nothing is safe (as gammapy)
                return np.zeros_like(mask)
        if threshold is not None:
            energy_min.append(threshold)
    if "bkg-peak" in methods:
        energy_min.append(_bkg_peak_threshold_dl3(obs.bkg) if irfs == "DL3"
                          else _bkg_peak_threshold_dl4(background, edges))
    for e_min in energy_min:
        mask &= _energy_mask(edges, energy_min=e_min)[:, None, None]
    for e_max in energy_max:
        mask &= _energy_mask(edges, energy_max=e_max)[:, None, None]
    return mask


def reduce_observation(obs, geom, offset_max_deg, methods=("aeff-default",), parameters=None):
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
    exposure = aeff_values_m2(obs.aeff, geom.energy_center_tev, offset, scale=obs.livetime_s)
    background = background_cube(obs, geom, slices, frame)
    mask = safe_mask(obs, geom, slices, background, methods, parameters, offset, exposure)
    return ReducedObservation(
        obs_id=obs.obs_id,
        slices=slices,
        counts=counts,
        exposure=exposure,
        background=background,
        mask_safe=mask,
        livetime_s=obs.livetime_s,
        ontime_s=obs.ontime_s,
    )
