"""Writing: event lists, GTIs, the HDU and observation index tables, and
`simulate_datastore`, the public entry point."""

from __future__ import annotations

import gzip as _gzip
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits

from .events import _simulate_events
from .instrument import (
    _BKG_ENERGY_EDGES_TEV,
    _CREATOR,
    _GADF,
    _GZIP_LEVEL,
    _TELESCOP,
    ENERGY_MAX_TEV,
    MJDREFF,
    MJDREFI,
    SITE_ALTITUDE_M,
    SITE_LAT_DEG,
    SITE_LON_DEG,
    _aeff_hdu,
    _aeff_interp_max_m2,
    _aeff_lo_thres_tev,
    _aeff_table_m2,
    _bkg_energy_profile,
    _bkg_hdu,
    _bkg_table,
    _edisp_hdu,
    _header,
    _log_centers,
    _point_like_aeff_m2,
    _psf_hdu,
    _rad_max_hdu,
    _table_hdu,
)
from .sky import (
    DEFAULT_CENTER,
    _altaz_deg,
    _met_to_utc,
    _schedule,
    _separation_deg,
    _to_icrs,
    _validate_sources,
    wobble_pointings,
)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def _time_keys(obs):
    start, stop = _met_to_utc(obs["tstart"]), _met_to_utc(obs["tstop"])
    return [
        ("MJDREFI", (MJDREFI, "int part of reference MJD for times")),
        ("MJDREFF", (MJDREFF, "fractional part of reference MJD for times")),
        ("TIMEUNIT", ("s", "time unit is seconds since MET start")),
        ("TIMESYS", ("TT", "Time system (TT=terrestrial time)")),
        ("TIMEREF", ("LOCAL", "local time reference")),
        ("DATE-OBS", start.strftime("%Y-%m-%d")),
        ("TIME-OBS", start.strftime("%H:%M:%S.000")),
        ("DATE-END", stop.strftime("%Y-%m-%d")),
        ("TIME-END", stop.strftime("%H:%M:%S.000")),
    ]


def _events_hdu(events, obs):
    units = {"TIME": "s", "RA": "deg", "DEC": "deg", "ENERGY": "TeV"}
    cols = [(name, array, units.get(name)) for name, array in events.items()]
    extra = [
        ("ORIGIN", "ringbg"),
        ("EV_CLASS", "std"),
        ("TSTART", (obs["tstart"], "MET of observation start time")),
        ("TSTOP", (obs["tstop"], "MET of observation stop time")),
        *_time_keys(obs),
        ("ONTIME", (obs["ontime"], "total good time (including deadtime)")),
        ("LIVETIME", (obs["livetime"], "total live time")),
        ("DEADC", (obs["deadc"], "dead-time correction: LIVETIME / ONTIME")),
        ("OBJECT", (obs["object"], "observed object")),
        ("RA_OBJ", (obs["ra_obj"], "RA of target object (deg)")),
        ("DEC_OBJ", (obs["dec_obj"], "Dec of target object (deg)")),
        ("RA_PNT", (obs["ra_pnt"], "pointing position RA (deg)")),
        ("DEC_PNT", (obs["dec_pnt"], "pointing position Dec (deg)")),
        ("GLON_PNT", (obs["glon_pnt"], "pointing galactic longitude (deg)")),
        ("GLAT_PNT", (obs["glat_pnt"], "pointing galactic latitude (deg)")),
        ("ALT_PNT", (obs["alt_pnt"], "altitude at the middle of the run (deg)")),
        ("AZ_PNT", (obs["az_pnt"], "azimuth at the middle of the run (deg)")),
        ("RADECSYS", ("ICRS", "equatorial system type")),
        ("EQUINOX", (2000.0, "base equinox")),
        ("OBS_MODE", ("POINTING", "observation mode")),
        ("N_TELS", (4, "number of telescopes participating")),
        ("TELLIST", ("1,2,3,4", "comma-separated list of telescope IDs")),
        ("GEOLON", (SITE_LON_DEG, "longitude of observatory (deg)")),
        ("GEOLAT", (SITE_LAT_DEG, "latitude of observatory (deg)")),
        ("ALTITUDE", (SITE_ALTITUDE_M, "altitude of observatory (m)")),
        ("MUONEFF", (obs["muoneff"], "muon efficiency")),
        ("EUNIT", ("TeV", "energy unit")),
    ]
    header = _header("EVENTS", ["EVENTS"], obs["obs_id"], extra)
    return _table_hdu(cols, header)


