"""Reading GADF DL3 HDUs: events, GTI, effective area (AEFF_2D), energy dispersion (EDISP_2D)
and background (BKG_3D, BKG_2D).

Readers return plain numpy arrays with units in the names (``_deg``, ``_tev``, ``_s``,
``_m2``). IRF axes are described by their nodes and edges in the interpolation scale used by
gammapy 2.1 (natural log for energy, linear for angles), see `IrfAxis`.
"""

import functools
import io
import logging
import os
import stat
import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.units import Unit, UnitsError

from .errors import DL3Error
from .fitsfile import Table, UnsupportedFITS, fits_extent, read_tables

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
]

log = logging.getLogger(__name__)

#: events written by the H.E.S.S. DR1 exporter have their BKG_3D longitude reversed
#: (gammapy's REVERSE_LON_RADEC quirk).
_SASH_CREATOR = "SASH FITS::EventListWriter"


def one_line(exc):
    """``exc`` as one line of text: its type (when not ringbg's) and first line of message."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    name = type(exc).__name__
    if isinstance(exc, (DL3Error, ValueError, OSError, EOFError)) and text:
        return text
    return f"{name}: {text}" if text else name


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
    """RA, Dec (deg) and energy (TeV) of the events of an EVENTS table, and its header."""
    ra = _scalar_column(table, "RA", path, "deg")
    dec = _scalar_column(table, "DEC", path, "deg")
    energy = _scalar_column(table, "ENERGY", path, "TeV")
    return ra, dec, energy, table.header


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
    bad = ~np.isfinite(values)
    n_bad = int(bad.sum())
    n_neg = int(np.sum(values[~bad] < 0))
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


#: no DL3 file is larger than this, on disk or decompressed: a H.E.S.S. DR1 run is 1 MB, a
#: CTA 1DC run 4 MB, a long run of a large array with loose cuts some 100 MB
MAX_FILE_BYTES = 2 * 2**30
#: bytes a gzip stream may hold beyond the end of its FITS content (trailing padding)
MAX_TRAILING_BYTES = 2**20
_CHUNK = 16 * 2**20
_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _size_text(n_bytes):
    return f"{n_bytes / 2**30:g} GiB" if n_bytes >= 2**30 else f"{n_bytes} bytes"


def _file_kind(mode):
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "not a regular file")


def _read_raw(path, limit):
    """The bytes of a regular file; `DL3Error` for anything else (never blocks on a FIFO)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise DL3Error(f"{path}: file not found") from exc
    except OSError as exc:
        raise DL3Error(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except ValueError as exc:  # a NUL character in the name
        raise DL3Error(f"{str(path)!r}: not a valid file name ({exc})") from exc
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise DL3Error(f"{path}: cannot be read: it is {_file_kind(mode)}, not a regular file")
    with os.fdopen(fd, "rb", buffering=0) as f:
        chunks, total = [], 0
        try:
            while chunk := f.read(min(_CHUNK, limit + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise DL3Error(f"{path}: more than {_size_text(limit)}, larger than a "
                                   "DL3 file can be (ringbg.dl3.MAX_FILE_BYTES)")
        except OSError as exc:
            raise DL3Error(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return b"".join(chunks)


class _Gunzip:
    """A gzip stream decompressed on demand into ``out``, never beyond ``limit`` bytes."""

    def __init__(self, raw, path, limit):
        self.out = bytearray()
        self.path, self.limit = path, limit
        self._member(raw)

    def _member(self, data):
        self._inflate = zlib.decompressobj(wbits=31)  # gzip wrapper: CRC and size checked
        self._input = data

    def _fail(self, reason):
        return DL3Error(f"{self.path}: cannot be read as FITS ({reason})")

    def ended(self):
        """True when the whole stream is decompressed."""
        return self._inflate.eof and not self._inflate.unused_data.lstrip(b"\x00")

    def need(self, n):
        """Decompress until ``out`` holds ``n`` bytes; False when the stream ends first."""
        while len(self.out) < n:
            if self._inflate.eof:
                rest = self._inflate.unused_data.lstrip(b"\x00")  # as gzip.decompress
                if not rest:
                    return False
                if rest[:2] != b"\x1f\x8b":
                    raise self._fail(f"Not a gzipped file ({rest[:2]!r})")
                self._member(rest)
            room = self.limit + 1 - len(self.out)
            try:
                chunk = self._inflate.decompress(self._input, min(_CHUNK, room))
            except zlib.error as exc:
                raise self._fail(one_line(exc)) from exc
            self._input = self._inflate.unconsumed_tail
            self.out += chunk
            if len(self.out) > self.limit:
                raise DL3Error(f"{self.path}: decompresses to more than "
                               f"{_size_text(self.limit)}, larger than a DL3 file can be "
                               "(ringbg.dl3.MAX_FILE_BYTES)")
            if not chunk and not self._input and not self._inflate.eof:
                raise self._fail("Compressed file ended before the end-of-stream marker was "
                                 "reached")
        return True


def _gunzip_fits(raw, path, limit=None):
    """Decompress a gzipped FITS file, no further than its FITS content (bounded).

    The headers are walked as the bytes arrive (`ringbg.fitsfile.fits_extent`): a file whose
    headers declare more than ``limit`` bytes, or whose stream goes on for more than
    `MAX_TRAILING_BYTES` after its last HDU (a gzip bomb), raises `DL3Error`.
    """
    limit = MAX_FILE_BYTES if limit is None else limit
    stream = _Gunzip(raw, path, limit)
    try:
        end = fits_extent(stream.out, stream.need, limit)
    except ValueError as exc:
        raise DL3Error(f"{path}: {exc}, more than the {_size_text(limit)} a DL3 file can "
                       "be (ringbg.dl3.MAX_FILE_BYTES)") from None
    if end > 0 and not stream.ended():
        # past the last HDU only padding may follow: read to the end of the stream (its
        # checksum is verified there), a little further at most
        stream.need(max(end, len(stream.out)) + MAX_TRAILING_BYTES + 1)
        if not stream.ended():
            raise DL3Error(f"{path}: its gzip stream goes on for more than "
                           f"{MAX_TRAILING_BYTES} bytes after the end of its FITS content "
                           "(damaged, or not a DL3 file)")
    return stream.out  # a bytearray: no copy (read_tables makes its tables read-only)


def _read_decompressed(path):
    """The FITS bytes of a file, gunzipped if need be; `DL3Error` naming the file."""
    raw = _read_raw(path, MAX_FILE_BYTES)
    return _gunzip_fits(raw, path) if raw[:2] == b"\x1f\x8b" else raw


_PREFETCH = {"pool": None, "pending": {}}
#: at most this many files read ahead and not yet taken (the oldest are dropped)
_PREFETCH_MAX = 16


def _file_signature(path):
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def prefetch(paths):
    """Start reading and decompressing files in a background thread.

    File reading and zlib release the GIL, so the next observation's input arrives while the
    current one is computed. `read_fits_tables` takes the bytes when it gets to the file, if
    the file has not changed since (size, modification time, inode); files read ahead and
    never taken (an observation skipped before its files are read) are dropped, oldest
    first, so they neither pile up nor get served later. Only regular files are read ahead,
    with the same limits as `read_fits_tables`.
    """
    from concurrent.futures import ThreadPoolExecutor

    if _PREFETCH["pool"] is None:
        _PREFETCH["pool"] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ringbg-io")
    pending = _PREFETCH["pending"]
    for path in paths:
        key = str(path)
        if key in pending:
            continue
        try:
            if not stat.S_ISREG(os.stat(key).st_mode):
                continue  # read_fits_tables reports it
            signature = _file_signature(key)
        except (OSError, ValueError):  # ValueError: a NUL in the name
            continue  # read_fits_tables reports it
        while len(pending) >= _PREFETCH_MAX:
            pending.pop(next(iter(pending)))[0].cancel()
        pending[key] = (_PREFETCH["pool"].submit(_read_decompressed, key), signature)


def discard_prefetched():
    """Drop the files read ahead and not taken (call at the end of a run to free them)."""
    pending = _PREFETCH["pending"]
    while pending:
        pending.pop(next(iter(pending)))[0].cancel()


def _take_prefetched(path):
    """Bytes read ahead for ``path``, or None (not asked for, failed unexpectedly or the file
    changed since: read it again). A `DL3Error` of the read ahead is raised."""
    entry = _PREFETCH["pending"].pop(str(path), None)
    if entry is None:
        return None
    future, signature = entry
    try:
        if _file_signature(path) != signature:
            future.cancel()
            return None
        return future.result()
    except DL3Error:
        raise
    except Exception:  # the normal path reports the error with its message
        return None


def read_fits_tables(path):
    """The binary tables of a FITS file (gzipped or not) as ``{EXTNAME: Table}``.

    The file is read and decompressed in one pass and parsed by `ringbg.fitsfile`; files
    using features it leaves aside are read with astropy. Only regular files are read (not
    a FIFO, a device or a folder), of at most `MAX_FILE_BYTES` on disk and decompressed.
    Raises `DL3Error` naming the file.
    """
    raw = _take_prefetched(path)
    if raw is None:
        raw = _read_decompressed(path)
    return _parse_tables(path, raw)


def _parse_tables(path, raw):
    try:
        return read_tables(raw)
    except UnsupportedFITS:
        pass
    except ValueError as exc:  # damaged: read_tables says what is wrong
        raise DL3Error(f"{path}: cannot be read as FITS ({one_line(exc)})") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                tables = {}
                for hdu in hdul[1:]:
                    if isinstance(hdu, fits.BinTableHDU):
                        tables.setdefault(hdu.name.upper(), Table.from_astropy(hdu))
                return tables
    except Exception as exc:  # astropy raises many kinds (VerifyError, KeyError...) for damage
        raise DL3Error(f"{path}: cannot be read as FITS ({one_line(exc)})") from exc
