"""GADF data store: the observation and HDU index tables, observation selection and loading."""

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .dl3 import (
    DL3Error,
    Observation,
    gti_problem,
    header_number,
    impossible_events,
    one_line,
    read_aeff,
    read_bkg,
    read_edisp,
    read_rad_max,
    read_event_times,
    read_events,
    read_fits_tables,
    read_gti,
)
from .errors import DataStoreError
from .fitsfile import Table
from .geom import angular_separation_deg, to_frame

__all__ = ["DataStore", "DataStoreError"]

log = logging.getLogger(__name__)

OBS_INDEX_NAMES = ("obs-index.fits.gz", "obs-index.fits")
HDU_INDEX_NAMES = ("hdu-index.fits.gz", "hdu-index.fits")
#: HDU types ringbg reads for each observation
REQUIRED_HDUS = ("events", "gti", "aeff")
KNOWN_CLASSES = {
    "events": {"events"},
    "gti": {"gti"},
    "aeff": {"aeff_2d"},
    "bkg": {"bkg_3d", "bkg_2d"},
    "edisp": {"edisp_2d"},
    "rad_max": {"rad_max_2d"},
}
#: HDU types read when the HDU index lists them (and they are asked for): the background IRF
#: (none: the template is built from the data), the energy dispersion, the point-like cut
OPTIONAL_HDUS = ("bkg", "edisp", "rad_max")


def _read_index(path):
    """The first binary table of an index file (`ringbg.fitsfile.Table`)."""
    try:
        tables = read_fits_tables(path)
    except DL3Error as exc:
        raise DataStoreError(f"{path}: cannot be read as a FITS index table "
                             f"({one_line(exc).removeprefix(f'{path}: ')})") from exc
    if not tables:
        raise DataStoreError(f"{path}: cannot be read as a FITS index table (it has no "
                             "binary table)")
    return next(iter(tables.values()))


def _find(directory, names):
    for name in names:
        path = directory / name
        if path.exists():
            return path
    return None


