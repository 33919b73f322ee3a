"""Fuzzing the DL3 readers with damaged bytes of a real H.E.S.S. DR1 file.

Mutations of the decompressed file of observation 20137 (header values replaced by hostile
ones, cards blanked or turned into END, bytes flipped anywhere or in the headers, special
floats written into the tables, truncation), and of its gzip stream, are fed to
`ringbg.fitsfile.read_tables`, `ringbg.files.read_fits_tables` and `DataStore.load`.

The only exceptions allowed are ringbg's own: `ValueError` and `UnsupportedFITS` from
``read_tables`` (which ``read_fits_tables`` turns into `DL3Error` or hands to astropy), and
`DL3Error` from ``read_fits_tables`` and ``DataStore.load``. What they return must be usable:
every column readable, and an observation with finite, increasing IRF axes, values of the
axes' shape, a positive on-time and a dead-time correction in (0, 1].

Header-consistency mutations set the keywords the GTI, the thresholds and the column formats
are checked with (ONTIME, LIVETIME, DEADC, TSTART, TSTOP, TZERO/TSCAL/TUNIT/TFORM of the GTI and
event columns, LO_THRES/HI_THRES) to values that disagree, and flip bits of the GTI times: an
observation that loads must have the live time its header says (the original one when only the
GTI was touched), and its reduction must raise nothing (a ringbg bug would); it either gives
a safe mask with something in it or a reason to skip the observation.

Hypothesis draws only the mutation (a few numbers); with the default ``ci`` profile of
``conftest.py`` the examples are derandomized, so every run tries the same inputs, in about
30 s. For a longer campaign on new inputs: ``HYPOTHESIS_PROFILE=explore
RINGBG_FUZZ_SCALE=20`` (the numbers of examples are multiplied by the scale).
"""

import gzip
import io
import logging
import math
import os

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_robustness import BAD, INDEX_FILES, make_store, uncompress

from ringbg.datastore import DataStore, DataStoreError
from ringbg.errors import DL3Error
from ringbg.files import read_fits_tables
from ringbg.fitsfile import UnsupportedFITS, read_tables

SCALE = int(os.environ.get("RINGBG_FUZZ_SCALE", "1"))
FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

#: header values that break things: wrong types, out of range, huge, unknown formats...
HOSTILE = ["-1", "0", "1", "1E999", "NAN", "3.5", "99999999999999999999", "-99999999", "T",
           "''", "'abc'", "'", "'a''b'", "1.0D5", "1e-320", "'99999E'", "'1PE(10)'", "'0A'",
           "'2X'", "'1L'", "'3I'", "'1K'", "'2D'", "'C'", "'20E'", "'(5,5)'", "'(0)'",
           "'(-1,3)'", "'(50,50,21)'", "'deg'", "'TeV'", "'m2'", "'1/s'", "'MeV-1 s-1 sr-1'",
           "'s**-1'", "'EVENTS'", "'AEFF'", "'GTI'", "'BKG'", "'ALTAZ'", "'RADEC'", "'XYZ'",
           "'SASH FITS::EventListWriter'", "'0.2'", "'utc'"]
SPECIAL = [np.nan, np.inf, -np.inf, -1.0, 0.0, 1e38, -1e38, 1e-40, 1e30]


