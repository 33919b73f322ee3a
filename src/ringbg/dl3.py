"""Reading GADF DL3 HDUs: events, GTI, effective area (AEFF_2D), energy dispersion (EDISP_2D)
and background (BKG_3D, BKG_2D).

Readers return plain numpy arrays with units in the names (``_deg``, ``_tev``, ``_s``,
``_m2``). IRF axes are described by their nodes and edges in the interpolation scale used by
gammapy 2.1 (natural log for energy, linear for angles), see `IrfAxis`.
"""

import functools
import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.units import Unit, UnitsError

from .errors import DL3Error, one_line
from .irf import Background, EffectiveArea, EnergyDispersion, IrfAxis

__all__ = [
    "DL3Error",
    "IrfAxis",
    "EffectiveArea",
    "EnergyDispersion",
    "Background",
    "Observation",
    "read_events",
    "read_event_times",
    "read_gti",
    "gti_problem",
    "impossible_events",
    "read_aeff",
    "read_edisp",
    "read_bkg",
    "read_rad_max",
    "read_observation",
    "GTI_REF_MJD_TT",
]

log = logging.getLogger(__name__)

#: events written by the H.E.S.S. DR1 exporter have their BKG_3D longitude reversed
#: (gammapy's REVERSE_LON_RADEC quirk).
_SASH_CREATOR = "SASH FITS::EventListWriter"

#: reference of ringbg's GTI times: MJDREFI = 51910, MJDREFF = 7.428703703703703e-4 in TT
#: (2001-01-01 00:00:00 UTC; gammapy's and the GADF default)
GTI_REF_MJD_TT = (51910, 7.428703703703703e-4)


@dataclass
class Observation:
    """What ringbg needs of one observation: events, times, pointing and IRFs."""

    obs_id: int
    ra_deg: np.ndarray
    dec_deg: np.ndarray
    energy_tev: np.ndarray
    pointing_ra_deg: float
    pointing_dec_deg: float
    gti_start_s: np.ndarray
    gti_stop_s: np.ndarray
    deadc: float
    time_ref_mjd: float
    time_scale: str
    location: tuple | None
    aeff: EffectiveArea
    bkg: Background | None
    meta: dict = field(default_factory=dict)
    #: the energy dispersion, or None (none in the data store, or not asked for)
    edisp: EnergyDispersion | None = None
    #: RAD_MAX_2D of point-like IRFs: (energy axis, cut in deg), or None
    rad_max: tuple | None = None

    @property
    def ontime_s(self):
        """Sum of the GTIs (s), the time the background rate is multiplied by."""
        return float(np.sum(self.gti_stop_s - self.gti_start_s))

    @property
    def livetime_s(self):
        """Dead-time corrected observation time (s): GTI sum times DEADC."""
        return self.ontime_s * self.deadc

    def gti_tt_s(self):
        """The GTIs as an (n, 2) array of start and stop in TT seconds since
        `GTI_REF_MJD_TT`, or None when the events' time reference is unknown or its scale
        (``local``) has no TT."""
        if not np.isfinite(self.time_ref_mjd):
            return None
        times = np.column_stack([self.gti_start_s, self.gti_stop_s]).astype(float)
        ref_day, ref_frac = GTI_REF_MJD_TT
        if self.time_scale == "tt":
            return times + ((self.time_ref_mjd - ref_day) - ref_frac) * 86400.0
        from astropy.time import Time, TimeDelta
        from astropy.time.core import ScaleValueError

        try:
            ref = Time(self.time_ref_mjd, format="mjd", scale=self.time_scale)
            tt = (ref + TimeDelta(times, format="sec")).tt
        except (ScaleValueError, ValueError):  # "local" time has no TT
            return None
        return (tt - Time(ref_day, ref_frac, format="mjd", scale="tt")).to_value("s")