def _plain(value):
    """A table cell as a JSON-friendly value (text, number or nested list)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _str(value):
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return str(value).strip()


def _base_dir(base, index_dir):
    """Folder the HDU index paths are relative to: its BASE_DIR keyword (a relative one taken
    from the index's folder) when that folder exists, else the index's folder."""
    if isinstance(base, str) and base.strip() and "\x00" not in base:
        path = index_dir / Path(os.path.expandvars(base.strip())).expanduser()
        if path.is_dir():
            return path
    return index_dir


@dataclass
class DataStore:
    """The index tables of a GADF data store.

    Parameters
    ----------
    obs_table : `~ringbg.fitsfile.Table`
        The observation index.
    hdu_table : `~ringbg.fitsfile.Table`
        The HDU index.
    base_dir : `~pathlib.Path`
        Folder the HDU index paths are relative to.
    """

    obs_table: Table
    hdu_table: Table
    base_dir: Path
    _warned: set = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_dir(cls, path):
        """Open the data store in ``path`` (folder with obs-index and hdu-index)."""
        directory = Path(os.path.expandvars(str(path))).expanduser()
        if not directory.is_dir():
            raise DataStoreError(
                f"datastore: {directory} is not a folder (set 'datastore' to the folder "
                "holding obs-index.fits.gz and hdu-index.fits.gz)"
            )
        obs_path = _find(directory, OBS_INDEX_NAMES)
        hdu_path = _find(directory, HDU_INDEX_NAMES)
        for name, found in (("obs-index.fits[.gz]", obs_path), ("hdu-index.fits[.gz]", hdu_path)):
            if found is None:
                raise DataStoreError(f"datastore: {directory} has no {name}")
        obs_table = _read_index(obs_path)
        hdu_table = _read_index(hdu_path)
        for table, path, cols in (
            (obs_table, obs_path, ("OBS_ID", "RA_PNT", "DEC_PNT")),
            (hdu_table, hdu_path, ("OBS_ID", "HDU_TYPE", "HDU_CLASS", "FILE_DIR", "FILE_NAME",
                                   "HDU_NAME")),
        ):
            missing = [c for c in cols if c not in table.colnames]
            if missing:
                raise DataStoreError(f"{path}: missing columns {', '.join(missing)}")
            numeric = ("OBS_ID", "RA_PNT", "DEC_PNT") if table is obs_table else ("OBS_ID",)
            for name in numeric:
                values = np.asarray(table[name])
                if values.dtype.kind not in "iuf" or (
                        name == "OBS_ID" and values.dtype.kind == "f"
                        and not np.all(np.isfinite(values) & (values == np.round(values)))):
                    raise DataStoreError(f"{path}: column {name} holds "
                                         f"{'no integers' if name == 'OBS_ID' else 'no numbers'}")
        ids, counts = np.unique(np.asarray(obs_table["OBS_ID"], dtype=np.int64),
                                return_counts=True)
        if np.any(counts > 1):
            dup = ", ".join(str(i) for i in ids[counts > 1][:10])
            log.warning("%s lists observation(s) %s more than once: each is used once, with "
                        "its first row", obs_path, dup)
        base_dir = _base_dir(hdu_table.header.get("BASE_DIR"), hdu_path.parent)
        return cls(obs_table=obs_table, hdu_table=hdu_table, base_dir=base_dir)

    @property
    def obs_ids(self):
        return [int(x) for x in self.obs_table["OBS_ID"]]

    def select(self, obs_ids=None, cone=None):
        """Observation ids in index order, by id list and/or a cone on the pointing.

        Parameters
        ----------
        obs_ids : list of int, optional
            Wanted ids; ids not in the index are reported by `missing_ids`.
        cone : tuple, optional
            ``(lon_deg, lat_deg, frame, radius_deg)``; pointings strictly within are kept.
        """
        keep = np.ones(len(self.obs_table), dtype=bool)
        ids = np.asarray(self.obs_table["OBS_ID"], dtype=np.int64)
        if obs_ids is not None:
            keep &= np.isin(ids, np.asarray(list(obs_ids), dtype=np.int64))
        if cone is not None:
            lon, lat, frame, radius = cone
            ra0, dec0 = to_frame(lon, lat, frame, "icrs")
            sep = angular_separation_deg(
                np.asarray(self.obs_table["RA_PNT"], float),
                np.asarray(self.obs_table["DEC_PNT"], float),
                float(ra0),
                float(dec0),
            )
            keep &= sep < radius
        # an id listed twice in the index is used once
        selected = list(dict.fromkeys(int(i) for i in ids[keep]))
        if obs_ids is not None:
            order = {}
            for k, i in enumerate(obs_ids):
                order.setdefault(int(i), k)  # a repeated id keeps its first place
            selected = sorted(dict.fromkeys(selected), key=lambda i: order[i])
        return selected

    def missing_ids(self, obs_ids):
        """Those of ``obs_ids`` that the observation index does not list."""
        known = set(self.obs_ids)
        return [int(i) for i in obs_ids if int(i) not in known]

    @functools.cached_property
    def _obs_rows(self):
        """``{obs_id: {column: plain value}}`` from the first row of each id."""
        columns = {}
        for name in self.obs_table.colnames:
            values = np.asarray(self.obs_table[name])
            if values.ndim != 1:
                continue
            if values.dtype.kind in "SUO":
                columns[name] = [_str(v) for v in values]
            else:
                columns[name] = values.tolist()
        rows = {}
        for k, obs_id in enumerate(np.asarray(self.obs_table["OBS_ID"], dtype=np.int64)):
            rows.setdefault(int(obs_id), {name: col[k] for name, col in columns.items()})
        return rows

    @functools.cached_property
    def _hdu_rows(self):
        """``{obs_id: [(hdu_type, path, hdu_name, hdu_class), ...]}`` in index order."""
        table = self.hdu_table
        text = {name: [_str(v) for v in np.asarray(table[name])]
                for name in ("HDU_TYPE", "FILE_DIR", "FILE_NAME", "HDU_NAME", "HDU_CLASS")}
        rows = {}
        for k, obs_id in enumerate(np.asarray(table["OBS_ID"], dtype=np.int64)):
            path = self.base_dir / text["FILE_DIR"][k] / text["FILE_NAME"][k]
            rows.setdefault(int(obs_id), []).append(
                (text["HDU_TYPE"][k].lower(), path, text["HDU_NAME"][k],
                 text["HDU_CLASS"][k].lower()))
        return rows

    @functools.cached_property
    def _index_columns(self):
        """Per index table: its columns as arrays and ``{obs_id: [row, ...]}``."""
        out = {}
        for name, table in (("obs-index", self.obs_table), ("hdu-index", self.hdu_table)):
            columns = {col: np.asarray(table[col]) for col in table.colnames}
            rows = {}
            for k, obs_id in enumerate(np.asarray(table["OBS_ID"], dtype=np.int64)):
                rows.setdefault(int(obs_id), []).append(k)
            out[name] = (columns, rows)
        return out

    def index_rows(self, obs_id):
        """Every column of the observation's rows of both index tables, as plain values
        (``{"obs-index": [row, ...], "hdu-index": [row, ...]}``, rows as dicts; for keys)."""
        out = {}
        for name, (columns, rows) in self._index_columns.items():
            out[name] = [{col: _plain(values[k]) for col, values in columns.items()}
                         for k in rows.get(int(obs_id), [])]
        return out

    def obs_info(self, obs_id):
        """The observation-index row of ``obs_id`` as a dict of plain values."""
        return dict(self._obs_rows.get(int(obs_id), {}))

    def hdu_locations(self, obs_id):
        """``{hdu_type: (path, hdu_name, hdu_class)}`` for one observation."""
        found = {}
        for hdu_type, *location in self._hdu_rows.get(int(obs_id), []):
            location = tuple(location)
            first = found.setdefault(hdu_type, location)
            if first != location and (obs_id, hdu_type) not in self._warned:
                # as gammapy: the first row is used, with a warning (once)
                self._warned.add((obs_id, hdu_type))
                log.warning(
                    "observation %s: the HDU index lists more than one '%s' HDU; using the "
                    "first (%s [%s]), not %s [%s]", obs_id, hdu_type, first[0], first[1],
                    location[0], location[1])
        return found

    def load(self, obs_id, edisp=True, bkg=True):
        """Read one observation; raises `~ringbg.dl3.DL3Error` naming the file on failure.

        ``edisp``, ``bkg``: also read the energy dispersion, the background IRF, when the HDU
        index lists one (without it the observation has ``edisp``, ``bkg`` None). A RAD_MAX
        HDU is read when listed.
        """
        locations = self.hdu_locations(obs_id)
        if not locations:
            raise DL3Error(f"observation {obs_id}: not in the HDU index")
        asked = {"edisp": edisp, "bkg": bkg, "rad_max": True}
        wanted = REQUIRED_HDUS + tuple(t for t in OPTIONAL_HDUS
                                       if asked[t] and t in locations)
        for hdu_type in wanted:
            if hdu_type not in locations:
                raise DL3Error(f"observation {obs_id}: the HDU index lists no '{hdu_type}' HDU")
            hdu_class = locations[hdu_type][2]
            if hdu_class not in KNOWN_CLASSES[hdu_type]:
                raise DL3Error(
                    f"observation {obs_id}: unknown {hdu_type} HDU class '{hdu_class}' "
                    f"(ringbg reads {', '.join(sorted(KNOWN_CLASSES[hdu_type]))})"
                )
        files = {}
        hdus = {}
        for hdu_type in wanted:
            path, name, _ = locations[hdu_type]
            if path not in files:
                files[path] = read_fits_tables(path)
            table = files[path].get(name.upper())
            if table is None:
                present = ", ".join(files[path]) or "none"
                raise DL3Error(f"{path}: no HDU named '{name}' (observation {obs_id}; the file "
                               f"has the tables {present})")
            hdus[hdu_type] = table
        return _build_observation(obs_id, hdus, locations)


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


def _build_observation(obs_id, hdus, locations):
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