def _gti_hdu(obs):
    cols = [("START", np.array([obs["tstart"]]), "s"), ("STOP", np.array([obs["tstop"]]), "s")]
    extra = [
        ("TSTART", (obs["tstart"], "start time of the GTI table (MET)")),
        ("TSTOP", (obs["tstop"], "end time of the GTI table (MET)")),
        *_time_keys(obs)[:5],
    ]
    header = _header("GTI", ["GTI"], obs["obs_id"], extra)
    return _table_hdu(cols, header)


class _ObservationHDUs:
    """The HDUs of the observation files, from templates updated in place.

    astropy's header handling dominates the cost of building and writing small tables, so the
    GTI and IRF HDUs are built once per data store; per observation only their values change.
    """

    def __init__(self, bkg_format, gradient_per_deg, bkg_irf=True, point_like=False):
        self.bkg_format = bkg_format
        self.gradient_per_deg = gradient_per_deg
        self.bkg_irf = bkg_irf
        self.point_like = point_like
        self._templates = None

    def kinds(self):
        """``[(hdu_type, hdu_class), ...]`` of the IRF HDUs written, in file order."""
        kinds = [("aeff", "aeff_2d"), ("edisp", "edisp_2d")]
        kinds.append(("rad_max", "rad_max_2d") if self.point_like else ("psf", "psf_table"))
        if self.bkg_irf:
            kinds.append(("bkg", self.bkg_format.lower()))
        return kinds

    def __call__(self, obs, events):
        obs_id = obs["obs_id"]
        if self._templates is None:
            self._templates = {
                "gti": _gti_hdu(obs),
                "aeff": _aeff_hdu(obs["aeff_table"], obs_id, obs["zen_pnt"], self.point_like),
                "edisp": _edisp_hdu(obs_id, self.point_like),
                "psf": _psf_hdu(obs_id),
                "rad_max": _rad_max_hdu(obs_id),
                "bkg": _bkg_hdu(
                    obs["bkg_energy_profile"], self.bkg_format, self.gradient_per_deg, obs_id
                ),
            }
        else:
            t = self._templates
            for hdu in t.values():
                hdu.header["OBS_ID"] = obs_id
            t["gti"].data["START"][0] = obs["tstart"]
            t["gti"].data["STOP"][0] = obs["tstop"]
            t["gti"].header["TSTART"] = obs["tstart"]
            t["gti"].header["TSTOP"] = obs["tstop"]
            t["aeff"].data["EFFAREA"][0] = (_point_like_aeff_m2(obs["aeff_table"])
                                            if self.point_like else obs["aeff_table"])
            t["aeff"].header["ZENITH"] = obs["zen_pnt"]
            t["aeff"].header["LO_THRES"] = _aeff_lo_thres_tev(obs["zen_pnt"])
            t["bkg"].data["BKG"][0] = _bkg_table(
                obs["bkg_energy_profile"], self.bkg_format, self.gradient_per_deg
            )
        t = self._templates
        return [_events_hdu(events, obs), t["gti"]] + [t[kind] for kind, _ in self.kinds()]


def _fits_bytes(hdus):
    """The bytes of a FITS file with an empty primary HDU and ``hdus``."""
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), *hdus]).writeto(buf, output_verify="ignore")
    return buf.getvalue()


def _write_bytes(data, path, gzip):
    """Write bytes, gzipped with a zero mtime so that files are byte-reproducible."""
    if gzip:
        data = _gzip.compress(data, compresslevel=_GZIP_LEVEL, mtime=0)
    Path(path).write_bytes(data)


