"""Bad data, faults and interruptions: what ringbg does with each, with nothing lost.

A corpus of damaged inputs is made from good files: a three-observation H.E.S.S. DR1 store
(20136, 20137, 20151, index tables rewritten to only their rows) copied into ``tmp_path``,
then one thing is broken, in observation 20137 unless said otherwise. Each case has one of
two expected behaviours:

* **skip**: a warning names the observation and the reason; the other observations give
  exactly the maps they give alone; the reason is in ``summary.json`` ``skipped`` and in the
  report's observation table (`test_cli_skips_listed_in_summary_and_report`).
* **stop**: `RunError` (or `ConfigError`) with one line naming the file; the CLI exits with
  status 1 and one ``ringbg: error:`` line on stderr, no traceback.

Some damage is not an error and is used as gammapy 2.1 uses it (NaN effective area is zero,
events outside the GTI are kept, an observation without events still adds exposure and
background); those cases assert the numbers.

The interruption tests kill ``ringbg run`` (SIGKILL) at several points of its run and check
that OUTDIR is either the previous results, byte for byte, or the complete new ones.
"""

import gzip
import io
import json
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits
from astropy.table import Table, vstack
from click.testing import CliRunner
from conftest import gammapy_data, msh_config

from ringbg import files, run
from ringbg.cli import main
from ringbg.config import ConfigError
from ringbg.datastore import DataStoreError
from ringbg.errors import DL3Error
from ringbg.files import prefetch, read_fits_tables
from ringbg.pipeline import RunError

SUBSET = (20136, 20137, 20151)
BAD = 20137
GOOD = (20136, 20151)
INDEX_FILES = ("obs-index.fits.gz", "hdu-index.fits.gz")


# --------------------------------------------------------------------------------------------
# building the corpus


def _file_name(obs_id):
    return f"hess_dl3_dr1_obs_id_{obs_id:06d}.fits.gz"


def make_store(root, obs_ids=SUBSET):
    """A copy of DR1 with only ``obs_ids`` (files and index rows)."""
    dr1 = gammapy_data() / "hess-dl3-dr1"
    root = Path(root)
    (root / "data").mkdir(parents=True)
    for obs_id in obs_ids:
        shutil.copyfile(dr1 / "data" / _file_name(obs_id), root / "data" / _file_name(obs_id))
    for name in INDEX_FILES:
        with fits.open(dr1 / name) as hdul:
            rows = hdul[1].data[np.isin(hdul[1].data["OBS_ID"], obs_ids)]
            table = fits.BinTableHDU(rows, header=hdul[1].header)
            fits.HDUList([fits.PrimaryHDU(), table]).writeto(root / name)
    return root


def obs_file(store, obs_id=BAD):
    return store / "data" / _file_name(obs_id)


def edit_fits(path, fn):
    """Apply ``fn(hdul)`` to a copy of the FITS file in memory and write it back in place."""
    with fits.open(path) as hdul:
        hdul = fits.HDUList([hdu.copy() for hdu in hdul])
    fn(hdul)
    hdul.writeto(path, overwrite=True)


def replace_table(hdul, name, table):
    """Replace HDU ``name`` by ``table`` (astropy Table), keeping its other header keywords."""
    index = hdul.index_of(name)
    old = hdul[index].header
    new = fits.BinTableHDU(table, name=name)
    structural = ("XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "TFIELDS", "TTYPE",
                  "TFORM", "TUNIT", "TDIM", "EXTNAME")
    for card in old.cards:
        if not card.keyword.startswith(structural) and card.keyword not in new.header:
            if card.keyword not in ("COMMENT", "HISTORY", ""):
                new.header[card.keyword] = card.value
    hdul[index] = new


def edit_table(store, hdu, fn, obs_id=BAD):
    """Apply ``fn(table)`` (returns the new table) to HDU ``hdu`` of an observation's file."""
    def apply(hdul):
        replace_table(hdul, hdu, fn(Table.read(hdul[hdu])))

    edit_fits(obs_file(store, obs_id), apply)


def edit_header(store, hdu, obs_id=BAD, remove=(), **values):
    def apply(hdul):
        for key in remove:
            del hdul[hdu].header[key]
        for key, value in values.items():
            hdul[hdu].header[key] = value

    edit_fits(obs_file(store, obs_id), apply)


def set_card(store, hdu, key, text, obs_id=BAD):
    """Write the card ``KEY = text`` (raw FITS value text, e.g. ``NAN``, which astropy does
    not write) into the header of HDU ``hdu`` of the observation's file, in its bytes."""
    path = obs_file(store, obs_id)
    raw = bytearray(gzip.decompress(path.read_bytes()))
    with fits.open(io.BytesIO(bytes(raw))) as hdul:
        info = hdul.fileinfo(hdul.index_of(hdu))
    cards = range(info["hdrLoc"], info["datLoc"], 80)
    card = f"{key:<8}= {text:>20}".ljust(80).encode()
    for pos in cards:
        if raw[pos:pos + 8].decode().strip() == key:
            raw[pos:pos + 80] = card
            break
    else:
        end = next(pos for pos in cards if raw[pos:pos + 8] == b"END     ")
        assert end + 80 < info["datLoc"], "no room for a card in the header block"
        raw[end + 80:end + 160] = raw[end:end + 80]
        raw[end:end + 80] = card
    path.write_bytes(gzip.compress(bytes(raw)))


def edit_index(store, name, fn):
    """Apply ``fn(table)`` (returns the new table) to an index table of the store."""
    path = store / name
    table = Table.read(path, hdu=1)
    for col in table.itercols():
        if col.dtype.kind in "SU":
            table[col.name] = np.char.strip(np.asarray(col, dtype=str))
    table = fn(table)
    table.write(path, overwrite=True)


def hdu_row(table, hdu_type, obs_id=BAD):
    return int(np.flatnonzero((table["OBS_ID"] == obs_id) & (table["HDU_TYPE"] == hdu_type))[0])


def set_index_value(store, hdu_type, column, value):
    def apply(table):
        table[column] = table[column].astype("U64")
        table[column][hdu_row(table, hdu_type)] = value
        return table

    edit_index(store, "hdu-index.fits.gz", apply)