def _column(table, names, path, unit=None):
    """A column by the first of ``names`` present, as float, converted to ``unit``."""
    for name in names:
        if name in table:
            where = f"{path} [{table.name}] column {name}"
            try:
                with warnings.catch_warnings():  # astropy's, on columns of a damaged file
                    warnings.simplefilter("ignore")
                    values = np.asarray(table.column(name))
            except Exception as exc:  # a damaged column description (astropy raises many kinds)
                raise DL3Error(f"{where}: cannot be read ({one_line(exc)})") from exc
            if values.dtype.kind not in "biuf":
                raise DL3Error(f"{where}: not a numeric column (data type {values.dtype})")
            with np.errstate(invalid="ignore", over="ignore"):
                data = values.astype(float)
            if unit is not None:
                factor = _unit_factor(table.unit(name), unit, where)
                if factor != 1.0:
                    data = data * factor
            return data
    raise DL3Error(f"{path}: HDU {table.name} has no column {' or '.join(names)}")


def header_number(header, key, default, where):
    """Header keyword ``key`` as a float (``default`` when absent); `DL3Error` if not a number.

    ``where`` names the file and HDU in the message.
    """
    value = header.get(key)
    if value is None:
        return default
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise DL3Error(f"{where}: header keyword {key} = {value!r} is not a number")
    return float(value)


@functools.lru_cache(maxsize=256)
def _conversion(text, target):
    """``(factor, problem)`` for a unit string: problem is None, "unknown" or "convert"."""
    try:
        unit = Unit(text, parse_strict="raise")
    except (ValueError, TypeError):
        return 1.0, "unknown"
    try:
        return float(unit.to(target)), None
    except (UnitsError, ValueError, TypeError):  # ValueError: e.g. structured units
        return None, "convert"


def _unit_factor(unit_str, target, where):
    if not unit_str or not str(unit_str).strip():
        return 1.0
    text = str(unit_str).strip().replace("^", "").replace("**", "")
    factor, problem = _conversion(text, target)
    if problem == "unknown":
        # as gammapy: an unreadable unit (e.g. CTA 1DC's '1/s/MeV/sr') is taken as the default
        log.warning("%s: unit %r not understood, assuming %s", where, unit_str, target)
        return 1.0
    if problem == "convert":
        raise DL3Error(f"{where}: unit {unit_str!r} cannot be converted to {target}")
    if not np.isfinite(factor) or factor == 0:
        raise DL3Error(f"{where}: unit {unit_str!r} is {factor} {target}")
    return factor


def _scalar_column(table, name, path, unit):
    """A column holding one number per row (`DL3Error` for a vector column)."""
    values = _column(table, [name], path, unit)
    if values.ndim != 1:
        raise DL3Error(f"{path}: HDU {table.name} column {name} holds "
                       f"{int(np.prod(values.shape[1:]))} values per row, not one")
    return values


def read_events(table, path):
    """RA, Dec (deg) and energy (TeV) of the events of an EVENTS table, and its header.

    They keep the precision of the file's columns when these are float32 in degrees and TeV
    (as DL3 files write them): gammapy wraps, transforms and takes the log of them in float32,
    and so does `ringbg.reduce.bin_events`, so that events on pixel borders and energy edges
    land where gammapy puts them.
    """
    ra = _scalar_column(table, "RA", path, "deg")
    dec = _scalar_column(table, "DEC", path, "deg")
    energy = _scalar_column(table, "ENERGY", path, "TeV")
    if all(_is_float32_in(table, name, "deg") for name in ("RA", "DEC")):
        ra, dec = ra.astype(np.float32), dec.astype(np.float32)  # exact: read from float32
    if _is_float32_in(table, "ENERGY", "TeV"):
        energy = energy.astype(np.float32)
    return ra, dec, energy, table.header


def _is_float32_in(table, name, unit):
    """The column is float32 in ``unit`` (or has no unit, taken as ``unit``)."""
    try:
        if np.asarray(table.column(name)).dtype != np.float32:
            return False
        text = str(table.unit(name) or "").strip().replace("^", "").replace("**", "")
    except Exception:  # read as float64 by `_column`, which reported any problem
        return False
    return not text or _conversion(text, unit)[0] == 1.0


def read_gti(table, path):
    """GTI start and stop times (s, relative to the time reference).

    Raises `DL3Error` for times that are not finite or an interval that ends before it starts.
    """
    start = _column(table, ["START"], path, "s")
    stop = _column(table, ["STOP"], path, "s")
    if start.shape != stop.shape or start.ndim != 1:
        raise DL3Error(f"{path}: HDU {table.name} START and STOP are not one value per row")
    bad = ~(np.isfinite(start) & np.isfinite(stop))
    if bad.any():
        raise DL3Error(f"{path}: HDU {table.name} row {int(np.argmax(bad))} has a START or STOP "
                       "that is not a finite number")
    backwards = stop < start
    if backwards.any():
        k = int(np.argmax(backwards))
        raise DL3Error(f"{path}: HDU {table.name} row {k} stops before it starts "
                       f"(START={start[k]}, STOP={stop[k]})")
    return start, stop


