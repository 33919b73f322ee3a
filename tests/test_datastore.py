"""The GADF data store: index tables, observation selection, HDU locations and loading.

Expected values come from the index tables as astropy reads them (H.E.S.S. DR1) and from
small index tables written here.
"""

import logging

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from conftest import MSH_CENTER, gammapy_data

from ringbg.datastore import DataStore, DataStoreError
from ringbg.dl3 import Observation
from ringbg.errors import DL3Error


@pytest.fixture(scope="module")
def dr1():
    return DataStore.from_dir(gammapy_data() / "hess-dl3-dr1")


@pytest.fixture(scope="module")
def obs_index():
    return Table.read(gammapy_data() / "hess-dl3-dr1" / "obs-index.fits.gz")


@pytest.fixture(scope="module")
def hdu_index():
    return Table.read(gammapy_data() / "hess-dl3-dr1" / "hdu-index.fits.gz")


def _plain(value):
    if isinstance(value, bytes):
        return value.decode().strip()
    if isinstance(value, str):
        return value.strip()
    return value.item() if hasattr(value, "item") else value


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------------------------
# H.E.S.S. DR1


def test_obs_ids_in_index_order(dr1, obs_index):
    assert dr1.obs_ids == [int(i) for i in obs_index["OBS_ID"]]
    assert len(dr1.obs_ids) == len(obs_index) > 100
    assert all(type(i) is int for i in dr1.obs_ids)


@pytest.mark.parametrize("row", [0, 37, -1])
def test_obs_info_equals_the_index_row(dr1, obs_index, row):
    obs_id = int(obs_index["OBS_ID"][row])
    info = dr1.obs_info(obs_id)
    assert list(info) == obs_index.colnames
    for name in obs_index.colnames:
        expected = _plain(obs_index[name][row])
        assert info[name] == expected, name
        assert type(info[name]) in (int, float, str, bool), (name, type(info[name]))
    assert info["OBS_ID"] == obs_id


def test_obs_info_of_an_unknown_id_is_empty(dr1):
    assert dr1.obs_info(999999) == {}
    info = dr1.obs_info(20136)
    info["OBJECT"] = "changed"
    assert dr1.obs_info(20136)["OBJECT"] != "changed"  # a copy each time


@pytest.mark.parametrize("frame", ["icrs", "galactic"])
@pytest.mark.parametrize("radius", [0.8, 2.5, 10.0])
def test_select_by_cone(dr1, obs_index, frame, radius):
    center = SkyCoord(*MSH_CENTER, unit="deg", frame="icrs")
    if frame == "galactic":
        center = center.galactic
    lon, lat = center.spherical.lon.deg, center.spherical.lat.deg
    pointings = SkyCoord(obs_index["RA_PNT"], obs_index["DEC_PNT"], unit="deg", frame="icrs")
    sep = pointings.separation(center).deg
    expected = [int(i) for i in obs_index["OBS_ID"][sep < radius]]
    selected = dr1.select(cone=(lon, lat, frame, radius))
    assert selected == expected
    assert 0 < len(selected) < len(obs_index)


def test_select_by_ids_keeps_the_requested_order(dr1):
    wanted = [20151, 20136, 999999, 20137]
    assert dr1.select(obs_ids=wanted) == [20151, 20136, 20137]
    assert dr1.missing_ids(wanted) == [999999]
    assert dr1.missing_ids([20136]) == []


def test_select_by_ids_and_cone(dr1, obs_index):
    in_cone = dr1.select(cone=(*MSH_CENTER, "icrs", 2.5))
    outside = [i for i in dr1.obs_ids if i not in in_cone]
    wanted = [in_cone[2], outside[0], in_cone[0], outside[-1]]
    assert dr1.select(obs_ids=wanted, cone=(*MSH_CENTER, "icrs", 2.5)) == [in_cone[2],
                                                                          in_cone[0]]


def test_select_all(dr1):
    assert dr1.select() == dr1.obs_ids