def uncompress(store, obs_id=BAD):
    """Store the observation's file uncompressed (``.fits``), the index pointing at it."""
    path = obs_file(store, obs_id)
    target = path.with_suffix("")
    target.write_bytes(gzip.decompress(path.read_bytes()))
    path.unlink()

    def apply(table):
        table["FILE_NAME"] = [n.removesuffix(".gz") if int(i) == obs_id else n
                              for i, n in zip(table["OBS_ID"], table["FILE_NAME"])]
        return table

    edit_index(store, "hdu-index.fits.gz", apply)
    return target


# --------------------------------------------------------------------------------------------
# running


def config(store, obs_ids=SUBSET, tmp_path=None, **overrides):
    cfg = msh_config(tmp_path, **overrides)
    cfg["datastore"] = str(store)
    cfg["observations"] = {"obs_ids": list(obs_ids)}
    return cfg


def run_store(store, obs_ids=SUBSET, **kwargs):
    return run(config(store, obs_ids), **kwargs)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """The undamaged store, and its results with all three and with the two good ones."""
    store = make_store(tmp_path_factory.mktemp("pristine") / "store")
    return {"store": store, "all": run_store(store), "good": run_store(store, GOOD)}


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "store")


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def same_maps(result, reference):
    """Same stack and maps, bit for bit."""
    for name in ("counts", "counts_off", "acceptance", "acceptance_off", "exposure"):
        assert np.array_equal(getattr(result.stack, name), getattr(reference.stack, name),
                              equal_nan=True), name
    for name in reference.maps:
        assert np.array_equal(result.maps[name], reference.maps[name], equal_nan=True), name
    assert result.summary["totals"] == reference.summary["totals"]


def assert_skipped(result, caplog, pristine, words, obs_id=BAD):
    """``obs_id`` skipped with a reason holding ``words``; the others exactly as alone."""
    s = result.summary
    assert s["obs_ids"] == [i for i in SUBSET if i != obs_id]
    assert [item["obs_id"] for item in s["skipped"]] == [obs_id]
    reason = s["skipped"][0]["reason"]
    for word in words:
        assert word in reason, (word, reason)
    assert "\n" not in reason and "Traceback" not in reason
    assert any(str(obs_id) in m and reason in m for m in warnings_of(caplog)), warnings_of(caplog)
    rows = {row["obs_id"]: row for row in result.observations}
    assert rows[obs_id]["status"] == "skipped" and rows[obs_id]["reason"] == reason
    assert all(rows[i]["status"] == "used" for i in s["obs_ids"])
    if obs_id == BAD:
        same_maps(result, pristine["good"])
    return reason


# --------------------------------------------------------------------------------------------
# skip: the observation cannot be used, the others are


def _truncate_gzip(store):
    path = obs_file(store)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _corrupt_gzip(store):
    path = obs_file(store)
    raw = bytearray(path.read_bytes())
    for k in range(1000, len(raw) - 100, 5000):
        raw[k] ^= 0xFF
    path.write_bytes(bytes(raw))


def _truncate_fits(fraction, align=False):
    def damage(store):
        path = uncompress(store)
        raw = path.read_bytes()
        n = int(len(raw) * fraction)
        if align:
            n -= n % 2880
        path.write_bytes(raw[:n])

    return damage


def _truncate_after_events(store):
    """Cut on a block boundary right after the EVENTS HDU: a file that ends early but cleanly."""
    path = uncompress(store)
    with fits.open(path) as hdul:
        info = hdul.fileinfo(hdul.index_of("EVENTS"))
        end = info["datLoc"] + info["datSpan"]
    path.write_bytes(path.read_bytes()[:end])


def _not_fits(store):
    obs_file(store).write_text("SIMPLE? no: this is a text file\n")


def _empty_file(store):
    obs_file(store).write_bytes(b"")


def _directory(store):
    path = obs_file(store)
    path.unlink()
    path.mkdir()


def _drop_column(hdu, column):
    def damage(store):
        edit_table(store, hdu, lambda t: (t.remove_column(column), t)[1])

    return damage


def _set_unit(hdu, column, unit):
    def damage(store):
        def apply(hdul):
            hdul[hdu].columns[column].unit = unit

        edit_fits(obs_file(store), apply)

    return damage


def _set_header(hdu, **values):
    return lambda store: edit_header(store, hdu, **values)


def _gti(fn):
    def damage(store):
        def apply(t):
            fn(t)
            return t

        edit_table(store, "GTI", apply)

    return damage


def _empty_gti(store):
    edit_table(store, "GTI", lambda t: t[:0])


def _aeff_axis_nan(store):
    def apply(t):
        t["THETA_LO"][0, 2] = np.nan
        return t

    edit_table(store, "AEFF", apply)


def _aeff_axis_decreasing(store):
    def apply(t):
        for col in ("ENERG_LO", "ENERG_HI"):
            t[col][0] = t[col][0][::-1]
        return t

    edit_table(store, "AEFF", apply)


def _events_energy_text(store):
    def apply(t):
        t["ENERGY"] = np.array(["%.3f TeV" % e for e in t["ENERGY"]])
        return t

    edit_table(store, "EVENTS", apply)


def _bkg_not_3d_nor_2d(store):
    def apply(t):
        for col in ("DETX_LO", "DETX_HI", "DETY_LO", "DETY_HI"):
            t.rename_column(col, col.replace("DET", "FOO"))
        return t

    edit_table(store, "BKG", apply)


def _pointing_far(store):
    edit_header(store, "EVENTS", RA_PNT=10.0, DEC_PNT=10.0)


def _missing_file(store):
    obs_file(store).unlink()


def _missing_hdu(store):
    set_index_value(store, "bkg", "HDU_NAME", "bkg_missing")


def _unknown_class(store):
    set_index_value(store, "bkg", "HDU_CLASS", "bkg_4d")


def _no_bkg_row(store):
    edit_index(store, "hdu-index.fits.gz",
               lambda t: t[~((t["OBS_ID"] == BAD) & (t["HDU_TYPE"] == "bkg"))])