def read_event_times(table, path):
    """The TIME column of an EVENTS table (s), or None when it has none."""
    return _scalar_column(table, "TIME", path, "s") if "TIME" in table else None


def impossible_events(ra_deg, dec_deg, energy_tev):
    """Events that cannot be on the sky: RA, DEC or ENERGY not finite, ``|DEC| > 90`` deg or
    ENERGY <= 0 (boolean array)."""
    with np.errstate(invalid="ignore"):
        return ~(np.isfinite(ra_deg) & np.isfinite(dec_deg) & np.isfinite(energy_tev)
                 & (np.abs(dec_deg) <= 90) & (energy_tev > 0))


#: GTI checks (README "Input checks"): the GTI sum agrees with ONTIME, and the GTI sum times
#: DEADC with LIVETIME, to GTI_SUM_RTOL relative or GTI_SUM_ATOL_S, whichever is larger
GTI_SUM_RTOL = 1e-3
GTI_SUM_ATOL_S = 1.0
#: the GTIs lie within [TSTART, TSTOP] to GTI_TIME_ATOL_S plus GTI_TIME_RTOL of the times
#: (header times are often written in single precision: CTA 1DC's TSTOP is 8 s early)
GTI_TIME_ATOL_S = 1.0
GTI_TIME_RTOL = 1e-7
#: with at least GTI_MIN_EVENTS events, the GTI sum is at most GTI_EVENTS_FACTOR times the
#: events' time span plus GTI_EVENTS_ATOL_S (H.E.S.S. DR1 run 20283: 1.43 times)
GTI_MIN_EVENTS = 100
GTI_EVENTS_FACTOR = 1.5
GTI_EVENTS_ATOL_S = 60.0


def _overlap(start, stop):
    """Reason text for the first two GTIs that overlap, or None."""
    if len(start) < 2:
        return None
    order = np.argsort(start, kind="stable")
    s, e = start[order], stop[order]
    eps = 1e-6 + 4 * np.spacing(np.max(np.abs(np.concatenate([s, e]))))
    over = e[:-1] - s[1:]
    bad = np.flatnonzero(over > eps)
    if not len(bad):
        return None
    k = int(bad[0])
    i, j = sorted((int(order[k]), int(order[k + 1])))
    what = " (a duplicated row)" if s[k] == s[k + 1] and e[k] == e[k + 1] else ""
    return f"GTI rows {i} and {j} overlap by {over[k]:.6g} s{what}"


def gti_problem(start, stop, header, deadc, times, where):
    """Why the GTIs do not agree with the EVENTS header and the event times, or None.

    Checks (tolerances: the ``GTI_*`` constants of this module): no two intervals overlap;
    their sum agrees with ONTIME and, times DEADC, with LIVETIME; they lie within
    [TSTART, TSTOP]; and, with at least `GTI_MIN_EVENTS` events, their sum is not much
    longer than the events' time span. Keywords that are absent are not checked.

    Parameters
    ----------
    start, stop : `~numpy.ndarray`
        GTI bounds (s, in the time reference of the EVENTS header).
    header : dict
        The EVENTS header.
    deadc : float
        The dead-time correction used.
    times : `~numpy.ndarray` or None
        The event times (s).
    where : str
        The EVENTS HDU, for messages on unreadable keywords.
    """
    overlap = _overlap(start, stop)
    if overlap:
        return overlap
    total = float(np.sum(stop - start))

    def differ(value, expected):
        return not abs(value - expected) <= max(GTI_SUM_ATOL_S, GTI_SUM_RTOL * abs(expected))

    keys = {key: header_number(header, key, None, where)
            for key in ("ONTIME", "LIVETIME", "TSTART", "TSTOP")}
    for key, value in keys.items():
        if value is not None and not np.isfinite(value):
            return f"{key} = {value} is not a finite number"
    ontime, livetime, t_start, t_stop = keys.values()
    if ontime is not None and differ(total, ontime):
        return f"the GTIs sum to {total:.9g} s but ONTIME = {ontime:.9g} s"
    if livetime is not None and differ(total * deadc, livetime):
        return (f"the GTIs sum to {total:.9g} s, times DEADC {deadc:.6g} = "
                f"{total * deadc:.9g} s, but LIVETIME = {livetime:.9g} s")
    known = [t for t in (t_start, t_stop) if t is not None]
    if known:
        tol = GTI_TIME_ATOL_S + GTI_TIME_RTOL * max(abs(t) for t in known)
        first, last = float(np.min(start)), float(np.max(stop))
        if (t_start is not None and first < t_start - tol) or (
                t_stop is not None and last > t_stop + tol):
            return (f"the GTIs span {first:.9g} to {last:.9g} s, outside TSTART = {t_start} "
                    f"to TSTOP = {t_stop} s")
    if times is not None:
        times = times[np.isfinite(times)]
        if len(times) >= GTI_MIN_EVENTS:
            span = float(times.max() - times.min())
            if total > GTI_EVENTS_FACTOR * span + GTI_EVENTS_ATOL_S:
                return (f"the GTIs sum to {total:.9g} s, more than {GTI_EVENTS_FACTOR:g} times "
                        f"the {span:.9g} s its {len(times)} events span")
    return None