def test_hdu_locations_equal_the_index_rows(dr1, hdu_index):
    base = gammapy_data() / "hess-dl3-dr1"
    for obs_id in (20136, 23523):
        rows = hdu_index[hdu_index["OBS_ID"] == obs_id]
        expected = {_plain(r["HDU_TYPE"]).lower():
                    (base / _plain(r["FILE_DIR"]) / _plain(r["FILE_NAME"]),
                     _plain(r["HDU_NAME"]), _plain(r["HDU_CLASS"]).lower()) for r in rows}
        assert dr1.hdu_locations(obs_id) == expected
        assert {"events", "gti", "aeff", "bkg"} <= set(expected)
        assert expected["events"][0].is_file()
    assert dr1.hdu_locations(999999) == {}


def test_load_equals_the_file(dr1):
    obs_id = 20137
    obs = dr1.load(obs_id)
    assert isinstance(obs, Observation) and obs.obs_id == obs_id
    path = dr1.hdu_locations(obs_id)["events"][0]
    with fits.open(path) as hdul:
        events, header, gti = hdul["EVENTS"].data, hdul["EVENTS"].header, hdul["GTI"].data
        for ours, name in ((obs.ra_deg, "RA"), (obs.dec_deg, "DEC"),
                           (obs.energy_tev, "ENERGY")):
            np.testing.assert_array_equal(ours, events[name].astype(float))
        np.testing.assert_array_equal(obs.gti_start_s, gti["START"])
        np.testing.assert_array_equal(obs.gti_stop_s, gti["STOP"])
        assert obs.pointing_ra_deg == header["RA_PNT"]
        assert obs.pointing_dec_deg == header["DEC_PNT"]
        assert obs.deadc == header["DEADC"]
        assert obs.time_ref_mjd == header["MJDREFI"] + header["MJDREFF"]
        assert obs.time_scale == header["TIMESYS"].lower()
        assert obs.meta["OBJECT"] == header["OBJECT"]
    # the index agrees with the file
    info = dr1.obs_info(obs_id)
    assert len(obs.energy_tev) == info["EVENT_COUNT"]
    assert obs.ontime_s == pytest.approx(info["ONTIME"], rel=1e-6)
    assert obs.livetime_s == pytest.approx(info["LIVETIME"], rel=1e-6)
    assert obs.bkg.alignment == "REVERSE_LON_RADEC" and obs.bkg.is_3d
    assert obs.aeff.lo_thres_tev == pytest.approx(info["SAFE_ENERGY_LO"], rel=1e-6)


def test_load_id_not_in_hdu_index(dr1):
    with pytest.raises(DL3Error, match="observation 999999: not in the HDU index"):
        dr1.load(999999)


# --------------------------------------------------------------------------------------------
# small stores written here


def write_store(root, obs_rows, hdu_rows, suffix=".fits.gz", base_dir=None):
    """Index tables only: ``obs_rows`` of (OBS_ID, RA_PNT, DEC_PNT), ``hdu_rows`` of
    (OBS_ID, HDU_TYPE, HDU_CLASS, FILE_DIR, FILE_NAME, HDU_NAME)."""
    root.mkdir(parents=True, exist_ok=True)
    obs = Table(rows=obs_rows, names=("OBS_ID", "RA_PNT", "DEC_PNT"))
    obs["OBJECT"] = [f"target {k}" for k in range(len(obs))]
    obs.write(root / f"obs-index{suffix}")
    hdu = Table(rows=hdu_rows, names=("OBS_ID", "HDU_TYPE", "HDU_CLASS", "FILE_DIR",
                                      "FILE_NAME", "HDU_NAME"))
    if base_dir is not None:
        hdu.meta["BASE_DIR"] = str(base_dir)
    hdu.write(root / f"hdu-index{suffix}")
    return root


def hdu_rows(obs_id, file_name="run.fits", file_dir="data"):
    return [(obs_id, t, c, file_dir, file_name, t)
            for t, c in (("events", "events"), ("gti", "gti"), ("aeff", "aeff_2d"),
                         ("bkg", "bkg_3d"))]