def _not_in_hdu_index(store):
    edit_index(store, "hdu-index.fits.gz", lambda t: t[t["OBS_ID"] != BAD])


def _duplicate_hdu_row_first_broken(store):
    def apply(table):
        extra = table[hdu_row(table, "bkg"):hdu_row(table, "bkg") + 1]
        extra["FILE_NAME"] = ["elsewhere.fits.gz"]
        return vstack([extra, table])

    edit_index(store, "hdu-index.fits.gz", apply)


def _altaz_without_location(store):
    edit_header(store, "BKG", FOVALIGN="ALTAZ")
    # another CREATOR, or the H.E.S.S. DR1 quirk makes the background REVERSE_LON_RADEC
    edit_header(store, "EVENTS", remove=("GEOLAT",), CREATOR="test")


def _altaz_bad_timesys(store):
    edit_header(store, "BKG", FOVALIGN="ALTAZ")
    edit_header(store, "EVENTS", CREATOR="test", TIMESYS="martian")


def _flip_earlier(start):
    """``start`` with one bit of its float64 flipped: the lowest bit that moves it 256 s or
    more earlier."""
    bits = struct.unpack(">Q", struct.pack(">d", float(start)))[0]
    for k in range(52):
        value = struct.unpack(">d", struct.pack(">Q", bits ^ (1 << k)))[0]
        if start - value >= 256:
            return value
    raise AssertionError("no such bit")


def _gti_duplicated(store):
    edit_table(store, "GTI", lambda t: vstack([t, t]))


def _gti_shifted(store):
    def apply(t):
        t["START"] += 1e5
        t["STOP"] += 1e5
        return t

    edit_table(store, "GTI", apply)


def _gti_longer_than_events(store):
    """The GTI starts 5000 s early; the header keywords it could be checked with are gone."""
    edit_header(store, "EVENTS", remove=("ONTIME", "LIVETIME", "TSTART", "TSTOP"))

    def apply(t):
        t["START"] -= 5000
        return t

    edit_table(store, "GTI", apply)


def _fifo(store):
    path = obs_file(store)
    path.unlink()
    os.mkfifo(path)
    threading.Thread(target=_unblock_fifo, args=(path, 30.0), daemon=True).start()


def _unblock_fifo(path, after_s):
    """Open the FIFO for writing after ``after_s``: a reader blocked on it gets an empty file,
    so a reader that blocks fails the test instead of hanging it."""
    time.sleep(after_s)
    for _ in range(100):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # no reader (any more)
            return
        os.close(fd)
        time.sleep(0.1)


def _device(store):
    def apply(table):
        table["FILE_DIR"] = table["FILE_DIR"].astype("U64")
        row = hdu_row(table, "events")
        table["FILE_DIR"][row], table["FILE_NAME"][row] = "/dev", "zero"
        return table

    edit_index(store, "hdu-index.fits.gz", apply)


def _gzip_of_zeros(store):
    obs_file(store).write_bytes(gzip.compress(bytes(50 * 2**20), compresslevel=1))


def _gzip_tail_bomb(store):
    """A sound file followed, in its gzip stream, by 50 MB of zeros (50 kB compressed)."""
    path = obs_file(store)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw + bytes(50 * 2**20), compresslevel=1))


def _declares_a_terabyte(store):
    header = fits.Header([("SIMPLE", True), ("BITPIX", 8), ("NAXIS", 1),
                          ("NAXIS1", 10**12)])
    obs_file(store).write_bytes(gzip.compress(header.tostring().encode() + bytes(10 * 2880)))


def _events_ra_vector(store):
    def apply(t):
        t["RA"] = np.stack([t["RA"], t["RA"]], axis=1)
        return t

    edit_table(store, "EVENTS", apply)