def _irf_values(table, names, path, unit, shape):
    """The IRF value column, row 0, oriented as gammapy 2.1 orients it.

    gammapy transposes the numpy array of the column and transposes it back when the shape does
    not match its axes; the resulting index order is what the interpolation uses.
    """
    if len(table) == 0:
        raise DL3Error(f"{path}: HDU {table.name} has no rows")
    values = _column(table, names, path, unit)
    values = values[0] if values.ndim > len(shape) else values
    data = values.T
    if data.shape != tuple(shape):
        data = data.T
    if data.shape != tuple(shape):
        raise DL3Error(
            f"{path}: HDU {table.name} values have shape {values.shape}, axes need {tuple(shape)}"
        )
    return data


def _axis(table, prefix, name, log, path, unit):
    """An IRF axis from its ``_LO``/``_HI`` columns; `DL3Error` unless finite and increasing."""
    if len(table) == 0:
        raise DL3Error(f"{path}: HDU {table.name} has no rows")
    lo = np.ravel(_column(table, [f"{prefix}_LO"], path, unit)[0])
    hi = np.ravel(_column(table, [f"{prefix}_HI"], path, unit)[0])
    where = f"{path}: HDU {table.name} axis {prefix}_LO/{prefix}_HI"
    if len(lo) == 0 or lo.shape != hi.shape:
        raise DL3Error(f"{where}: empty or of different lengths ({len(lo)}, {len(hi)})")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise DL3Error(f"{where}: values that are not finite numbers")
    if log and not (np.all(lo > 0) and np.all(hi > 0)):
        raise DL3Error(f"{where}: energies must be positive")
    with np.errstate(all="ignore"):
        axis = IrfAxis.from_lo_hi(name, lo, hi, log)
        ok = (np.all(np.isfinite(axis.edges)) and np.all(np.diff(axis.edges) > 0)
              and np.all(np.diff(axis.nodes) > 0))
    if not ok:
        raise DL3Error(f"{where}: the bins are not in increasing order")
    return axis


def _warn_bad_values(values, where, background=False, what=None):
    """Warn about IRF values that are not finite (or negative); they are used as gammapy 2.1
    uses them: effective area and energy dispersion as zero (after the interpolation);
    background as missing (filled along energy between valid values, else zero) and negative
    background as zero."""
    finite = np.isfinite(values)
    if finite.all():  # (the usual case: no masked copy of the values)
        n_bad = 0
        n_neg = int(np.count_nonzero(values < 0)) if background else 0
    else:
        n_bad = int(values.size - np.count_nonzero(finite))
        n_neg = int(np.count_nonzero(values[finite] < 0)) if background else 0
    what = what or ("background" if background else "effective-area")
    if n_bad:
        use = ("missing: filled along energy where valid values bracket them, else zero"
               if background else "taken as zero")
        log.warning("%s: %d of the %d %s values are not finite, %s (as gammapy does)",
                    where, n_bad, values.size, what, use)
    if n_neg and background:
        log.warning("%s: %d of the %d background values are negative, taken as zero (as "
                    "gammapy does)", where, n_neg, values.size)


