"""Where an observation's background template (the ring's acceptance) comes from.

A template is predicted background counts per reconstructed-energy bin and cutout pixel.
Each source is a function in `TEMPLATES` (name -> function), chosen by the config's
``background.template`` (``auto``: ``irf`` where the observation has a background IRF,
``data`` where it has none); the functions get the observation, its cutout and the
exclusion mask, so that a template built from the events can leave the excluded regions out.
"""

from typing import Literal

import numpy as np
from pydantic import Field

from .configtypes import PositiveAngle, _Model
from .errors import DL3Error
from .geom import offset_frame_lonlat
from .irf import (
    bkg_log_rate_at_edges,
    integrate_power_law_log,
    interp_missing_energy,
    log_values,
    trapezoid,
)

__all__ = ["TEMPLATES", "template_name", "template_parameters", "background_template",
           "irf_template", "data_template", "flat_template", "Background", "DataTemplate"]

#: gammapy's ``fov_rotation_step`` for ALTAZ-aligned backgrounds
FOV_ROTATION_STEP_DEG = 1.0
MINIMUM_TIME_STEP_S = 1.0
EARTH_ANGULAR_VELOCITY_DEG_S = 360.0 / 86400.0
#: more rotation steps than this means broken GTI times (a day at 10 s steps)
MAX_ALTAZ_STEPS = 10000


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
        raise DL3Error(
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
            raise DL3Error(
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


def irf_template(obs, geom, slices, pointing_frame, counts=None, exclusion=None,
                 parameters=None):
    """The background IRF's predicted counts (n_energy, ny, nx) on the cutout, as gammapy's
    ``MapDatasetMaker`` (see ALGORITHMS.md: orientation, ALTAZ rotation, interpolation and
    power-law integration); ``counts`` and ``exclusion`` are not used.

    ``pointing_frame``: ``geom.pointing_frame(slices, ra_pnt, dec_pnt)`` when already at hand.
    """
    if obs.bkg is None:
        raise DL3Error(f"observation {obs.obs_id} has no background IRF (use "
                       "background.template: data, flat or auto)")
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
            per_mev = trapezoid(stack, times, axis=0) / (times[-1] - times[0])
        else:
            per_mev = stack[0]
    else:
        lon, lat, _ = pointing_frame
        sign = 1.0 if bkg.alignment == "REVERSE_LON_RADEC" else -1.0
        per_mev = integrated((sign * lon, lat))
    # rate per MeV integrated over TeV -> x 1e6
    per_mev *= (solid_angle * (1e6 * obs.ontime_s))[None]
    return per_mev


def _cutout_exclusion(exclusion, slices, shape):
    if exclusion is None:
        return np.ones(shape, dtype=bool)
    return np.asarray(exclusion[slices], dtype=bool)


def flat_template(obs, geom, slices, pointing_frame, counts, exclusion=None, parameters=None):
    """A constant acceptance per solid angle inside ``offset_max`` (ctskymap's assumption).

    In each energy bin the density is the observation's counts over the solid angle outside
    the exclusion regions and within ``offset_max`` (deg, default the cutout's half-width),
    so the template predicts the counts there; zero beyond ``offset_max``.
    """
    parameters = parameters or {}
    sy, sx = slices
    offset = pointing_frame[2]
    offset_max = float(parameters.get("offset_max_deg", np.inf))
    inside = offset < offset_max
    usable = inside & _cutout_exclusion(exclusion, slices, offset.shape)
    solid_angle = np.asarray(geom.solid_angle_sr[sy, sx], dtype=float)
    area = float(solid_angle[usable].sum())
    n = counts[:, usable].sum(axis=1, dtype=float) if area > 0 else np.zeros(counts.shape[0])
    density = n / area if area > 0 else n
    return density[:, None, None] * np.where(inside, solid_angle, 0.0)[None]


def data_template(obs, geom, slices, pointing_frame, counts, exclusion=None, parameters=None):
    """The acceptance built from the observation's own events (`ringbg.acceptance`): radial
    in field-of-view offset per group of energy bins, from the counts and the solid angle
    outside the exclusion regions, normalised to the counts there.

    ``parameters``: ``shape`` (a `~ringbg.acceptance.RadialShape` built from a group of
    observations; then only the normalisation is this observation's) and the keyword
    arguments of `~ringbg.acceptance.radial_data_template`. Raises `DL3Error` when the
    observation has too few events outside the exclusion for a template of its own.
    """
    from .acceptance import DEFAULTS, radial_data_template

    params = dict(parameters or {})
    params.pop("offset_max_deg", None)  # the template covers the whole cutout
    shape = params.pop("shape", None)
    sy, sx = slices
    usable = _cutout_exclusion(exclusion, slices, pointing_frame[2].shape)
    if shape is None:
        n = float(counts[:, usable].sum())
        need = MIN_NODES * params.get("min_counts_node", DEFAULTS["min_counts_node"])
        if n < need:
            raise DL3Error(
                f"observation {obs.obs_id}: too few events for a background template from "
                f"the data ({n:.0f} counts outside the exclusion, at least {need:.0f} "
                "needed); group it with others (background.data.group: zenith or all) or "
                "give off runs (background.data.off_obs_ids)")
    return radial_data_template(counts, pointing_frame[2],
                                np.asarray(geom.solid_angle_sr[sy, sx], float), usable,
                                shape=shape, **params)


#: fewest radial nodes (of ``min_counts_node`` counts) of a template of one observation
MIN_NODES = 3

#: name -> function ``(obs, geom, slices, pointing_frame, counts, exclusion, parameters)``
TEMPLATES = {"irf": irf_template, "data": data_template, "flat": flat_template}


def template_parameters(background, offset_max_deg, shape=None):
    """The ``parameters`` the template functions get, from the config's ``background``
    section: the flat template's ``offset_max_deg``; the data template's
    (`ringbg.acceptance.radial_data_template` keywords), with ``shape`` a radial shape shared
    by a group of observations."""
    if background.template not in ("data", "auto"):
        return {"offset_max_deg": offset_max_deg}
    d = background.data
    params = {"fine_width_deg": d.fine_width, "min_counts_node": d.min_counts_node,
              "min_counts_group": d.min_counts_group, "smoothing": d.smoothing,
              "interpolation": d.interpolation}
    if shape is not None:
        params["shape"] = shape
    return params


def template_name(requested, has_bkg_irf):
    """The template an observation gets: ``auto`` is ``irf`` with a background IRF, else
    ``data``."""
    if requested == "auto":
        return "irf" if has_bkg_irf else "data"
    return requested


def background_template(requested, obs, geom, slices, pointing_frame, counts, exclusion=None,
                        parameters=None):
    """The background cube of one observation from the template ``requested``."""
    name = template_name(requested, obs.bkg is not None)
    if name not in TEMPLATES:
        raise ValueError(f"unknown background template {name!r} (one of "
                         f"{', '.join(TEMPLATES)})")
    return TEMPLATES[name](obs, geom, slices, pointing_frame, counts, exclusion, parameters)


# --------------------------------------------------------------------------------------------
# the config section


class DataTemplate(_Model):
    """Parameters of the background template built from the data (`ringbg.acceptance`)."""

    #: runs sharing one radial shape: each run alone, runs in zenith-angle bins, or all
    group: Literal["run", "zenith", "all"] = "run"
    zenith_bin: PositiveAngle = 10.0
    #: observations whose events give the shape (not stacked into the maps)
    off_obs_ids: list[int] = []
    min_counts_node: float = Field(200.0, gt=0)
    min_counts_group: float = Field(2000.0, gt=0)
    fine_width: PositiveAngle = 0.02
    smoothing: Literal["fit", "nodes"] = "fit"
    interpolation: Literal["log", "lin"] = "log"


class Background(_Model):
    #: auto: irf where the observation has a background IRF, data where it has none
    template: Literal[("auto",) + tuple(TEMPLATES)] = "auto"
    data: DataTemplate = DataTemplate()