def _obs_index_row(obs, event_count):
    start, stop = _met_to_utc(obs["tstart"]), _met_to_utc(obs["tstop"])
    offset_obj = _separation_deg(obs["ra_obj"], obs["dec_obj"], obs["ra_pnt"], obs["dec_pnt"])
    return {
        "OBS_ID": obs["obs_id"],
        "RA_PNT": obs["ra_pnt"],
        "DEC_PNT": obs["dec_pnt"],
        "GLON_PNT": obs["glon_pnt"],
        "GLAT_PNT": obs["glat_pnt"],
        "ZEN_PNT": obs["zen_pnt"],
        "ALT_PNT": obs["alt_pnt"],
        "AZ_PNT": obs["az_pnt"],
        "OBJECT": obs["object"],
        "RA_OBJ": obs["ra_obj"],
        "DEC_OBJ": obs["dec_obj"],
        "OFFSET_OBJ": float(offset_obj),
        "ONTIME": obs["ontime"],
        "LIVETIME": obs["livetime"],
        "DEADC": obs["deadc"],
        "TSTART": obs["tstart"],
        "TSTOP": obs["tstop"],
        "DATE-OBS": start.strftime("%Y-%m-%d"),
        "TIME-OBS": start.strftime("%H:%M:%S.000"),
        "DATE-END": stop.strftime("%Y-%m-%d"),
        "TIME-END": stop.strftime("%H:%M:%S.000"),
        "N_TELS": 4,
        "TELLIST": "1,2,3,4",
        "QUALITY": 0,
        "MUONEFF": obs["muoneff"],
        "EVENT_COUNT": event_count,
        "SAFE_ENERGY_LO": _aeff_lo_thres_tev(obs["zen_pnt"]),
        "SAFE_ENERGY_HI": ENERGY_MAX_TEV,
    }


def _hdu_index_rows(obs_id, file_name, hdus, kinds):
    kinds = [("events", "events"), ("gti", "gti")] + list(kinds)
    return [
        (obs_id, htype, hclass, "data", file_name, hdu.name, _hdu_size(hdu))
        for hdu, (htype, hclass) in zip(hdus, kinds)
    ]


def _obs_index_hdu(rows):
    f8, f4, i8 = np.float64, np.float32, np.int64
    spec = [
        ("OBS_ID", i8, None),
        ("RA_PNT", f8, "deg"),
        ("DEC_PNT", f8, "deg"),
        ("GLON_PNT", f8, "deg"),
        ("GLAT_PNT", f8, "deg"),
        ("ZEN_PNT", f4, "deg"),
        ("ALT_PNT", f4, "deg"),
        ("AZ_PNT", f4, "deg"),
        ("OBJECT", str, None),
        ("RA_OBJ", f8, "deg"),
        ("DEC_OBJ", f8, "deg"),
        ("OFFSET_OBJ", f4, "deg"),
        ("ONTIME", f4, "s"),
        ("LIVETIME", f4, "s"),
        ("DEADC", f4, None),
        ("TSTART", f8, "s"),
        ("TSTOP", f8, "s"),
        ("DATE-OBS", str, None),
        ("TIME-OBS", str, None),
        ("DATE-END", str, None),
        ("TIME-END", str, None),
        ("N_TELS", i8, None),
        ("TELLIST", str, None),
        ("QUALITY", i8, None),
        ("MUONEFF", f4, None),
        ("EVENT_COUNT", i8, None),
        ("SAFE_ENERGY_LO", f4, "TeV"),
        ("SAFE_ENERGY_HI", f4, "TeV"),
    ]
    cols = [(name, np.array([r[name] for r in rows], dtype=dt), unit) for name, dt, unit in spec]
    header = fits.Header()
    header["EXTNAME"] = "OBS_INDEX"
    for key, (value, comment) in _GADF.items():
        header[key] = (value, comment)
    header["HDUCLAS1"] = "INDEX"
    header["HDUCLAS2"] = "OBS"
    header["MJDREFI"] = MJDREFI
    header["MJDREFF"] = MJDREFF
    header["TIMEUNIT"] = "s"
    header["TIMESYS"] = "TT"
    header["TIMEREF"] = "LOCAL"
    header["GEOLON"] = (SITE_LON_DEG, "longitude of observatory (deg)")
    header["GEOLAT"] = (SITE_LAT_DEG, "latitude of observatory (deg)")
    header["ALTITUDE"] = (SITE_ALTITUDE_M, "altitude of observatory (m)")
    header["TELESCOP"] = _TELESCOP
    header["CREATOR"] = _CREATOR
    return _table_hdu(cols, header)