def read_aeff(table, path):
    """AEFF_2D as an `EffectiveArea` (m2; energy in TeV, offset in deg)."""
    energy = _axis(table, "ENERG", "energy_true", True, path, "TeV")
    offset = _axis(table, "THETA", "offset", False, path, "deg")
    shape = (len(energy.nodes), len(offset.nodes))
    values = _irf_values(table, ["EFFAREA", "SPECRESP"], path, "m2", shape)
    where = f"{path} [{table.name}]"
    _warn_bad_values(values, where)
    lo = header_number(table.header, "LO_THRES", None, where)
    hi = header_number(table.header, "HI_THRES", None, where)
    point_like = str(table.header.get("HDUCLAS3", "")).strip().upper() == "POINT-LIKE"
    return EffectiveArea(energy, offset, values, lo, hi, point_like)


def read_rad_max(table, path):
    """RAD_MAX_2D: the directional cut (deg) of point-like IRFs, ``(energy_axis, values)``
    with ``values[i_energy]`` at the first offset bin (the offset dependence is dropped:
    ringbg reports the cut, it does not apply it)."""
    energy = _axis(table, "ENERG", "energy", True, path, "TeV")
    values = np.ravel(_column(table, ["RAD_MAX"], path, "deg")[0])
    if len(values) % len(energy.nodes):
        raise DL3Error(f"{path}: HDU {table.name} RAD_MAX has {len(values)} values for "
                       f"{len(energy.nodes)} energies")
    values = values.reshape(-1, len(energy.nodes))[0] if values.size > len(energy.nodes) \
        else values
    if not np.all(np.isfinite(values) & (values > 0)):
        raise DL3Error(f"{path}: HDU {table.name} RAD_MAX values must be positive angles")
    return energy, values


def read_edisp(table, path):
    """EDISP_2D as an `EnergyDispersion` (true energy in TeV, offset in deg).

    The true-energy columns are ``ENERG_LO/HI`` (GADF) or ``ETRUE_LO/HI`` (CTA 1DC); the
    matrix column is ``MATRIX``, stored (offset, migra, energy) as the format says.
    """
    names = set(table.colnames)
    prefix = "ENERG" if "ENERG_LO" in names else "ETRUE"
    energy = _axis(table, prefix, "energy_true", True, path, "TeV")
    migra = _axis(table, "MIGRA", "migra", False, path, None)
    offset = _axis(table, "THETA", "offset", False, path, "deg")
    shape = (len(energy.nodes), len(migra.nodes), len(offset.nodes))
    values = _irf_values(table, ["MATRIX"], path, None, shape)
    _warn_bad_values(values, f"{path} [{table.name}]", what="energy-dispersion")
    point_like = str(table.header.get("HDUCLAS3", "")).strip().upper() == "POINT-LIKE"
    return EnergyDispersion(energy, migra, offset, values, point_like)


def read_bkg(table, path, events_header=None):
    """BKG_3D or BKG_2D as a `Background` (s-1 MeV-1 sr-1).

    ``events_header`` decides the H.E.S.S. DR1 orientation quirk (see ALGORITHMS.md).
    """
    names = set(table.colnames)
    energy = _axis(table, "ENERG", "energy", True, path, "TeV")
    unit = "s-1 MeV-1 sr-1"
    if "DETX_LO" in names:
        lon = _axis(table, "DETX", "fov_lon", False, path, "deg")
        lat = _axis(table, "DETY", "fov_lat", False, path, "deg")
        shape = (len(energy.nodes), len(lon.nodes), len(lat.nodes))
        values = _irf_values(table, ["BKG", "BGD"], path, unit, shape)
        spatial = (lon, lat)
    elif "THETA_LO" in names:
        offset = _axis(table, "THETA", "offset", False, path, "deg")
        shape = (len(energy.nodes), len(offset.nodes))
        values = _irf_values(table, ["BKG", "BGD"], path, unit, shape)
        spatial = (offset,)
    else:
        raise DL3Error(f"{path}: HDU {table.name} is neither BKG_3D (DETX/DETY) nor BKG_2D (THETA)")
    _warn_bad_values(values, f"{path} [{table.name}]", background=True)
    alignment = str(table.header.get("FOVALIGN", "RADEC")).strip().upper()
    if alignment not in ("RADEC", "ALTAZ"):
        raise DL3Error(f"{path}: HDU {table.name} has FOVALIGN={alignment!r}; RADEC or ALTAZ")
    header = events_header or {}
    if (
        len(spatial) == 2
        and header.get("CREATOR") == _SASH_CREATOR
        and str(header.get("HDUVERS")) == "0.2"
    ):
        alignment = "REVERSE_LON_RADEC"
    return Background(energy, spatial, values, alignment)