class Corpus(dict):
    """Fixture data, with a short repr (hypothesis prints its test's arguments)."""

    def __repr__(self):
        return f"<{', '.join(self)}>"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The good bytes, where their header cards and table data are, and a store using them."""
    root = tmp_path_factory.mktemp("fuzz")
    store = make_store(root / "store")
    target = uncompress(store)  # the index points at the uncompressed file
    raw = target.read_bytes()
    cards, header_bytes, data = [], [], []
    with fits.open(io.BytesIO(raw)) as hdul:
        for k, hdu in enumerate(hdul):
            info = hdul.fileinfo(k)
            header_bytes.append((info["hdrLoc"], info["datLoc"]))
            if hdu.name in ("EVENTS", "GTI", "AEFF", "BKG") and info["datSpan"]:
                data.append((info["datLoc"], hdu.header["NAXIS1"] * hdu.header["NAXIS2"]))
            for pos in range(info["hdrLoc"], info["datLoc"], 80):
                if raw[pos + 8:pos + 10] == b"= ":
                    cards.append(pos)
        hdus = {}
        columns = {}
        for k, hdu in enumerate(hdul):
            info = hdul.fileinfo(k)
            hdus[hdu.name] = (info["hdrLoc"], info["datLoc"])
            for n in range(1, hdu.header.get("TFIELDS", 0) + 1):
                columns[(hdu.name, hdu.header[f"TTYPE{n}"])] = n
        gti = hdul.fileinfo(hdul.index_of("GTI"))["datLoc"]
    header_positions = np.concatenate([np.arange(lo, hi) for lo, hi in header_bytes])
    with fits.open(io.BytesIO(raw)) as hdul:
        gti_table = hdul["GTI"].data
        livetime = float(np.sum(gti_table["STOP"] - gti_table["START"])
                         * hdul["EVENTS"].header["DEADC"])
    return Corpus(raw=raw, cards=cards, header_positions=header_positions, data=data,
                  store=store, target=target, root=root, hdus=hdus, columns=columns, gti=gti,
                  livetime=livetime)


def test_corpus(corpus):
    """What the mutations work on: all header cards, the data of the four HDUs read."""
    assert len(corpus["cards"]) > 250
    assert len(corpus["data"]) == 4
    assert len(corpus["raw"]) % 2880 == 0


#: one edit: positions are taken modulo the size of what they index
_INDEX = st.integers(0, 2**31)
_EDIT = st.one_of(
    st.tuples(st.just("card"), _INDEX,
              st.one_of(st.sampled_from(HOSTILE),
                        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=24))),
    st.tuples(st.just("card"), _INDEX, st.sampled_from(HOSTILE)),
    st.tuples(st.just("blank"), _INDEX,
              st.sampled_from(["", "END", "COMMENT damaged", "HIERARCH X = 1"])),
    st.tuples(st.just("byte"), _INDEX, st.integers(0, 255)),
    st.tuples(st.just("header-byte"), _INDEX, st.integers(32, 126)),
    st.tuples(st.just("value"), _INDEX, _INDEX, st.sampled_from(SPECIAL)),
)
MUTATION = st.tuples(st.lists(_EDIT, min_size=1, max_size=4),
                     st.one_of(st.none(), st.none(), st.floats(0, 1)))


def apply(corpus, spec):
    """The bytes of ``spec`` = (edits, truncation fraction) applied to the good file."""
    edits, truncate = spec
    raw = bytearray(corpus["raw"])
    cards, headers, data = corpus["cards"], corpus["header_positions"], corpus["data"]
    for edit in edits:
        kind = edit[0]
        if kind == "card":
            pos = cards[edit[1] % len(cards)]
            raw[pos + 10:pos + 80] = edit[2].encode("ascii").ljust(70)[:70]
        elif kind == "blank":
            pos = cards[edit[1] % len(cards)]
            raw[pos:pos + 80] = edit[2].encode("ascii").ljust(80)
        elif kind == "byte":
            raw[edit[1] % len(raw)] = edit[2]
        elif kind == "header-byte":
            raw[int(headers[edit[1] % len(headers)])] = edit[2]
        else:
            start, size = data[edit[1] % len(data)]
            pos = start + 4 * ((edit[2] % size) // 4)
            raw[pos:pos + 4] = np.array(edit[3], ">f4").tobytes()
    if truncate is not None:
        raw = raw[:int(truncate * len(raw))]
    return bytes(raw)


#: header keywords that the consistency checks use, by HDU (``COLUMN:KEY`` is the column's
#: TFORMn, TZEROn, TSCALn or TUNITn) and the values they are set to (FITS value text;
#: ``*2``, ``/2``, ``+1000`` and ``-1000`` act on the original value)
CONSISTENCY_KEYS = {
    "EVENTS": ["ONTIME", "LIVETIME", "DEADC", "TSTART", "TSTOP", "MJDREFI", "MJDREFF",
               "TIME:TFORM", "TIME:TZERO", "TIME:TSCAL", "TIME:TUNIT", "RA:TFORM",
               "DEC:TFORM", "ENERGY:TFORM", "ENERGY:TZERO", "DEC:TSCAL"],
    "GTI": ["START:TFORM", "STOP:TFORM", "START:TZERO", "STOP:TZERO", "START:TSCAL",
            "START:TUNIT", "STOP:TUNIT", "TSTART", "MJDREFI"],
    "AEFF": ["LO_THRES", "HI_THRES", "EFFAREA:TFORM", "ENERG_LO:TZERO"],
}
NUMBERS = ["*2", "/2", "+1000", "-1000", "NAN", "1E999", "-1E999", "0", "-1", "1E300",
           "-1E300", "1E-300", "'abc'", "T"]
FORMATS = ["'1E'", "'1D'", "'1J'", "'1K'", "'2D'", "'1I'", "'1B'", "'8A'", "'1L'", "'1X'",
           "'0D'", "'96E'", "'576D'", "'575E'"]
UNITS = ["'ms'", "'d'", "'h'", "'TeV'", "'s'", "'deg'", "'yr'", "''"]
_KEY = st.sampled_from([(hdu, key) for hdu, keys in CONSISTENCY_KEYS.items() for key in keys])
_CONSISTENCY_EDIT = st.one_of(
    st.tuples(st.just("set"), _KEY, st.sampled_from(NUMBERS + FORMATS + UNITS)),
    st.tuples(st.just("gti-bit"), st.sampled_from([0, 8]), st.integers(0, 63)),
)
CONSISTENCY = st.lists(_CONSISTENCY_EDIT, min_size=1, max_size=3)


def _card_key(corpus, hdu, key):
    if ":" not in key:
        return key
    column, prefix = key.split(":")
    return f"{prefix}{corpus['columns'][(hdu, column)]}"


def _set_card(corpus, raw, hdu, key, text):
    """Set ``key = text`` in HDU ``hdu``'s header (in place, or before END if absent)."""
    start, end = corpus["hdus"][hdu]
    positions = range(start, end, 80)
    for pos in positions:
        if raw[pos:pos + 8].decode("ascii", "replace").strip() == key:
            break
    else:
        pos = next((p for p in positions if raw[p:p + 8] == b"END     "), None)
        if pos is None or pos + 80 >= end:
            return  # no room: the edit is left out
        raw[pos + 80:pos + 160] = raw[pos:pos + 80]
    old = raw[pos + 10:pos + 80].decode("ascii", "replace").split("/")[0].strip()
    if text[0] in "*/+-" and text[1:].replace("0", "").isdigit() or text in ("*2", "/2"):
        try:
            value = float(old.replace("D", "E"))
        except ValueError:
            value = 1.0
        factor = float(text[1:])
        value = {"*": value * factor, "/": value / factor, "+": value + factor,
                 "-": value - factor}[text[0]]
        text = repr(value)
    raw[pos:pos + 80] = f"{key:<8}= {text:>20}".ljust(80).encode("ascii")