def _hdu_index_hdu(rows):
    names = ["OBS_ID", "HDU_TYPE", "HDU_CLASS", "FILE_DIR", "FILE_NAME", "HDU_NAME", "SIZE"]
    dtypes = [np.int64, str, str, str, str, str, np.int64]
    cols = [
        (name, np.array([r[i] for r in rows], dtype=dt), None)
        for i, (name, dt) in enumerate(zip(names, dtypes))
    ]
    header = fits.Header()
    header["EXTNAME"] = "HDU_INDEX"
    for key, (value, comment) in _GADF.items():
        header[key] = (value, comment)
    header["HDUCLAS1"] = "INDEX"
    header["HDUCLAS2"] = "HDU"
    header["CREATOR"] = _CREATOR
    return _table_hdu(cols, header)


def _hdu_size(hdu):
    """Size in bytes of an HDU in its (uncompressed) file: header plus padded data."""
    return len(hdu.header.tostring()) + -(-hdu.data.nbytes // 2880) * 2880


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------
def simulate_datastore(
    outdir,
    n_obs=4,
    seed=0,
    center=None,
    frame="icrs",
    sources=None,
    livetime_s=1800.0,
    wobble_deg=0.7,
    bkg_format="BKG_3D",
    first_obs_id=1,
    pointings=None,
    *,
    gzip=True,
    overwrite=False,
    bkg_gradient_per_deg=0.0,
    object_name="SIM-FIELD",
    bkg_irf=True,
    point_like=False,
):
    """Simulate observations and write them as a GADF DL3 data store.

    Writes ``obs-index.fits.gz``, ``hdu-index.fits.gz`` and one file per observation,
    ``data/obs_XXXXXX.fits[.gz]``, with the HDUs ``EVENTS``, ``GTI``, ``AEFF`` (AEFF_2D),
    ``EDISP`` (EDISP_2D), ``PSF`` (PSF_TABLE) and ``BKG`` (BKG_3D or BKG_2D); with
    ``point_like``, ``RAD_MAX`` (RAD_MAX_2D) instead of ``PSF``; without ``bkg_irf``, no
    ``BKG``.

    Parameters
    ----------
    outdir : str or `~pathlib.Path`
        Folder of the data store; created if needed.
    n_obs : int
        Number of observations (ignored when ``pointings`` is given).
    seed : int
        Seed: the events of observation ``obs_id`` are drawn with
        ``numpy.random.default_rng([seed, obs_id])``.
    center : tuple of float, optional
        Field centre ``(lon_deg, lat_deg)`` in ``frame``, the target of the observations
        (``OBJECT``, ``RA_OBJ``/``DEC_OBJ``) and the centre of the wobble pattern. Defaults to
        `DEFAULT_CENTER` (ICRS) without ``pointings``, and to each pointing with them.
    frame : str
        Astropy frame of ``center`` and ``pointings``: ``"icrs"``, ``"galactic"``, ...
        Positions in the files are always ICRS.
    sources : list of dict, optional
        Gamma-ray sources; None or empty for background only. Keys: ``lon_deg``, ``lat_deg``,
        ``frame`` (default ``"icrs"``), ``sigma_deg`` (Gaussian width, 0 = point source,
        default 0), ``amplitude`` (dN/dE at 1 TeV in cm-2 s-1 TeV-1), ``index`` (power-law
        index), ``name`` (optional, unused). See `demo_sources`.
    livetime_s : float
        Live time of each observation [s] (``LIVETIME``). The dead-time fraction is drawn per
        observation (``DEADC`` in [0.90, 0.95]) and ``ONTIME`` is the whole number of seconds
        with ``ONTIME * DEADC = LIVETIME``.
    wobble_deg : float
        Wobble offset [deg], see `wobble_pointings`.
    bkg_format : {"BKG_3D", "BKG_2D"}
        Background IRF format (and the model the background events are drawn from).
    first_obs_id : int
        Id of the first observation; ids are consecutive.
    pointings : list of tuple of float, optional
        Explicit pointings ``(lon_deg, lat_deg)`` in ``frame``, e.g. from `survey_pointings`.
    gzip : bool
        Gzip the observation files (``.fits.gz``) or not (``.fits``). Index files are always
        gzipped.
    overwrite : bool
        Replace an existing data store in ``outdir``.
    bkg_gradient_per_deg : float
        Slope of ln(background rate) along DETX [1/deg] (``BKG_3D`` only); 0 gives a radially
        symmetric background.
    object_name : str
        ``OBJECT`` of the observations.
    bkg_irf : bool
        Write the background IRF (False: the events are the same, but the files have no
        BKG HDU, as most public MAGIC, VERITAS and LST-1 data).
    point_like : bool
        Point-like IRFs (as MAGIC's): a RAD_MAX_2D HDU (the directional cut versus energy),
        AEFF_2D and EDISP_2D with HDUCLAS3 = POINT-LIKE (the area is that of the events
        within RAD_MAX of a point source), no PSF HDU. The event lists are unchanged.

    Returns
    -------
    outdir : `~pathlib.Path`
        The data store folder.

    Notes
    -----
    The observation-time model: consecutive runs of ~30 min, four a night, each night's block
    centred on the culmination of its first pointing at the H.E.S.S. site, starting on the night
    of `FIRST_NIGHT_UTC`; times are
    seconds (TT) since MJDREF = 51910.000742870370370241 (2001-01-01T00:00:00 UTC), as for
    H.E.S.S. The energy threshold rises with the zenith angle of the run (clipped at 70 deg for
    the IRFs).
    """
    outdir = Path(outdir)
    _check_arguments(bkg_format, bkg_gradient_per_deg, livetime_s, first_obs_id)
    src_list = _validate_sources(sources)
    ra_pnt, dec_pnt, ra_obj, dec_obj = _pointings_icrs(n_obs, center, frame, pointings,
                                                       wobble_deg)
    obs_index_file = outdir / "obs-index.fits.gz"
    if obs_index_file.exists() and not overwrite:
        raise FileExistsError(f"{obs_index_file} exists (use overwrite=True to replace it)")
    (outdir / "data").mkdir(parents=True, exist_ok=True)
    observations, rngs = _observations(ra_pnt, dec_pnt, ra_obj, dec_obj, seed, first_obs_id,
                                       livetime_s, object_name)
    suffix = ".fits.gz" if gzip else ".fits"
    make_hdus = _ObservationHDUs(bkg_format, bkg_gradient_per_deg, bkg_irf, point_like)
    obs_rows, hdu_rows = [], []
    # compression and disk writes (which release the GIL) overlap with the simulation
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = []
        for obs, rng in zip(observations, rngs):
            events = _simulate_events(rng, obs, src_list, bkg_format, bkg_gradient_per_deg)
            hdus = make_hdus(obs, events)
            file_name = f"obs_{obs['obs_id']:06d}{suffix}"
            data = _fits_bytes(hdus)
            pending.append(pool.submit(_write_bytes, data, outdir / "data" / file_name, gzip))
            if len(pending) > 8:
                pending.pop(0).result()
            hdu_rows += _hdu_index_rows(obs["obs_id"], file_name, hdus, make_hdus.kinds())
            obs_rows.append(_obs_index_row(obs, int(events["EVENT_ID"].size)))
        for future in pending:
            future.result()
    _write_bytes(_fits_bytes([_hdu_index_hdu(hdu_rows)]), outdir / "hdu-index.fits.gz", True)
    _write_bytes(_fits_bytes([_obs_index_hdu(obs_rows)]), obs_index_file, True)
    return outdir


def _check_arguments(bkg_format, bkg_gradient_per_deg, livetime_s, first_obs_id):
    if bkg_format not in ("BKG_3D", "BKG_2D"):
        raise ValueError(f"bkg_format must be 'BKG_3D' or 'BKG_2D', got {bkg_format!r}")
    if bkg_format == "BKG_2D" and bkg_gradient_per_deg != 0:
        raise ValueError("bkg_gradient_per_deg needs bkg_format='BKG_3D'")
    if not livetime_s > 0:
        raise ValueError(f"livetime_s must be > 0, got {livetime_s}")
    if not (isinstance(first_obs_id, (int, np.integer)) and first_obs_id >= 0):
        raise ValueError(f"first_obs_id must be a non-negative integer, got {first_obs_id!r}")


def _pointings_icrs(n_obs, center, frame, pointings, wobble_deg):
    """ICRS pointings and targets (deg): a wobble pattern around ``center``, or ``pointings``."""
    if pointings is None:
        if n_obs < 1:
            raise ValueError(f"n_obs must be >= 1, got {n_obs}")
        if center is None:
            center, center_frame = DEFAULT_CENTER, "icrs"
        else:
            center_frame = frame
        pointings = wobble_pointings(center, n_obs, wobble_deg, center_frame)
        pnt_frame = center_frame
    else:
        pnt_frame = frame
        center_frame = frame
        if len(pointings) < 1:
            raise ValueError("pointings is empty")
    pnt = np.asarray(pointings, dtype=float).reshape(-1, 2)
    ra_pnt, dec_pnt = _to_icrs(pnt[:, 0], pnt[:, 1], pnt_frame)
    if center is None:
        return ra_pnt, dec_pnt, ra_pnt, dec_pnt
    ra_c, dec_c = _to_icrs(center[0], center[1], center_frame)
    n = len(pnt)
    return ra_pnt, dec_pnt, np.full(n, ra_c[0]), np.full(n, dec_c[0])


def _observations(ra_pnt, dec_pnt, ra_obj, dec_obj, seed, first_obs_id, livetime_s,
                  object_name):
    """The observations' settings (dicts) and their random generators: ids, schedule, dead
    time, zenith-dependent IRF tables."""
    n_obs = len(ra_pnt)
    gal = SkyCoord(ra_pnt * u.deg, dec_pnt * u.deg, frame="icrs").galactic
    obs_ids = first_obs_id + np.arange(n_obs)
    # per-observation dead time: first draw of the observation's own generator
    rngs = [np.random.default_rng([seed, int(i)]) for i in obs_ids]
    deadc_nominal = np.array([rng.uniform(0.90, 0.95) for rng in rngs])
    ontime = np.round(livetime_s / deadc_nominal)
    ontime = np.maximum(ontime, 1.0)
    deadc = livetime_s / ontime
    tstart = _schedule(ra_pnt, ontime)
    tstop = tstart + ontime
    alt, az = _altaz_deg(ra_pnt, dec_pnt, 0.5 * (tstart + tstop))
    observations = []
    for k in range(n_obs):
        zen = 90.0 - float(alt[k])
        aeff_table = _aeff_table_m2(zen)
        observations.append({
            "obs_id": int(obs_ids[k]),
            "ra_pnt": float(ra_pnt[k]),
            "dec_pnt": float(dec_pnt[k]),
            "glon_pnt": float(gal.l.deg[k]),
            "glat_pnt": float(gal.b.deg[k]),
            "alt_pnt": float(alt[k]),
            "az_pnt": float(az[k]),
            "zen_pnt": zen,
            "ra_obj": float(ra_obj[k]),
            "dec_obj": float(dec_obj[k]),
            "object": object_name,
            "tstart": float(tstart[k]),
            "tstop": float(tstop[k]),
            "ontime": float(ontime[k]),
            "livetime": float(ontime[k] * deadc[k]),
            "deadc": float(deadc[k]),
            "muoneff": float(rngs[k].uniform(0.85, 0.95)),
            "aeff_table": aeff_table,
            "aeff_max": _aeff_interp_max_m2(aeff_table),
            "bkg_energy_profile": _bkg_energy_profile(_log_centers(_BKG_ENERGY_EDGES_TEV), zen),
        })
    return observations, rngs