def test_duplicate_obs_index_rows_warn_and_count_once(tmp_path, caplog):
    root = write_store(tmp_path / "s", [(1, 10.0, 20.0), (2, 11.0, 20.0), (1, 50.0, -5.0)],
                       hdu_rows(1) + hdu_rows(2))
    caplog.set_level(logging.WARNING)
    store = DataStore.from_dir(root)
    messages = warnings_of(caplog)
    assert len(messages) == 1
    assert "obs-index.fits.gz" in messages[0] and " 1 " in messages[0]
    assert "more than once" in messages[0]
    assert store.select() == [1, 2]
    assert store.select(obs_ids=[2, 1]) == [2, 1]
    # the first row is the one used, also for the cone
    assert store.obs_info(1)["RA_PNT"] == 10.0 and store.obs_info(1)["OBJECT"] == "target 0"
    assert store.select(cone=(10.0, 20.0, "icrs", 2.0)) == [1, 2]


def test_duplicate_hdu_rows_warn_once_and_use_the_first(tmp_path, caplog):
    rows = hdu_rows(1) + [(1, "bkg", "bkg_3d", "data", "other.fits", "bkg")] + hdu_rows(1)
    root = write_store(tmp_path / "s", [(1, 10.0, 20.0)], rows)
    store = DataStore.from_dir(root)
    caplog.set_level(logging.WARNING)
    first = store.hdu_locations(1)
    again = store.hdu_locations(1)
    assert first == again
    assert first["bkg"] == (root / "data" / "run.fits", "bkg", "bkg_3d")
    messages = [m for m in warnings_of(caplog) if "more than one" in m]
    assert len(messages) == 1
    assert "'bkg'" in messages[0] and "other.fits" in messages[0]


def test_identical_duplicate_hdu_rows_do_not_warn(tmp_path, caplog):
    root = write_store(tmp_path / "s", [(1, 10.0, 20.0)], hdu_rows(1) + hdu_rows(1))
    caplog.set_level(logging.WARNING)
    assert len(DataStore.from_dir(root).hdu_locations(1)) == 4
    assert not warnings_of(caplog)


def test_index_text_is_stripped_and_lower_cased(tmp_path):
    rows = [(1, "EVENTS ", "EVENTS", "data ", "run.fits  ", "EVENTS  ")]
    root = write_store(tmp_path / "s", [(1, 10.0, 20.0)], rows, suffix=".fits")
    store = DataStore.from_dir(root)
    assert store.hdu_locations(1) == {"events": (root / "data" / "run.fits", "EVENTS",
                                                 "events")}


