"""GADF data store: the observation and HDU index tables, observation selection and loading."""

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .dl3 import read_observation
from .errors import DataStoreError, DL3Error, one_line
from .files import read_fits_tables
from .fitsfile import Table
from .geom import angular_separation_deg, to_frame

__all__ = ["DataStore", "DataStoreError", "cached_datastore", "OBS_INDEX_NAMES", "HDU_INDEX_NAMES"]

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
        paths = {}  # one Path per file (each holds several HDUs of an observation)
        for k, obs_id in enumerate(np.asarray(table["OBS_ID"], dtype=np.int64)):
            where = (text["FILE_DIR"][k], text["FILE_NAME"][k])
            path = paths.get(where)
            if path is None:
                path = paths[where] = self.base_dir / where[0] / where[1]
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
        return read_observation(obs_id, hdus, locations)


@functools.lru_cache(maxsize=4)
def _datastore_cached(path, stamp):
    return DataStore.from_dir(path)


def cached_datastore(path):
    """The `DataStore` of ``path``, opened once per process and read again when its index
    files change (a worker reduces many observations of one store)."""
    stamp = []
    for name in ("obs-index.fits.gz", "obs-index.fits", "hdu-index.fits.gz", "hdu-index.fits"):
        try:
            st = os.stat(os.path.join(os.path.expandvars(str(path)), name))
            stamp.append((name, st.st_size, st.st_mtime_ns))
        except OSError:
            pass
    return _datastore_cached(path, tuple(stamp))