SKIP_CASES = {
    "truncated-gzip": (_truncate_gzip, ["020137.fits.gz", "cannot be read as FITS",
                                        "Compressed file ended"]),
    "corrupt-gzip": (_corrupt_gzip, ["020137.fits.gz", "cannot be read as FITS"]),
    "truncated-fits-data": (_truncate_fits(0.5), ["020137.fits:", "truncated data"]),
    "truncated-fits-header": (_truncate_fits(0.0021), ["020137.fits:", "truncated header"]),
    "truncated-fits-block-boundary": (_truncate_fits(0.7, align=True),
                                      ["020137.fits:", "truncated"]),
    "truncated-fits-after-events": (_truncate_after_events, ["020137.fits:", "no HDU named 'gti'",
                                                             "has the tables EVENTS"]),
    "not-fits": (_not_fits, ["020137.fits.gz", "not a FITS file"]),
    "empty-file": (_empty_file, ["020137.fits.gz", "not a FITS file"]),
    "directory-not-file": (_directory, ["020137.fits.gz", "cannot be read"]),
    "missing-file": (_missing_file, ["020137.fits.gz", "file not found"]),
    "missing-hdu": (_missing_hdu, ["020137.fits.gz", "no HDU named 'bkg_missing'"]),
    "missing-events-energy": (_drop_column("EVENTS", "ENERGY"),
                              ["020137.fits.gz", "EVENTS has no column ENERGY"]),
    "missing-aeff-effarea": (_drop_column("AEFF", "EFFAREA"),
                             ["020137.fits.gz", "AEFF has no column EFFAREA"]),
    "missing-gti-stop": (_drop_column("GTI", "STOP"), ["020137.fits.gz", "GTI has no column STOP"]),
    "events-energy-in-deg": (_set_unit("EVENTS", "ENERGY", "deg"),
                             ["020137.fits.gz", "ENERGY", "'deg' cannot be converted to TeV"]),
    "aeff-in-tev": (_set_unit("AEFF", "EFFAREA", "TeV"),
                    ["020137.fits.gz", "EFFAREA", "'TeV' cannot be converted to m2"]),
    "bkg-in-m2": (_set_unit("BKG", "BKG", "m2"), ["020137.fits.gz", "BKG", "'m2' cannot be"]),
    "events-energy-as-text": (_events_energy_text, ["020137.fits.gz", "ENERGY",
                                                    "not a numeric column"]),
    "aeff-axis-nan": (_aeff_axis_nan, ["020137.fits.gz", "THETA_LO", "not finite"]),
    "aeff-axis-decreasing": (_aeff_axis_decreasing, ["020137.fits.gz", "ENERG_LO",
                                                     "increasing order"]),
    "bkg-neither-3d-nor-2d": (_bkg_not_3d_nor_2d, ["020137.fits.gz", "neither BKG_3D"]),
    "bkg-fovalign-unknown": (_set_header("BKG", FOVALIGN="SKY"), ["FOVALIGN='SKY'"]),
    "altaz-bkg-without-location": (_altaz_without_location,
                                   ["020137.fits.gz", "needs the observatory location"]),
    "altaz-bkg-unknown-timesys": (_altaz_bad_timesys,
                                  ["020137.fits.gz", "TIMESYS = 'martian' is not a time scale"]),
    "deadc-zero": (_set_header("EVENTS", DEADC=0.0), ["020137.fits.gz", "DEADC=0.0"]),
    "deadc-above-one": (_set_header("EVENTS", DEADC=1.5), ["020137.fits.gz", "DEADC=1.5"]),
    "deadc-text": (_set_header("EVENTS", DEADC="0.9"), ["DEADC = '0.9' is not a number"]),
    "no-deadc-livetime-ontime": (
        lambda s: edit_header(s, "EVENTS", remove=("DEADC", "LIVETIME", "ONTIME")),
        ["020137.fits.gz", "no DEADC", "live time of observation 20137 is unknown"]),
    "gti-empty": (_empty_gti, ["020137.fits.gz", "GTI of observation 20137 is empty"]),
    "gti-start-equals-stop": (_gti(lambda t: t.__setitem__("STOP", t["START"])),
                              ["020137.fits.gz", "sums to 0.0 s"]),
    "gti-stop-before-start": (_gti(lambda t: t.__setitem__("STOP", t["START"] - 10)),
                              ["020137.fits.gz", "stops before it starts"]),
    "gti-nan": (_gti(lambda t: t["STOP"].__setitem__(0, np.nan)),
                ["020137.fits.gz", "not a finite number"]),
    "pointing-text": (_set_header("EVENTS", RA_PNT="abc"), ["RA_PNT = 'abc' is not a number"]),
    "pointing-missing": (lambda s: edit_header(s, "EVENTS", remove=("DEC_PNT",)),
                         ["EVENTS header has no DEC_PNT"]),
    "pointing-not-on-sky": (_set_header("EVENTS", DEC_PNT=95.0), ["not a sky position"]),
    "lo-thres-text": (_set_header("AEFF", LO_THRES="low"), ["LO_THRES = 'low' is not a number"]),
    "pointing-far-outside-map": (_pointing_far, ["does not overlap the map"]),
    "unknown-hdu-class": (_unknown_class, ["observation 20137", "unknown bkg HDU class 'bkg_4d'"]),
    "not-in-hdu-index": (_not_in_hdu_index, ["observation 20137", "not in the HDU index"]),
    "duplicate-hdu-rows-first-broken": (_duplicate_hdu_row_first_broken,
                                        ["elsewhere.fits.gz", "file not found"]),
    # input consistency: GTIs against the EVENTS header and the events
    "gti-start-one-bit-flipped": (_gti(lambda t: t["START"].__setitem__(0, _flip_earlier(
        t["START"][0]))), ["020137.fits.gz", "disagree with its EVENTS header",
                           "but ONTIME ="]),
    "gti-tzero-huge": (lambda s: set_card(s, "GTI", "TZERO1", "-1E300"),
                       ["020137.fits.gz", "sum to 1e+300 s but ONTIME ="]),
    "gti-row-duplicated": (_gti_duplicated, ["020137.fits.gz",
                                             "GTI rows 0 and 1 overlap by",
                                             "(a duplicated row)"]),
    "gti-outside-tstart-tstop": (_gti_shifted, ["020137.fits.gz", "outside TSTART"]),
    "gti-longer-than-events": (_gti_longer_than_events,
                               ["020137.fits.gz", "more than 1.5 times", "events span"]),
    "livetime-header-mismatch": (_set_header("EVENTS", LIVETIME=3042.0),
                                 ["020137.fits.gz", "but LIVETIME = 3042 s"]),
    "ontime-not-finite": (lambda s: set_card(s, "EVENTS", "ONTIME", "NAN"),
                          ["020137.fits.gz", "ONTIME = nan is not a finite number"]),
    # an empty safe mask: nothing of the observation is used, so it is skipped
    "lo-thres-nan": (lambda s: set_card(s, "AEFF", "LO_THRES", "NAN"),
                     ["its safe mask is empty", "aeff-default", "LO_THRES = nan TeV"]),
    "lo-thres-inf": (lambda s: set_card(s, "AEFF", "LO_THRES", "1E999"),
                     ["its safe mask is empty", "LO_THRES = inf TeV"]),
    "hi-thres-nan": (lambda s: set_card(s, "AEFF", "HI_THRES", "NAN"),
                     ["its safe mask is empty", "HI_THRES = nan TeV"]),
    "lo-thres-above-the-map": (_set_header("AEFF", LO_THRES=50.0),
                               ["its safe mask is empty", "LO_THRES = 50 TeV",
                                "map energies 0.5 to 10 TeV"]),
    # unbounded inputs
    "fifo-not-file": (_fifo, ["020137.fits.gz", "cannot be read", "a FIFO"]),
    "device-not-file": (_device, ["/dev/zero", "a character device, not a regular file"]),
    "gzip-of-zeros": (_gzip_of_zeros, ["020137.fits.gz", "not a FITS file"]),
    "gzip-tail-bomb": (_gzip_tail_bomb, ["020137.fits.gz",
                                         "after the end of its FITS content"]),
    "fits-declares-a-terabyte": (_declares_a_terabyte,
                                 ["020137.fits.gz", f"its FITS headers declare {2880 * (1 + -(-10**12 // 2880))} bytes",
                                  "more than the 2 GiB a DL3 file can be"]),
    "events-column-vector": (_events_ra_vector, ["020137.fits.gz", "column RA holds 2 values"]),
}