def test_base_dir_of_the_hdu_index(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = write_store(tmp_path / "s", [(1, 10.0, 20.0)], hdu_rows(1), base_dir=elsewhere)
    assert DataStore.from_dir(root).hdu_locations(1)["aeff"][0] == elsewhere / "data/run.fits"
    # a BASE_DIR that does not exist (the store was moved): the index folder
    root = write_store(tmp_path / "t", [(1, 10.0, 20.0)], hdu_rows(1),
                       base_dir=tmp_path / "gone")
    assert DataStore.from_dir(root).hdu_locations(1)["aeff"][0] == root / "data/run.fits"


def test_relative_base_dir_is_taken_from_the_index_folder(tmp_path, monkeypatch):
    """A relative BASE_DIR is relative to the HDU index's folder, not to the current one."""
    (tmp_path / "s" / "files").mkdir(parents=True)
    (tmp_path / "elsewhere" / "files").mkdir(parents=True)  # the same name from the cwd
    root = write_store(tmp_path / "s", [(1, 10.0, 20.0)], hdu_rows(1), base_dir="files")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert DataStore.from_dir(root).hdu_locations(1)["aeff"][0] == (
        root / "files" / "data" / "run.fits")
    monkeypatch.chdir(tmp_path)
    root = write_store(tmp_path / "t", [(1, 10.0, 20.0)], hdu_rows(1), base_dir="../s/files")
    assert DataStore.from_dir(root).hdu_locations(1)["aeff"][0] == (
        root / "../s/files" / "data" / "run.fits")


def test_index_rows_hold_every_column(tmp_path):
    rows = hdu_rows(1) + hdu_rows(2, "other.fits")
    root = write_store(tmp_path / "s", [(1, 10.0, 20.0), (2, 12.0, 20.0)], rows)
    got = DataStore.from_dir(root).index_rows(2)
    assert got["obs-index"] == [{"OBS_ID": 2, "RA_PNT": 12.0, "DEC_PNT": 20.0,
                                 "OBJECT": "target 1"}]
    assert [(r["HDU_TYPE"], r["FILE_NAME"]) for r in got["hdu-index"]] == [
        (t, "other.fits") for t in ("events", "gti", "aeff", "bkg")]
    assert set(got["hdu-index"][0]) == {"OBS_ID", "HDU_TYPE", "HDU_CLASS", "FILE_DIR",
                                        "FILE_NAME", "HDU_NAME"}
    assert DataStore.from_dir(root).index_rows(3) == {"obs-index": [], "hdu-index": []}


def _check_gtis(store_dir):
    """Every observation's GTIs pass the checks against its EVENTS header and events."""
    from ringbg.dl3 import _deadc, _read_gti_checked
    from ringbg.dl3 import read_event_times
    from ringbg.files import read_fits_tables

    store = DataStore.from_dir(store_dir)
    for obs_id in store.obs_ids:
        locations = store.hdu_locations(obs_id)
        hdus = {k: read_fits_tables(locations[k][0])[locations[k][1].upper()]
                for k in ("events", "gti")}
        events = hdus["events"]
        where = f"{locations['events'][0]} [EVENTS]"
        deadc = _deadc(events.header, where, obs_id)
        times = read_event_times(events, locations["events"][0])
        start, stop = _read_gti_checked(obs_id, hdus, locations, events.header, deadc, times,
                                        where)
        assert np.sum(stop - start) == pytest.approx(events.header["ONTIME"], rel=1e-6)
    return len(store.obs_ids)


@pytest.mark.parametrize("name, n_obs", [("hess-dl3-dr1", 105), ("cta-1dc/index/gps", 4),
                                         ("magic-rad-max", 2)])
def test_every_public_observation_passes_the_gti_checks(name, n_obs):
    assert _check_gtis(gammapy_data() / name) == n_obs


def test_simulated_stores_pass_the_gti_checks(tmp_path):
    from ringbg.simulate import demo_sources, simulate_datastore

    stores = [
        simulate_datastore(tmp_path / "a", n_obs=2, seed=1, sources=demo_sources()),
        simulate_datastore(tmp_path / "b", n_obs=2, seed=2, bkg_format="BKG_2D", gzip=False,
                           livetime_s=60.0),
        simulate_datastore(tmp_path / "c", n_obs=2, seed=3, livetime_s=5.0, frame="galactic",
                           center=(0.0, 0.0), point_like=True, bkg_irf=False),
    ]
    assert [_check_gtis(s) for s in stores] == [2, 2, 2]
    store = DataStore.from_dir(stores[0])
    assert all(store.load(i).livetime_s > 0 for i in store.obs_ids)


def test_environment_variables_in_the_path(tmp_path, monkeypatch):
    write_store(tmp_path / "s", [(1, 10.0, 20.0)], hdu_rows(1))
    monkeypatch.setenv("RINGBG_TEST_STORE", str(tmp_path))
    assert DataStore.from_dir("$RINGBG_TEST_STORE/s").obs_ids == [1]


def test_integral_float_obs_ids_are_accepted(tmp_path):
    root = write_store(tmp_path / "s", [(1.0, 10.0, 20.0), (2.0, 12.0, 20.0)],
                       hdu_rows(1) + hdu_rows(2))
    store = DataStore.from_dir(root)
    assert store.obs_ids == [1, 2] and store.select(obs_ids=[2]) == [2]


@pytest.mark.parametrize("case, message", [
    ("not-a-folder", "is not a folder"),
    ("no-obs-index", "has no obs-index"),
    ("no-ra-pnt", "missing columns RA_PNT"),
    ("fractional-obs-id", "column OBS_ID holds no integers"),
    ("text-pointing", "column DEC_PNT holds no numbers"),
    ("not-fits", "cannot be read as a FITS index table"),
])
def test_unusable_stores(tmp_path, case, message):
    root = write_store(tmp_path / "s", [(1, 10.0, 20.0)], hdu_rows(1))
    if case == "not-a-folder":
        root = tmp_path / "missing"
    elif case == "no-obs-index":
        (root / "obs-index.fits.gz").unlink()
    elif case == "no-ra-pnt":
        Table(rows=[(1, 20.0)], names=("OBS_ID", "DEC_PNT")).write(
            root / "obs-index.fits.gz", overwrite=True)
    elif case == "fractional-obs-id":
        Table(rows=[(1.5, 10.0, 20.0)], names=("OBS_ID", "RA_PNT", "DEC_PNT")).write(
            root / "obs-index.fits.gz", overwrite=True)
    elif case == "text-pointing":
        Table(rows=[(1, 10.0, "north")], names=("OBS_ID", "RA_PNT", "DEC_PNT")).write(
            root / "obs-index.fits.gz", overwrite=True)
    else:
        (root / "hdu-index.fits.gz").write_bytes(b"not a fits file at all")
    with pytest.raises(DataStoreError, match=message):
        DataStore.from_dir(root)


def test_select_repeated_id_keeps_its_first_place(tmp_path):
    root = write_store(tmp_path / "s", [(1, 10.0, 20.0), (2, 10.5, 20.0), (3, 11.0, 20.0)],
                       hdu_rows(1) + hdu_rows(2) + hdu_rows(3))
    assert DataStore.from_dir(root).select(obs_ids=[3, 1, 3, 2]) == [3, 1, 2]


def test_load_reads_the_edisp_hdu_when_listed(dr1, tmp_path):
    """DR1 lists an 'edisp' HDU: it is read (as gammapy's EnergyDispersion2D), unless not asked
    for; an index without it gives ``edisp = None``; a listed edisp of an unknown class or a
    missing HDU is an error naming the observation or file, only when asked for."""
    obs = dr1.load(20136)
    assert obs.edisp is not None and obs.edisp.values.shape == (96, 160, 6)
    assert dr1.load(20136, edisp=False).edisp is None
    dr1_dir = gammapy_data() / "hess-dl3-dr1"
    path = dr1_dir / "data" / "hess_dl3_dr1_obs_id_020136.fits.gz"
    rows = [(20136, t, c, str(path.parent), path.name, n) for t, c, n in (
        ("events", "events", "EVENTS"), ("gti", "gti", "GTI"), ("aeff", "aeff_2d", "AEFF"),
        ("bkg", "bkg_3d", "BKG"))]
    root = write_store(tmp_path / "none", [(20136, 228.6, -58.8)], rows)
    assert DataStore.from_dir(root).load(20136).edisp is None
    odd = rows + [(20136, "edisp", "edisp_kernel", str(path.parent), path.name, "EDISP")]
    root = write_store(tmp_path / "odd", [(20136, 228.6, -58.8)], odd)
    with pytest.raises(DL3Error, match="observation 20136: unknown edisp HDU class "
                                       "'edisp_kernel'"):
        DataStore.from_dir(root).load(20136)
    assert DataStore.from_dir(root).load(20136, edisp=False).edisp is None
    gone = rows + [(20136, "edisp", "edisp_2d", str(path.parent), path.name, "NOPE")]
    root = write_store(tmp_path / "gone", [(20136, 228.6, -58.8)], gone)
    with pytest.raises(DL3Error, match="no HDU named 'NOPE'"):
        DataStore.from_dir(root).load(20136)
