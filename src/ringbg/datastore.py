"""GADF data store: the observation and HDU index tables, observation selection and loading."""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from .dl3 import DL3Error, Observation, read_aeff, read_bkg, read_events, read_fits_tables, read_gti
from .geom import angular_separation_deg, to_frame

__all__ = ["DataStore", "DataStoreError"]

log = logging.getLogger(__name__)

OBS_INDEX_NAMES = ("obs-index.fits.gz", "obs-index.fits")
HDU_INDEX_NAMES = ("hdu-index.fits.gz", "hdu-index.fits")
#: HDU types ringbg reads for each observation
REQUIRED_HDUS = ("events", "gti", "aeff", "bkg")
KNOWN_CLASSES = {
    "events": {"events"},
    "gti": {"gti"},
    "aeff": {"aeff_2d"},
    "bkg": {"bkg_3d", "bkg_2d"},
}


class DataStoreError(Exception):
    """A data store that cannot be opened or a selection that is empty."""


def _find(directory, names):
    for name in names:
        path = directory / name
        if path.exists():
            return path
    return None


def _str(value):
    if isinstance(value, bytes):
        value = value.decode()
    return str(value).strip()


@dataclass
class DataStore:
    """The index tables of a GADF data store.

    Parameters
    ----------
    obs_table : `~astropy.table.Table`
        The observation index.
    hdu_table : `~astropy.table.Table`
        The HDU index.
    base_dir : `~pathlib.Path`
        Folder the HDU index paths are relative to.
    """

    obs_table: Table
    hdu_table: Table
    base_dir: Path

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
        try:
            obs_table = Table.read(obs_path, hdu=1)
            hdu_table = Table.read(hdu_path, hdu=1)
        except Exception as exc:  # astropy raises many kinds for broken files
            raise DataStoreError(f"{obs_path.parent}: cannot read the index tables ({exc})") from exc
        for table, path, cols in (
            (obs_table, obs_path, ("OBS_ID", "RA_PNT", "DEC_PNT")),
            (hdu_table, hdu_path, ("OBS_ID", "HDU_TYPE", "HDU_CLASS", "FILE_DIR", "FILE_NAME",
                                   "HDU_NAME")),
        ):
            missing = [c for c in cols if c not in table.colnames]
            if missing:
                raise DataStoreError(f"{path}: missing columns {', '.join(missing)}")
        base = hdu_table.meta.get("BASE_DIR")
        base_dir = Path(base) if base and Path(base).is_dir() else hdu_path.parent
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
        selected = [int(i) for i in ids[keep]]
        if obs_ids is not None:
            order = {int(i): k for k, i in enumerate(obs_ids)}
            selected = sorted(dict.fromkeys(selected), key=lambda i: order[i])
        return selected

    def missing_ids(self, obs_ids):
        """Those of ``obs_ids`` that the observation index does not list."""
        known = set(self.obs_ids)
        return [int(i) for i in obs_ids if int(i) not in known]

    def obs_info(self, obs_id):
        """The observation-index row of ``obs_id`` as a dict of plain values."""
        rows = self.obs_table[np.asarray(self.obs_table["OBS_ID"]) == obs_id]
        if len(rows) == 0:
            return {}
        row = rows[0]
        info = {}
        for name in self.obs_table.colnames:
            value = row[name]
            if isinstance(value, (bytes, str, np.str_)):
                value = _str(value)
            elif np.ndim(value) == 0:
                value = value.item() if hasattr(value, "item") else value
            else:
                continue
            info[name] = value
        return info

    def hdu_locations(self, obs_id):
        """``{hdu_type: (path, hdu_name, hdu_class)}`` for one observation."""
        table = self.hdu_table
        rows = table[np.asarray(table["OBS_ID"]) == obs_id]
        found = {}
        for row in rows:
            hdu_type = _str(row["HDU_TYPE"]).lower()
            path = self.base_dir / _str(row["FILE_DIR"]) / _str(row["FILE_NAME"])
            found.setdefault(
                hdu_type, (path, _str(row["HDU_NAME"]), _str(row["HDU_CLASS"]).lower())
            )
        return found

    def load(self, obs_id):
        """Read one observation; raises `~ringbg.dl3.DL3Error` naming the file on failure."""
        locations = self.hdu_locations(obs_id)
        if not locations:
            raise DL3Error(f"observation {obs_id}: not in the HDU index")
        for hdu_type in REQUIRED_HDUS:
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
        for hdu_type in REQUIRED_HDUS:
            path, name, _ = locations[hdu_type]
            if path not in files:
                files[path] = read_fits_tables(path)
            table = files[path].get(name.upper())
            if table is None:
                raise DL3Error(f"{path}: no HDU named '{name}' (observation {obs_id})")
            hdus[hdu_type] = table
        return _build_observation(obs_id, hdus, locations)


def _time_reference(header):
    mjd = header.get("MJDREFI")
    if mjd is not None:
        mjd = float(mjd) + float(header.get("MJDREFF", 0.0))
    else:
        mjd = float(header.get("MJDREF", 51910.0))
    return mjd, str(header.get("TIMESYS", "TT")).strip().lower()


def _location(header):
    if "GEOLON" not in header or "GEOLAT" not in header:
        return None
    height = header.get("GEOALT", header.get("ALTITUDE"))
    if height is None:
        return None
    # gammapy 2.1 reads ALTITUDE as metres, whatever the file says
    return float(header["GEOLON"]), float(header["GEOLAT"]), float(height)


def _build_observation(obs_id, hdus, locations):
    events_path = locations["events"][0]
    ra, dec, energy, header = read_events(hdus["events"], events_path)
    start, stop = read_gti(hdus["gti"], locations["gti"][0])
    if len(start) == 0:
        raise DL3Error(f"{locations['gti'][0]}: GTI of observation {obs_id} is empty")
    for key in ("RA_PNT", "DEC_PNT"):
        if key not in header:
            raise DL3Error(f"{events_path}: EVENTS header has no {key} (observation {obs_id})")
    deadc = float(header.get("DEADC", 1.0))
    if not np.isfinite(deadc) or deadc <= 0:
        raise DL3Error(f"{events_path}: DEADC={deadc} is not a dead-time fraction in (0, 1]")
    time_ref, scale = _time_reference(header)
    aeff = read_aeff(hdus["aeff"], locations["aeff"][0])
    bkg = read_bkg(hdus["bkg"], locations["bkg"][0], header)
    ontime = float(np.sum(stop - start))
    if not np.isfinite(ontime) or ontime <= 0:
        raise DL3Error(f"{locations['gti'][0]}: GTI of observation {obs_id} sums to {ontime} s")
    meta = {k: header.get(k) for k in ("OBJECT", "ALT_PNT", "AZ_PNT", "ONTIME", "LIVETIME")}
    return Observation(
        obs_id=int(obs_id),
        ra_deg=ra,
        dec_deg=dec,
        energy_tev=energy,
        pointing_ra_deg=float(header["RA_PNT"]),
        pointing_dec_deg=float(header["DEC_PNT"]),
        gti_start_s=start,
        gti_stop_s=stop,
        deadc=deadc,
        time_ref_mjd=time_ref,
        time_scale=scale,
        location=_location(header),
        aeff=aeff,
        bkg=bkg,
        meta=meta,
    )