#: astropy's time scales (``astropy.time.Time.SCALES``), for TIMESYS
TIME_SCALES = ("tai", "tcb", "tcg", "tdb", "tt", "ut1", "utc", "local")


def _time_reference(header, where):
    mjd = header_number(header, "MJDREFI", None, where)
    if mjd is not None:
        mjd = mjd + header_number(header, "MJDREFF", 0.0, where)
    else:
        mjd = header_number(header, "MJDREF", 51910.0, where)
    if not np.isfinite(mjd):
        raise DL3Error(f"{where}: the time reference MJDREF is {mjd}")
    return mjd, str(header.get("TIMESYS", "TT")).strip().lower()


def _location(header, where):
    if "GEOLON" not in header or "GEOLAT" not in header:
        return None
    key = "GEOALT" if "GEOALT" in header else "ALTITUDE"
    height = header_number(header, key, None, where)
    if height is None:
        return None
    # gammapy 2.1 reads ALTITUDE as metres, whatever the file says
    location = (header_number(header, "GEOLON", None, where),
                header_number(header, "GEOLAT", None, where), height)
    if not (all(np.isfinite(location)) and abs(location[1]) <= 90):
        raise DL3Error(f"{where}: observatory location GEOLON, GEOLAT, {key} = {location}")
    return location


def _deadc(header, where, obs_id):
    """DEADC of the EVENTS header; without it, LIVETIME / ONTIME (GADF's definition)."""
    deadc = header_number(header, "DEADC", None, where)
    if deadc is None:
        livetime = header_number(header, "LIVETIME", None, where)
        ontime = header_number(header, "ONTIME", None, where)
        if livetime is None or ontime is None or not ontime > 0:
            raise DL3Error(f"{where}: no DEADC (nor LIVETIME and ONTIME) in the EVENTS header: "
                           f"the live time of observation {obs_id} is unknown")
        deadc = livetime / ontime
        log.warning("%s: no DEADC in the EVENTS header; using LIVETIME / ONTIME = %.6g",
                    where, deadc)
    if not np.isfinite(deadc) or deadc <= 0 or deadc > 1:
        raise DL3Error(f"{where}: DEADC={deadc} is not a dead-time correction in (0, 1]")
    return deadc


def _possible_events(ra, dec, energy, where, obs_id):
    """The events that can be on the sky; the others are counted in a warning."""
    bad = impossible_events(ra, dec, energy)
    n_bad = int(bad.sum())
    if n_bad:
        log.warning("%s: %d of the %d events of observation %s have an impossible position or "
                    "energy (RA, DEC or ENERGY not finite, |DEC| > 90 deg or ENERGY <= 0): "
                    "not used", where, n_bad, len(bad), obs_id)
        ra, dec, energy = ra[~bad], dec[~bad], energy[~bad]
    return ra, dec, energy


def _gti_offset_s(gti_header, events_header, gti_where, where):
    """Seconds to add to GTI times for the EVENTS time reference (0 unless the GTI header
    has a valid reference of its own that differs)."""
    if not any(key in gti_header for key in ("MJDREFI", "MJDREFF", "MJDREF")):
        return 0.0
    try:
        mjd_gti = _time_reference(gti_header, gti_where)[0]
        mjd_events = _time_reference(events_header, where)[0]
    except DL3Error:
        return 0.0
    return (mjd_gti - mjd_events) * 86400.0


