"""Reading GADF DL3 HDUs: events, GTI, effective area (AEFF_2D) and background (BKG_3D, BKG_2D).

Readers return plain numpy arrays with units in the names (``_deg``, ``_tev``, ``_s``,
``_m2``). IRF axes are described by their nodes and edges in the interpolation scale used by
gammapy 2.1 (natural log for energy, linear for angles), see `IrfAxis`.
"""

import gzip
import io
import logging
import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits
from astropy.units import Unit, UnitsError

from .fitsfile import Table, UnsupportedFITS, read_tables

__all__ = [
    "DL3Error",
    "IrfAxis",
    "EffectiveArea",
    "Background",
    "Observation",
    "read_events",
    "read_gti",
    "read_aeff",
    "read_bkg",
]

log = logging.getLogger(__name__)

#: events written by the H.E.S.S. DR1 exporter have their BKG_3D longitude reversed
#: (gammapy's REVERSE_LON_RADEC quirk).
_SASH_CREATOR = "SASH FITS::EventListWriter"


class DL3Error(Exception):
    """A DL3 file or HDU that cannot be used; the message names the file and what is wrong."""


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
    bkg: Background
    meta: dict = field(default_factory=dict)

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
            data = np.asarray(table.column(name), dtype=float)
            if unit is not None:
                data = data * _unit_factor(table.unit(name), unit,
                                           f"{path} [{table.name}] column {name}")
            return data
    raise DL3Error(f"{path}: HDU {table.name} has no column {' or '.join(names)}")


def _unit_factor(unit_str, target, where):
    if not unit_str or not str(unit_str).strip():
        return 1.0
    text = str(unit_str).strip().replace("^", "").replace("**", "")
    try:
        unit = Unit(text, parse_strict="raise")
    except ValueError:
        # as gammapy: an unreadable unit (e.g. CTA 1DC's '1/s/MeV/sr') is taken as the default
        log.warning("%s: unit %r not understood, assuming %s", where, unit_str, target)
        return 1.0
    try:
        return unit.to(target)
    except UnitsError as exc:
        raise DL3Error(f"{where}: unit {unit_str!r} cannot be converted to {target}") from exc


def read_events(table, path):
    """RA, Dec (deg) and energy (TeV) of the events of an EVENTS table, and its header."""
    ra = _column(table, ["RA"], path, "deg")
    dec = _column(table, ["DEC"], path, "deg")
    energy = _column(table, ["ENERGY"], path, "TeV")
    return ra, dec, energy, table.header


def read_gti(table, path):
    """GTI start and stop times (s, relative to the time reference)."""
    start = _column(table, ["START"], path, "s")
    stop = _column(table, ["STOP"], path, "s")
    return start, stop


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
    if len(table) == 0:
        raise DL3Error(f"{path}: HDU {table.name} has no rows")
    lo = _column(table, [f"{prefix}_LO"], path, unit)[0]
    hi = _column(table, [f"{prefix}_HI"], path, unit)[0]
    return IrfAxis.from_lo_hi(name, lo, hi, log)


def read_aeff(table, path):
    """AEFF_2D as an `EffectiveArea` (m2; energy in TeV, offset in deg)."""
    energy = _axis(table, "ENERG", "energy_true", True, path, "TeV")
    offset = _axis(table, "THETA", "offset", False, path, "deg")
    shape = (len(energy.nodes), len(offset.nodes))
    values = _irf_values(table, ["EFFAREA", "SPECRESP"], path, "m2", shape)
    header = table.header
    lo = header.get("LO_THRES")
    hi = header.get("HI_THRES")
    return EffectiveArea(energy, offset, values, lo, hi)


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


_PREFETCH = {"pool": None, "pending": {}}


def prefetch(paths):
    """Start reading and decompressing files in a background thread.

    File reading and zlib release the GIL, so the next observation's input arrives while the
    current one is computed. `read_fits_tables` takes the bytes when it gets to the file.
    """
    from concurrent.futures import ThreadPoolExecutor

    if _PREFETCH["pool"] is None:
        _PREFETCH["pool"] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ringbg-io")
    pending = _PREFETCH["pending"]
    for path in paths:
        key = str(path)
        if key not in pending and len(pending) < 16:
            pending[key] = _PREFETCH["pool"].submit(_read_decompressed, key)


def _read_decompressed(path):
    with open(path, "rb") as f:
        raw = f.read()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _take_prefetched(path):
    """Bytes read ahead for ``path``, or None (not asked for, or failed: read it again)."""
    future = _PREFETCH["pending"].pop(str(path), None)
    if future is None:
        return None
    try:
        return future.result()
    except Exception:  # the normal path reports the error with its message
        return None


def read_fits_tables(path):
    """The binary tables of a FITS file (gzipped or not) as ``{EXTNAME: Table}``.

    The file is read and decompressed in one pass and parsed by `ringbg.fitsfile`; files
    using features it leaves aside are read with astropy. Raises `DL3Error` naming the file.
    """
    raw = _take_prefetched(path)
    if raw is not None:
        return _parse_tables(path, raw)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError as exc:
        raise DL3Error(f"{path}: file not found") from exc
    except OSError as exc:
        raise DL3Error(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DL3Error(f"{path}: cannot be read as FITS ({exc})") from exc
    return _parse_tables(path, raw)


def _parse_tables(path, raw):
    try:
        try:
            return read_tables(raw)
        except UnsupportedFITS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                    return {h.name.upper(): Table.from_astropy(h) for h in hdul[1:]
                            if isinstance(h, fits.BinTableHDU)}
    except (OSError, EOFError, ValueError, TypeError, zlib.error) as exc:
        raise DL3Error(f"{path}: cannot be read as FITS ({exc})") from exc
