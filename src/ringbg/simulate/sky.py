"""Pointings, the observing schedule, the gamma-ray sources, and the sky geometry they need
(plain numpy offset frames, as astropy's ``SkyOffsetFrame``)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord

from .instrument import (
    _EPOCH_UTC,
    _LEAP_SECONDS_SINCE_EPOCH,
    _RUN_GAP_S,
    FIRST_NIGHT_UTC,
    RUNS_PER_NIGHT,
    SITE_LAT_DEG,
    SITE_LON_DEG,
)

#: Default field centre (ICRS, deg): the sky position of the example config in DESIGN.md.
DEFAULT_CENTER = (228.32, -59.08)

# --------------------------------------------------------------------------------------------
# Geometry helpers (plain numpy; offset frames as astropy's SkyOffsetFrame)
# --------------------------------------------------------------------------------------------
def _offset_to_sky(lon0_deg, lat0_deg, dlon_deg, dlat_deg):
    """Offset-frame coordinates around (lon0, lat0) to sky coordinates [deg].

    The offset frame is astropy's ``SkyOffsetFrame``: longitude positive toward +lon.
    Origins and offsets broadcast.
    """
    a0, d0 = np.radians(lon0_deg), np.radians(lat0_deg)
    phi, th = np.radians(dlon_deg), np.radians(dlat_deg)
    xp = np.cos(th) * np.cos(phi)
    yp = np.cos(th) * np.sin(phi)
    zp = np.sin(th)
    u1 = xp * np.cos(d0) - zp * np.sin(d0)
    u3 = xp * np.sin(d0) + zp * np.cos(d0)
    lon = np.degrees(a0 + np.arctan2(yp, u1)) % 360.0
    lat = np.degrees(np.arcsin(np.clip(u3, -1.0, 1.0)))
    return lon, lat


def _separation_deg(lon1_deg, lat1_deg, lon2_deg, lat2_deg):
    """Angular separation [deg] (Vincenty formula)."""
    l1, b1, l2, b2 = (np.radians(v) for v in (lon1_deg, lat1_deg, lon2_deg, lat2_deg))
    dl = l2 - l1
    num1 = np.cos(b2) * np.sin(dl)
    num2 = np.cos(b1) * np.sin(b2) - np.sin(b1) * np.cos(b2) * np.cos(dl)
    den = np.sin(b1) * np.sin(b2) + np.cos(b1) * np.cos(b2) * np.cos(dl)
    return np.degrees(np.arctan2(np.hypot(num1, num2), den))


def _to_icrs(lon_deg, lat_deg, frame):
    """Sky coordinates in ``frame`` to ICRS (ra, dec) arrays [deg]."""
    coord = SkyCoord(np.atleast_1d(lon_deg) * u.deg, np.atleast_1d(lat_deg) * u.deg, frame=frame)
    icrs = coord.icrs
    return icrs.ra.deg, icrs.dec.deg


# --------------------------------------------------------------------------------------------
# Pointings, schedule, sources
# --------------------------------------------------------------------------------------------
def wobble_pointings(center, n_obs, wobble_deg=0.7, frame="icrs"):
    """Wobble pointings around a field centre.

    The pointings cycle through offsets of ``wobble_deg`` toward +lat, -lat, +lon and -lon
    (position angles 0, 180, 90 and 270 deg, along great circles) in ``frame``.

    Parameters
    ----------
    center : tuple of float
        Field centre ``(lon_deg, lat_deg)`` in ``frame``.
    n_obs : int
        Number of pointings.
    wobble_deg : float
        Wobble offset [deg].
    frame : str
        Astropy frame name of ``center`` and of the result, e.g. ``"icrs"`` or ``"galactic"``.

    Returns
    -------
    pointings : list of tuple of float
        ``(lon_deg, lat_deg)`` per observation, in ``frame``.
    """
    c = SkyCoord(center[0] * u.deg, center[1] * u.deg, frame=frame)
    pa = np.array([0.0, 180.0, 90.0, 270.0])[np.arange(n_obs) % 4]
    p = c.directional_offset_by(pa * u.deg, wobble_deg * u.deg)
    lon, lat = p.spherical.lon.deg, p.spherical.lat.deg
    return [(float(a), float(b)) for a, b in zip(lon, lat)]


def survey_pointings(l_min_deg, l_max_deg, n_obs, b_deg=0.0, b_offsets_deg=(-0.7, 0.7)):
    """Pointings of a Galactic-plane strip survey.

    Longitudes are evenly spaced from ``l_min_deg`` to ``l_max_deg`` (inclusive); latitudes
    cycle through ``b_deg + b_offsets_deg``. Use the result with ``frame="galactic"``.

    Parameters
    ----------
    l_min_deg, l_max_deg : float
        Galactic longitude range [deg]; ``l_max_deg`` may exceed 360 to cross l = 0.
    n_obs : int
        Number of pointings.
    b_deg : float
        Central Galactic latitude of the strip [deg].
    b_offsets_deg : sequence of float
        Latitude offsets cycled through, one per consecutive pointing [deg].

    Returns
    -------
    pointings : list of tuple of float
        ``(l_deg, b_deg)`` per observation, Galactic.
    """
    if n_obs < 1:
        raise ValueError(f"n_obs must be >= 1, got {n_obs}")
    offsets = np.asarray(b_offsets_deg, dtype=float).ravel()
    if offsets.size == 0:
        offsets = np.zeros(1)
    lon = np.linspace(l_min_deg, l_max_deg, n_obs) % 360.0
    lat = b_deg + offsets[np.arange(n_obs) % offsets.size]
    return [(float(a), float(b)) for a, b in zip(lon, lat)]


def demo_sources(center=DEFAULT_CENTER, frame="icrs"):
    """Sources of the demo field.

    A bright point source at the centre (amplitude 1e-11 cm-2 s-1 TeV-1 at 1 TeV, about 30 %
    of the Crab, index 2.3) and a fainter Gaussian source (sigma 0.2 deg, 8e-12
    cm-2 s-1 TeV-1, index 2.5) 1 deg from the centre toward +lon.

    Parameters
    ----------
    center : tuple of float
        Field centre ``(lon_deg, lat_deg)`` in ``frame``.
    frame : str
        Astropy frame name of ``center``.

    Returns
    -------
    sources : list of dict
        Source dicts as accepted by `simulate_datastore`.
    """
    c = SkyCoord(center[0] * u.deg, center[1] * u.deg, frame=frame)
    g = c.directional_offset_by(90 * u.deg, 1.0 * u.deg)
    return [
        {
            "name": "point",
            "lon_deg": float(c.spherical.lon.deg),
            "lat_deg": float(c.spherical.lat.deg),
            "frame": frame,
            "sigma_deg": 0.0,
            "amplitude": 1e-11,
            "index": 2.3,
        },
        {
            "name": "gauss",
            "lon_deg": float(g.spherical.lon.deg),
            "lat_deg": float(g.spherical.lat.deg),
            "frame": frame,
            "sigma_deg": 0.2,
            "amplitude": 8e-12,
            "index": 2.5,
        },
    ]


_SOURCE_KEYS = {"name", "lon_deg", "lat_deg", "frame", "sigma_deg", "amplitude", "index"}


def _validate_sources(sources):
    out = []
    for k, src in enumerate(sources or []):
        if not isinstance(src, dict):
            raise ValueError(f"sources[{k}] must be a dict, got {type(src).__name__}")
        for key in ("lon_deg", "lat_deg", "amplitude", "index"):
            if key not in src:
                raise ValueError(f"sources[{k}] misses the key {key!r}")
        unknown = set(src) - _SOURCE_KEYS
        if unknown:
            raise ValueError(f"sources[{k}] has unknown keys {sorted(unknown)}")
        sigma = float(src.get("sigma_deg", 0.0))
        amplitude = float(src["amplitude"])
        index = float(src["index"])
        if not sigma >= 0:
            raise ValueError(f"sources[{k}]['sigma_deg'] must be >= 0, got {sigma}")
        if not amplitude >= 0:
            raise ValueError(f"sources[{k}]['amplitude'] must be >= 0, got {amplitude}")
        if not np.isfinite(index):
            raise ValueError(f"sources[{k}]['index'] must be finite, got {index}")
        ra, dec = _to_icrs(float(src["lon_deg"]), float(src["lat_deg"]), src.get("frame", "icrs"))
        out.append((float(ra[0]), float(dec[0]), sigma, amplitude, index))
    return out


def _gmst_deg(mjd_utc):
    """Greenwich mean sidereal time [deg] (UT1 ~ UTC; accurate to ~1 s, enough here)."""
    return (280.46061837 + 360.98564736629 * (mjd_utc - 51544.5)) % 360.0


def _utc_to_met(dt):
    return (dt - _EPOCH_UTC).total_seconds() + _LEAP_SECONDS_SINCE_EPOCH


def _met_to_utc(met_s):
    return _EPOCH_UTC + timedelta(seconds=float(met_s) - _LEAP_SECONDS_SINCE_EPOCH)


def _mjd_utc(met_s):
    return 51910.0 + (np.asarray(met_s) - _LEAP_SECONDS_SINCE_EPOCH) / 86400.0


def _altaz_deg(ra_deg, dec_deg, met_s):
    """Altitude and azimuth (from north through east) at the site [deg]; no refraction."""
    lst = _gmst_deg(_mjd_utc(met_s)) + SITE_LON_DEG
    ha = np.radians(lst - ra_deg)
    dec, lat = np.radians(dec_deg), np.radians(SITE_LAT_DEG)
    alt = np.arcsin(np.sin(lat) * np.sin(dec) + np.cos(lat) * np.cos(dec) * np.cos(ha))
    az = np.arctan2(
        -np.cos(dec) * np.sin(ha),
        np.sin(dec) * np.cos(lat) - np.cos(dec) * np.sin(lat) * np.cos(ha),
    )
    return np.degrees(alt), np.degrees(az) % 360.0


def _schedule(ra_deg, ontime_s):
    """Start times (MET, whole seconds) of the runs.

    ``RUNS_PER_NIGHT`` consecutive runs a night, separated by ``_RUN_GAP_S``; each night's
    block of runs is centred on the culmination of the night's first pointing (near local
    midnight of the night starting on ``FIRST_NIGHT_UTC`` plus the night number).
    """
    n = len(ra_deg)
    tstart = np.empty(n)
    for first in range(0, n, RUNS_PER_NIGHT):
        night = first // RUNS_PER_NIGHT
        runs = slice(first, min(first + RUNS_PER_NIGHT, n))
        midnight = (
            _utc_to_met(FIRST_NIGHT_UTC + timedelta(days=night, hours=24))
            - SITE_LON_DEG / 360.0 * 86400.0
        )
        lst = _gmst_deg(_mjd_utc(midnight)) + SITE_LON_DEG
        dha = (ra_deg[first] - lst + 180.0) % 360.0 - 180.0
        culmination = midnight + dha / 360.98564736629 * 86400.0
        durations = ontime_s[runs] + _RUN_GAP_S
        offsets = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
        tstart[runs] = np.round(culmination - 0.5 * durations.sum() + offsets)
    return tstart