@contextmanager
def time_limit(seconds):
    """Fail (instead of hanging) when the block takes longer than ``seconds``."""
    def expired(signum, frame):
        raise AssertionError(f"still running after {seconds} s (blocked?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("case", list(SKIP_CASES))
def test_damaged_observation_is_skipped(case, store, pristine, caplog):
    damage, words = SKIP_CASES[case]
    damage(store)
    caplog.set_level(logging.WARNING)
    t0 = time.monotonic()
    with time_limit(60):
        result = run_store(store)
    assert time.monotonic() - t0 < 20, "blocked"
    assert_skipped(result, caplog, pristine, words)


def test_skip_in_worker_processes(store, pristine, caplog):
    """The same skip from worker processes (``--jobs 2``): reason and maps as in-process."""
    _truncate_gzip(store)
    caplog.set_level(logging.WARNING)
    result = run_store(store, jobs=2)
    assert_skipped(result, caplog, pristine, ["020137.fits.gz", "cannot be read as FITS"])


def test_obs_id_not_in_index(store, pristine, caplog):
    caplog.set_level(logging.WARNING)
    result = run_store(store, (20136, 999999, 20151))
    assert result.summary["skipped"] == [{"obs_id": 999999,
                                          "reason": "not in the observation index"}]
    assert any("999999" in m and "not in the observation index" in m
               for m in warnings_of(caplog))
    same_maps(result, pristine["good"])


def test_duplicate_hdu_rows_pointing_elsewhere_warn_and_use_the_first(store, pristine, caplog):
    """As gammapy: the first matching row is used, with a warning naming both."""
    def apply(table):
        extra = table[hdu_row(table, "aeff"):hdu_row(table, "aeff") + 1]
        extra["FILE_NAME"] = ["elsewhere.fits.gz"]
        return vstack([table, extra])

    edit_index(store, "hdu-index.fits.gz", apply)
    caplog.set_level(logging.WARNING)
    result = run_store(store)
    assert result.summary["skipped"] == []
    same_maps(result, pristine["all"])
    assert any("20137" in m and "more than one 'aeff'" in m and "elsewhere.fits.gz" in m
               for m in warnings_of(caplog))


def test_identical_duplicate_hdu_rows_are_harmless(store, pristine, caplog):
    edit_index(store, "hdu-index.fits.gz",
               lambda t: vstack([t, t[t["OBS_ID"] == BAD]]))
    caplog.set_level(logging.WARNING)
    result = run_store(store)
    same_maps(result, pristine["all"])
    assert not [m for m in warnings_of(caplog) if "more than one" in m]


@pytest.mark.parametrize("selection", ["obs_ids", "cone"])
def test_duplicate_obs_index_rows_count_once(store, pristine, caplog, selection):
    """An observation listed twice in the obs-index is used once (gammapy would stack it
    twice when selecting by cone), with a warning."""
    edit_index(store, "obs-index.fits.gz", lambda t: vstack([t, t[t["OBS_ID"] == BAD]]))
    caplog.set_level(logging.WARNING)
    cfg = config(store)
    if selection == "cone":
        cfg["observations"] = msh_config()["observations"]
    result = run(cfg)
    assert result.summary["obs_ids"] == list(SUBSET)
    same_maps(result, pristine["all"])
    assert any("obs-index" in m and "20137" in m and "more than once" in m
               for m in warnings_of(caplog))


# --------------------------------------------------------------------------------------------
# used: damage that gammapy takes as data, with the same numbers


def test_events_outside_gti_are_kept(store, pristine):
    """ringbg, like gammapy's MapDatasetMaker, does not cut events on the GTI."""
    def apply(t):
        t["TIME"] += 1e7
        return t

    edit_table(store, "EVENTS", apply)
    result = run_store(store)
    assert result.summary["skipped"] == []
    same_maps(result, pristine["all"])


def test_observation_without_events(store, pristine, caplog):
    """No events at all: used (its exposure and background count), with a warning."""
    edit_table(store, "EVENTS", lambda t: t[:0])
    caplog.set_level(logging.WARNING)
    result = run_store(store)
    assert result.summary["obs_ids"] == list(SUBSET)
    assert result.summary["totals"]["counts"] == pristine["good"].summary["totals"]["counts"]
    assert np.array_equal(result.stack.exposure, pristine["all"].stack.exposure)
    assert np.array_equal(result.stack.acceptance, pristine["all"].stack.acceptance)
    assert result.stack.livetime_s == pristine["all"].stack.livetime_s
    assert any("20137" in m and "no events" in m for m in warnings_of(caplog))


def test_observation_with_no_events_in_the_map(store, pristine):
    """Events all far from the map: used, adds no counts but its exposure and background."""
    def apply(t):
        t["DEC"] = np.full(len(t), 30.0, dtype=t["DEC"].dtype)
        return t

    edit_table(store, "EVENTS", apply)
    result = run_store(store)
    assert result.summary["obs_ids"] == list(SUBSET)
    assert np.array_equal(result.stack.counts, pristine["good"].stack.counts)
    assert np.array_equal(result.stack.exposure, pristine["all"].stack.exposure)
    assert np.array_equal(result.stack.acceptance, pristine["all"].stack.acceptance)
    assert result.stack.livetime_s == pristine["all"].stack.livetime_s
    assert result.stack.counts_off.sum() < pristine["all"].stack.counts_off.sum()


def test_missing_deadc_uses_livetime_over_ontime(store, pristine, caplog):
    """GADF's definition DEADC = LIVETIME / ONTIME (gammapy 2.1 fails without DEADC)."""
    with fits.open(obs_file(store)) as hdul:
        deadc = hdul["EVENTS"].header["LIVETIME"] / hdul["EVENTS"].header["ONTIME"]
    edit_header(store, "EVENTS", remove=("DEADC",))
    caplog.set_level(logging.WARNING)
    result = run_store(store, (BAD,))
    alone = run_store(pristine["store"], (BAD,))
    assert result.stack.livetime_s / alone.stack.livetime_s == pytest.approx(
        deadc / fits.getheader(obs_file(pristine["store"]), "EVENTS")["DEADC"], rel=1e-12)
    assert any("no DEADC" in m for m in warnings_of(caplog))


def test_nan_effective_area_is_zero(store, pristine, caplog):
    """NaN effective area is zero exposure, as gammapy; warned about."""
    def apply(t):
        t["EFFAREA"][0, :, 30:50] = np.nan
        return t

    edit_table(store, "AEFF", apply)
    caplog.set_level(logging.WARNING)
    result = run_store(store)
    assert result.summary["obs_ids"] == list(SUBSET)
    # significance does not use the exposure; the flux does
    assert np.array_equal(result.maps["SIGNIFICANCE"], pristine["all"].maps["SIGNIFICANCE"],
                          equal_nan=True)
    assert result.stack.exposure.sum() < pristine["all"].stack.exposure.sum()
    assert np.all(np.isfinite(result.stack.exposure))
    assert any("020137" in m and "120 of the 576 effective-area values are not finite" in m
               for m in warnings_of(caplog))


def _gammapy_check(store, obs_ids=(BAD,)):
    from test_reference import _check

    return _check(config(store, obs_ids))


def test_nan_irf_values_as_gammapy(store, caplog):
    """NaN in AEFF and BKG: the same per-observation cubes and maps as gammapy 2.1."""
    def aeff(t):
        t["EFFAREA"][0, :, 30:50] = np.nan
        return t

    def bkg(t):
        t["BKG"][0, 8:10, 10:20, 10:20] = np.nan
        return t

    edit_table(store, "AEFF", aeff)
    edit_table(store, "BKG", bkg)
    caplog.set_level(logging.WARNING)
    _gammapy_check(store)
    assert any("200 of the 50000 background values are not finite, missing" in m
               for m in warnings_of(caplog))


def test_negative_background_as_gammapy(store):
    """Negative background values are valid values, clipped to float32 tiny (a zero rate),
    not missing data to fill from the neighbours: the cubes and maps of gammapy 2.1."""
    def bkg(t):
        t["BKG"][0, 8:10] = -np.abs(t["BKG"][0, 8:10])
        return t

    edit_table(store, "BKG", bkg)
    _gammapy_check(store)


def test_negative_background_is_used_with_a_warning(store, caplog):
    n_negative = []

    def bkg(t):
        t["BKG"][0, 8:10] = -np.abs(t["BKG"][0, 8:10])
        n_negative.append(int(np.sum(t["BKG"] < 0)))
        return t

    edit_table(store, "BKG", bkg)
    caplog.set_level(logging.WARNING)
    result = run_store(store)
    assert result.summary["obs_ids"] == list(SUBSET)
    assert n_negative[0] > 1000
    assert any("020137" in m and f"{n_negative[0]} of the 50000 background values are negative"
               in m for m in warnings_of(caplog)), warnings_of(caplog)


def test_events_with_impossible_coordinates_are_counted_and_dropped(store, tmp_path, caplog):
    """DEC = 200, non-finite RA, DEC or ENERGY, ENERGY <= 0: not used, counted in a warning
    naming the observation and the file; the maps are those without these rows."""
    bad_rows = {"DEC": (slice(0, 7), 200.0), "RA": (slice(10, 13), np.nan),
                "ENERGY": (slice(20, 22), np.inf)}

    def damage(t):
        for column, (rows, value) in bad_rows.items():
            t[column][rows] = value
        t["ENERGY"][30:34] = -1.0
        return t

    without = make_store(tmp_path / "without")
    edit_table(without, "EVENTS", lambda t: t[[k for k in range(len(t)) if not (
        k < 7 or 10 <= k < 13 or 20 <= k < 22 or 30 <= k < 34)]])
    edit_table(store, "EVENTS", damage)
    caplog.set_level(logging.WARNING)
    result = run_store(store)
    assert result.summary["obs_ids"] == list(SUBSET)
    same_maps(result, run_store(without))
    n_events = len(Table.read(obs_file(store), hdu="EVENTS"))
    assert any("020137.fits.gz" in m and "observation 20137" in m
               and f"16 of the {n_events} events" in m and "impossible" in m
               for m in warnings_of(caplog)), warnings_of(caplog)


def test_hi_thres_inf_is_no_upper_threshold(store, pristine):
    """HI_THRES = inf cuts nothing (DR1's 100 TeV is above the map): the same maps."""
    set_card(store, "AEFF", "HI_THRES", "1E999")
    same_maps(run_store(store), pristine["all"])


@pytest.mark.parametrize("compressed", [True, False])
def test_files_larger_than_a_dl3_file_are_refused(store, monkeypatch, compressed):
    """Beyond ringbg.files.MAX_FILE_BYTES (on disk or decompressed): not read, with the reason
    (the limit lowered here to below the size of the DR1 run)."""
    import ringbg.files as files

    path = uncompress(store) if not compressed else obs_file(store)
    size = len(gzip.decompress(path.read_bytes()) if compressed else path.read_bytes())
    monkeypatch.setattr(files, "MAX_FILE_BYTES", size - 2880)
    with pytest.raises(RunError) as info:
        run_store(store, (BAD,))
    message = str(info.value)
    assert f"020137.fits{'.gz' if compressed else ''}: " in message
    assert f"more than {size - 2880} bytes" in message and "DL3 file can be" in message
    monkeypatch.setattr(files, "MAX_FILE_BYTES", size)
    assert run_store(store, (BAD,)).summary["obs_ids"] == [BAD]


def test_broken_site_keywords_not_needed_for_radec_background(store, pristine, caplog):
    """The observatory location only matters for ALTAZ backgrounds: warned about, used."""
    edit_header(store, "EVENTS", GEOLAT="south")
    caplog.set_level(logging.WARNING)
    result = run_store(store)
    same_maps(result, pristine["all"])
    assert any("020137" in m and "GEOLAT = 'south' is not a number" in m
               and "not needed" in m for m in warnings_of(caplog))


# --------------------------------------------------------------------------------------------
# faults around the files


def test_read_ahead_bytes_not_served_after_the_file_changed(store):
    """A file read ahead (prefetch) then replaced: the new content is read."""
    path = obs_file(store)
    prefetch([path])
    time.sleep(0.2)
    path.write_bytes(b"replaced")
    with pytest.raises(DL3Error, match="not a FITS file"):
        read_fits_tables(path)


def test_read_ahead_of_a_skipped_observation_is_not_kept(store):
    """An observation skipped before its files are read leaves nothing read ahead for later."""

    for k in range(40):
        copy = store / "data" / f"copy{k}.fits.gz"
        shutil.copyfile(obs_file(store), copy)
        prefetch([copy])
    assert len(files._PREFETCH["pending"]) <= 16
    # the most recent ones are still read ahead
    assert str(store / "data" / "copy39.fits.gz") in files._PREFETCH["pending"]
    assert "EVENTS" in read_fits_tables(store / "data" / "copy39.fits.gz")
    files.discard_prefetched()
    assert not files._PREFETCH["pending"]


# --------------------------------------------------------------------------------------------
# stop: the run cannot go on


def _corrupt_obs_index(store):
    path = store / "obs-index.fits.gz"
    path.write_bytes(path.read_bytes()[:200])


def _hdu_index_without_file_name(store):
    edit_index(store, "hdu-index.fits.gz", lambda t: (t.remove_column("FILE_NAME"), t)[1])


def _obs_id_as_text(store):
    def apply(t):
        t["OBS_ID"] = t["OBS_ID"].astype(str)
        return t

    edit_index(store, "obs-index.fits.gz", apply)


def _no_hdu_index(store):
    (store / "hdu-index.fits.gz").unlink()


def _all_files_missing(store):
    for obs_id in SUBSET:
        obs_file(store, obs_id).unlink()


def _not_a_folder(store):
    shutil.rmtree(store)


STOP_CASES = {
    "store-not-a-folder": (_not_a_folder, ["datastore", "store does not exist"]),
    "no-hdu-index": (_no_hdu_index, ["store has no hdu-index"]),
    "corrupt-obs-index": (_corrupt_obs_index, ["obs-index.fits.gz: cannot be read"]),
    "hdu-index-missing-column": (_hdu_index_without_file_name,
                                 ["hdu-index.fits.gz: missing columns FILE_NAME"]),
    "obs-index-obs-id-text": (_obs_id_as_text, ["obs-index.fits.gz: column OBS_ID"]),
    "no-usable-observation": (_all_files_missing,
                              ["no observation could be used", "20136", "file not found"]),
}


@pytest.mark.parametrize("case", list(STOP_CASES))
def test_fatal_damage_stops_with_one_line(case, store):
    damage, words = STOP_CASES[case]
    damage(store)
    with pytest.raises((RunError, DataStoreError, ConfigError)) as info:
        run_store(store)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def _cli(tmp_path, cfg, *args):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return CliRunner().invoke(main, ["run", str(path), *args])


@pytest.mark.parametrize("case", ["corrupt-obs-index", "hdu-index-missing-column",
                                  "no-usable-observation", "store-not-a-folder"])
def test_cli_fatal_damage_exit_1_one_line(case, store, tmp_path):
    damage, words = STOP_CASES[case]
    damage(store)
    result = _cli(tmp_path, config(store, tmp_path=tmp_path), "-o", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # not an exception caught by CliRunner
    errors = [line for line in result.stderr.splitlines() if line.startswith("ringbg: error:")]
    assert len(errors) == 1, result.stderr
    assert all(word in errors[0] for word in words), errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))