def apply_consistency(corpus, edits):
    """The good file with the header-consistency ``edits`` applied."""
    raw = bytearray(corpus["raw"])
    for edit in edits:
        if edit[0] == "set":
            (hdu, key), text = edit[1], edit[2]
            _set_card(corpus, raw, hdu, _card_key(corpus, hdu, key), text)
        else:  # a bit of the GTI's START (offset 0) or STOP (offset 8) of row 0
            pos = corpus["gti"] + edit[1]
            value = int.from_bytes(raw[pos:pos + 8], "big") ^ (1 << edit[2])
            raw[pos:pos + 8] = value.to_bytes(8, "big")
    return bytes(raw)


@pytest.fixture(scope="module")
def reduction(corpus):
    """A config and geometry around the corpus observation, with every safe-mask method."""
    from conftest import msh_config

    from ringbg.config import load_config
    from ringbg.pipeline import make_geom

    cfg = msh_config()
    cfg["datastore"] = str(corpus["store"])
    cfg["observations"] = {"obs_ids": [BAD]}
    cfg["geom"].update(width="2 deg", binsize="0.05 deg", offset_max="1 deg")
    cfg["geom"]["energy"]["nbins"] = 5
    cfg["safe_mask"] = {"methods": ["aeff-default", "offset-max", "aeff-max", "bkg-peak"]}
    cfg["exclusion"] = {}
    cfg["ring"] = {"r_in": "0.3 deg", "width": "0.2 deg"}
    config = load_config(cfg)
    return Corpus(config=config, geom=make_geom(config))