def _read_gti_checked(obs_id, hdus, locations, header, deadc, times, where):
    """GTI start and stop (s, EVENTS time reference), checked against the EVENTS header."""
    gti_path = locations["gti"][0]
    gti = hdus["gti"]
    start, stop = read_gti(gti, gti_path)
    if len(start) == 0:
        raise DL3Error(f"{gti_path}: GTI of observation {obs_id} is empty")
    ontime = float(np.sum(stop - start))
    if not np.isfinite(ontime) or ontime <= 0:
        raise DL3Error(f"{gti_path}: GTI of observation {obs_id} sums to {ontime} s")
    offset = _gti_offset_s(gti.header, header, f"{gti_path} [{gti.name}]", where)
    if offset:
        start, stop = start + offset, stop + offset
    problem = gti_problem(start, stop, header, deadc, times, where)
    if problem:
        raise DL3Error(f"{gti_path}: the GTIs of observation {obs_id} disagree with its "
                       f"EVENTS header or events: {problem}")
    return start, stop


def read_observation(obs_id, hdus, locations):
    """The `Observation` of its HDUs (``{hdu_type: Table}``) and their locations
    (``{hdu_type: (path, hdu_name, hdu_class)}``), with the consistency checks of the EVENTS
    header (pointing, dead time, GTIs against ONTIME/LIVETIME/TSTART/TSTOP and the events,
    impossible events counted and dropped). Raises `DL3Error` naming the file."""
    events_path = locations["events"][0]
    where = f"{events_path} [{hdus['events'].name}]"
    ra, dec, energy, header = read_events(hdus["events"], events_path)
    times = read_event_times(hdus["events"], events_path)
    ra, dec, energy = _possible_events(ra, dec, energy, where, obs_id)
    if len(energy) == 0:
        log.warning("%s: observation %s has no events (its exposure and background are used)",
                    where, obs_id)
    pointing = []
    for key in ("RA_PNT", "DEC_PNT"):
        value = header_number(header, key, None, where)
        if value is None:
            raise DL3Error(f"{events_path}: EVENTS header has no {key} (observation {obs_id})")
        pointing.append(value)
    if not (np.all(np.isfinite(pointing)) and abs(pointing[1]) <= 90):
        raise DL3Error(f"{where}: pointing RA_PNT, DEC_PNT = {pointing[0]}, {pointing[1]} is "
                       "not a sky position")
    deadc = _deadc(header, where, obs_id)
    start, stop = _read_gti_checked(obs_id, hdus, locations, header, deadc, times, where)
    aeff = read_aeff(hdus["aeff"], locations["aeff"][0])
    bkg = read_bkg(hdus["bkg"], locations["bkg"][0], header) if "bkg" in hdus else None
    edisp = read_edisp(hdus["edisp"], locations["edisp"][0]) if "edisp" in hdus else None
    rad_max = (read_rad_max(hdus["rad_max"], locations["rad_max"][0]) if "rad_max" in hdus
               else None)
    altaz = bkg is not None and bkg.alignment == "ALTAZ"
    # time reference and site: needed to turn sky pixels into the AltAz-aligned frame of an
    # ALTAZ background, unused otherwise (broken values are then only warned about)
    try:
        time_ref, scale = _time_reference(header, where)
        location = _location(header, where)
        if altaz:
            if location is None:
                raise DL3Error(f"{where}: the ALTAZ background of observation {obs_id} needs "
                               "the observatory location (GEOLON, GEOLAT, ALTITUDE)")
            if scale not in TIME_SCALES:
                raise DL3Error(f"{where}: TIMESYS = {scale!r} is not a time scale "
                               f"({', '.join(TIME_SCALES)})")
    except DL3Error as exc:
        if altaz:
            raise
        log.warning("%s (not needed for this observation's %s background)", exc,
                    "RADEC" if bkg is None else bkg.alignment)
        time_ref, scale, location = float("nan"), "tt", None
    meta = {k: header.get(k) for k in ("OBJECT", "ALT_PNT", "AZ_PNT", "ONTIME", "LIVETIME")}
    return Observation(
        obs_id=int(obs_id),
        ra_deg=ra,
        dec_deg=dec,
        energy_tev=energy,
        pointing_ra_deg=pointing[0],
        pointing_dec_deg=pointing[1],
        gti_start_s=start,
        gti_stop_s=stop,
        deadc=deadc,
        time_ref_mjd=time_ref,
        time_scale=scale,
        location=location,
        aeff=aeff,
        bkg=bkg,
        meta=meta,
        edisp=edisp,
        rad_max=rad_max,
    )