def test_cli_skips_listed_in_summary_and_report(store, tmp_path):
    """Skipped observations: a warning line each, the reasons in summary.json and in the
    report's observation table."""
    import html

    _truncate_gzip(store)
    edit_header(store, "EVENTS", obs_id=20151, DEADC=0.0)
    out = tmp_path / "out"
    cfg = config(store, (20136, 20137, 20151, 999999), tmp_path=tmp_path)
    cfg["output"]["figures"] = True
    result = _cli(tmp_path, cfg, "-o", str(out))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["obs_ids"] == [20136]
    reasons = {item["obs_id"]: item["reason"] for item in summary["skipped"]}
    assert set(reasons) == {20137, 20151, 999999}
    assert "Compressed file ended" in reasons[20137] and "DEADC=0.0" in reasons[20151]
    warning_lines = [line for line in result.stderr.splitlines() if "WARNING" in line]
    for obs_id, reason in reasons.items():
        assert any(str(obs_id) in line and reason in line for line in warning_lines)
    report = (out / "report.html").read_text()
    table = report[report.index("<table", report.index("bservations")):]
    for obs_id, reason in reasons.items():
        assert html.escape(reason, quote=False) in table or html.escape(reason) in table
    assert "1 used, 3 skipped" in report


# --------------------------------------------------------------------------------------------
# interruptions