def _reduce(reduction):
    """Reduce the corpus observation as a worker does: any exception is a ringbg bug."""
    from ringbg.pipeline import make_task, reduce_task

    obs_id, reduced, reason = reduce_task(make_task(reduction["config"], reduction["geom"], BAD))
    assert obs_id == BAD and (reduced is None) != (reason is None)
    if reduced is not None:
        assert reduced.mask_safe.any()
        assert math.isfinite(reduced.livetime_s) and reduced.livetime_s > 0
    else:
        assert "\n" not in reason


def _load(corpus):
    store = DataStore.from_dir(corpus["store"])
    try:
        return store.load(BAD)
    except DL3Error as exc:
        assert "\n" not in str(exc)
        return None


@settings(FUZZ, max_examples=300 * SCALE)
@given(edits=CONSISTENCY)
def test_header_consistency(corpus, reduction, edits):
    """GTI, threshold and column-format damage: a loaded observation has the live time its
    header gives (the original one when only the GTI was damaged); it reduces without error."""
    corpus["target"].write_bytes(apply_consistency(corpus, edits))
    logging.disable(logging.WARNING)
    try:
        obs = _load(corpus)
        if obs is None:
            return
        _check_observation(obs)
        header = fits.getheader(io.BytesIO(apply_consistency(corpus, edits)), "EVENTS")
        livetime = header.get("LIVETIME")
        if isinstance(livetime, float) and math.isfinite(livetime):
            assert obs.livetime_s == pytest.approx(livetime, rel=2e-3, abs=2.0)
        if all(e[0] == "gti-bit" or e[1][0] == "GTI" for e in edits):
            assert obs.livetime_s == pytest.approx(corpus["livetime"], rel=2e-3, abs=2.0)
        _reduce(reduction)
    finally:
        logging.disable(logging.NOTSET)


@settings(FUZZ, max_examples=150 * SCALE)
@given(spec=MUTATION)
def test_damaged_observation_reduces_or_is_skipped(corpus, reduction, spec):
    """Any damage: the worker's reduction gives a result or a reason, never an exception."""
    corpus["target"].write_bytes(apply(corpus, spec))
    logging.disable(logging.WARNING)
    try:
        if _load(corpus) is not None:
            _reduce(reduction)
    finally:
        logging.disable(logging.NOTSET)


def _check_tables(tables):
    assert isinstance(tables, dict)
    for name, table in tables.items():
        assert name == name.upper()
        for column in table.colnames:
            values = table.column(column)
            assert len(values) == len(table)


@settings(FUZZ, max_examples=700 * SCALE)
@given(spec=MUTATION)
def test_read_tables(corpus, spec):
    """read_tables: tables whose columns all read, or ValueError (which read_fits_tables
    turns into DL3Error with the same words) or UnsupportedFITS (left to astropy)."""
    raw = apply(corpus, spec)
    path = corpus["root"] / "fuzz-tables.fits"
    try:
        tables = read_tables(raw)
    except ValueError as exc:
        path.write_bytes(raw)
        with pytest.raises(DL3Error) as info:
            read_fits_tables(path)
        assert str(exc) in str(info.value) and str(path) in str(info.value)
        return
    except UnsupportedFITS:
        path.write_bytes(raw)
        try:
            _check_tables(read_fits_tables(path))
        except DL3Error:
            pass
        return
    _check_tables(tables)


@settings(FUZZ, max_examples=300 * SCALE)
@given(spec=MUTATION, compress=st.booleans())
def test_read_fits_tables(corpus, spec, compress):
    raw = apply(corpus, spec)
    path = corpus["root"] / ("fuzz.fits.gz" if compress else "fuzz.fits")
    path.write_bytes(gzip.compress(raw, compresslevel=1) if compress else raw)
    try:
        tables = read_fits_tables(path)
    except DL3Error as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    _check_tables(tables)