CONTRACT = ("stacked_onoff.fits", "maps.fits", "exclusion_mask.fits", "summary.json",
            "report.html", "significance.png")


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _check_complete(folder, obs_ids):
    names = {p.name for p in folder.iterdir()}
    assert set(CONTRACT) <= names, sorted(names)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["obs_ids"] == list(obs_ids)
    for name in ("stacked_onoff.fits", "maps.fits", "exclusion_mask.fits"):
        with fits.open(folder / name) as hdul:
            hdul.verify("exception")
            for hdu in hdul:
                hdu.data  # every byte there
    with fits.open(folder / "maps.fits") as hdul:
        assert hdul["SIGNIFICANCE"].data.shape == (150, 150)


@pytest.fixture(scope="module")
def interrupted_setup(tmp_path_factory):
    """A store, a config, and a previous complete OUTDIR."""
    root = tmp_path_factory.mktemp("kill")
    store = make_store(root / "store", GOOD)
    cfg = config(store, GOOD, tmp_path=root)
    cfg["output"]["figures"] = True
    path = root / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    previous = root / "previous"
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(previous), "-q"])
    assert result.exit_code == 0, result.output
    return root, path, previous


def _kill_when(proc, parent, name, condition, timeout=60.0):
    """Poll ``parent`` every millisecond; SIGKILL ``proc`` when ``condition`` holds."""
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        if condition(parent, name):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    proc.wait(timeout=60)
    return proc.returncode


def _tmp_folders(parent, name):
    return [p for p in parent.glob(f".{name}.tmp-*") if p.is_dir()]


def _in_tmp(filename):
    return lambda start: lambda parent, name: any(
        (p / filename).exists() for p in _tmp_folders(parent, name))


#: when to kill, and whether the kill must land before the run ends
KILL_POINTS = {
    "after 0.5 s (starting)": (lambda start: lambda parent, name: time.monotonic() - start > 0.5,
                               True),
    "after 2 s (reducing or writing)": (
        lambda start: lambda parent, name: time.monotonic() - start > 2.0, False),
    "temporary folder appears": (
        lambda start: lambda parent, name: bool(_tmp_folders(parent, name)), True),
    "maps.fits written": (_in_tmp("maps.fits"), True),
    "report written": (_in_tmp("report.html"), False),
    "summary written (renames next)": (_in_tmp("summary.json"), False),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_run_leaves_previous_or_complete_outdir(point, interrupted_setup, tmp_path):
    """SIGKILL at several points: OUTDIR is the previous results byte for byte, or the new
    ones complete; the next run removes what the killed one left and writes all."""
    _, config_path, previous = interrupted_setup
    out = tmp_path / "out"
    shutil.copytree(previous, out)
    before = _snapshot(out)
    command = [sys.executable, "-m", "ringbg.cli", "run", str(config_path), "-o", str(out),
               "--overwrite", "-q"]
    condition, must_kill = KILL_POINTS[point]
    start = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    code = _kill_when(proc, tmp_path, "out", condition(start))
    if must_kill:
        assert code == -signal.SIGKILL
    else:
        assert code in (0, -signal.SIGKILL)
    if out.exists() and _snapshot(out) != before:
        _check_complete(out, GOOD)  # the new results, whole
    elif not out.exists():
        # killed between the two renames: the previous results are whole beside it
        old = list(tmp_path.glob(".out.old-*"))
        assert len(old) == 1 and _snapshot(old[0]) == before
    else:
        assert code == -signal.SIGKILL
    # anything left is a hidden temporary folder, never OUTDIR or something like it
    for p in tmp_path.iterdir():
        assert p.name == "out" or p.name.startswith((".out.tmp-", ".out.old-")), p
    if code == -signal.SIGKILL and point != "after 0.5 s (starting)":
        leftovers = _tmp_folders(tmp_path, "out")
        if point in ("temporary folder appears", "maps.fits written"):
            assert leftovers
        # the next run removes them and writes the complete results
        rerun = subprocess.run(command, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        _check_complete(out, GOOD)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failure_between_the_renames_keeps_previous_outdir(tmp_path, pristine, monkeypatch):
    """The new results cannot be moved into place after the previous ones were moved aside:
    the previous ones are put back, and the failure is one line."""
    import ringbg.outdir as outdir
    from ringbg.errors import OutputError

    out = tmp_path / "out"
    result = pristine["good"]
    result.write(out, figures=False)
    before = _snapshot(out)
    real_rename = outdir.rename_noreplace

    def rename(src, dst):
        if Path(src).name.startswith(".out.tmp-") and Path(dst) == out:
            raise OSError(5, "disk gone")  # the new results cannot be moved into place
        return real_rename(src, dst)

    monkeypatch.setattr(outdir, "rename_noreplace", rename)
    with pytest.raises(OutputError) as info:
        result.write(out, overwrite=True, figures=False)
    assert "disk gone" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.undo()
    assert out.exists() and _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("point", ["temporary folder appears", "maps.fits written"])
def test_ctrl_c_keeps_previous_outdir_and_cleans_up(point, interrupted_setup, tmp_path):
    """SIGINT while writing: one 'interrupted' line, no traceback, OUTDIR unchanged, nothing
    left."""
    _, config_path, previous = interrupted_setup
    out = tmp_path / "out"
    shutil.copytree(previous, out)
    before = _snapshot(out)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ringbg.cli", "run", str(config_path), "-o", str(out),
         "--overwrite", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    condition = KILL_POINTS[point][0](time.monotonic())
    t0 = time.monotonic()
    while proc.poll() is None and not condition(tmp_path, "out") and time.monotonic() - t0 < 60:
        time.sleep(0.001)
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130  # interrupted, told apart from bad input (1)
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Aborted" not in stderr, stderr
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_damaged_cache_entry_is_a_miss(store, tmp_path):
    """A truncated cache entry (zipfile.BadZipFile) is reduced again, not a crash."""
    cache = tmp_path / "cache"
    first = run_store(store, GOOD, cache_dir=cache)
    entries = sorted(cache.glob("*.npz"))
    assert len(entries) == 2
    raw = entries[0].read_bytes()
    entries[0].write_bytes(raw[: len(raw) // 2])
    same_maps(run_store(store, GOOD, cache_dir=cache), first)


def test_index_changed_between_runs_is_read_again(store):
    """Index files changed on disk are read again by the next run in the same process."""
    assert run_store(store).summary["obs_ids"] == list(SUBSET)
    _not_in_hdu_index(store)
    assert run_store(store).summary["obs_ids"] == list(GOOD)


def test_no_background_irf_in_the_index(store, pristine, caplog):
    """An observation whose HDU index lists no background: with ``background.template: irf``
    it is skipped and named; with the default (auto) it takes the template built from its
    events, and the others keep their IRF template."""
    _no_bkg_row(store)
    caplog.set_level(logging.WARNING)
    cfg = config(store, SUBSET)
    result = run(dict(cfg, background={"template": "irf"}))
    assert_skipped(result, caplog, pristine, ["observation 20137", "no background IRF"])
    auto = run_store(store)
    templates = auto.summary["background_templates"]
    assert templates[str(BAD)] == "data"
    assert {v for k, v in templates.items() if k != str(BAD)} == {"irf"}