def _check_observation(obs):
    assert obs.obs_id == BAD
    assert math.isfinite(obs.ontime_s) and obs.ontime_s > 0
    assert 0 < obs.deadc <= 1
    assert math.isfinite(obs.pointing_ra_deg) and abs(obs.pointing_dec_deg) <= 90
    assert len(obs.ra_deg) == len(obs.dec_deg) == len(obs.energy_tev)
    axes = [obs.aeff.energy, obs.aeff.offset, obs.bkg.energy, *obs.bkg.spatial]
    for axis in axes:
        assert np.all(np.isfinite(axis.edges)) and np.all(np.diff(axis.edges) > 0)
        assert np.all(np.diff(axis.nodes) > 0)
    assert obs.aeff.values_m2.shape == (len(obs.aeff.energy.nodes), len(obs.aeff.offset.nodes))
    assert obs.bkg.values.shape == (len(obs.bkg.energy.nodes),
                                    *(len(a.nodes) for a in obs.bkg.spatial))
    for threshold in (obs.aeff.lo_thres_tev, obs.aeff.hi_thres_tev):
        assert threshold is None or isinstance(threshold, float)


@settings(FUZZ, max_examples=600 * SCALE)
@given(spec=MUTATION)
def test_datastore_load(corpus, spec):
    corpus["target"].write_bytes(apply(corpus, spec))
    store = DataStore.from_dir(corpus["store"])
    logging.disable(logging.WARNING)
    try:
        obs = store.load(BAD)
    except DL3Error as exc:
        assert "\n" not in str(exc)
        return
    finally:
        logging.disable(logging.NOTSET)
    _check_observation(obs)


def test_datastore_load_unchanged_file(corpus):
    """The harness itself: the good bytes load, as the original file does."""
    corpus["target"].write_bytes(corpus["raw"])
    obs = DataStore.from_dir(corpus["store"]).load(BAD)
    _check_observation(obs)
    assert obs.livetime_s == corpus["livetime"]
    assert len(obs.energy_tev) == 5693
    with fits.open(corpus["target"]) as hdul:
        assert np.array_equal(obs.energy_tev, hdul["EVENTS"].data["ENERGY"])


@pytest.fixture(scope="module")
def gz_bytes(corpus):
    return Corpus(raw=gzip.compress(corpus["raw"], compresslevel=6, mtime=0))


@settings(FUZZ, max_examples=150 * SCALE)
@given(flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=3),
       keep=st.one_of(st.none(), st.floats(0, 1)))
def test_damaged_gzip_stream(corpus, gz_bytes, flips, keep):
    raw = bytearray(gz_bytes["raw"])
    for where, xor in flips:
        raw[min(int(where * len(raw)), len(raw) - 1)] ^= xor
    if keep is not None:
        raw = raw[:int(keep * len(raw))]
    path = corpus["root"] / "fuzz-stream.fits.gz"
    path.write_bytes(bytes(raw))
    try:
        tables = read_fits_tables(path)
    except DL3Error as exc:
        assert str(path) in str(exc)
        return
    _check_tables(tables)


@pytest.fixture(scope="module")
def index_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-index")
    store = make_store(root / "store")
    return Corpus(store=store, raw={name: gzip.decompress((store / name).read_bytes())
                                    for name in INDEX_FILES})


@settings(FUZZ, max_examples=150 * SCALE)
@given(which=st.sampled_from(INDEX_FILES),
       edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=4),
       keep=st.one_of(st.none(), st.none(), st.floats(0, 1)))
def test_damaged_index_tables(index_corpus, which, edits, keep):
    """A damaged index: `DataStoreError`, or a store whose observations load or give
    `DL3Error`."""
    store_dir = index_corpus["store"]
    raw = bytearray(index_corpus["raw"][which])
    for where, byte in edits:
        raw[min(int(where * len(raw)), len(raw) - 1)] = byte
    if keep is not None:
        raw = raw[:int(keep * len(raw))]
    for name in INDEX_FILES:
        data = bytes(raw) if name == which else index_corpus["raw"][name]
        (store_dir / name).write_bytes(gzip.compress(data, compresslevel=1))
    logging.disable(logging.WARNING)
    try:
        store = DataStore.from_dir(store_dir)
    except DataStoreError as exc:
        assert "index" in str(exc) and "\n" not in str(exc)
        return
    finally:
        logging.disable(logging.NOTSET)
    ids = store.select()
    assert len(ids) == len(set(ids))
    logging.disable(logging.WARNING)
    try:
        for obs_id in ids[:3]:
            try:
                store.load(obs_id)
            except DL3Error:
                pass
    finally:
        logging.disable(logging.NOTSET)
