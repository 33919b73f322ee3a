"""ringbg's FITS binary-table reader against astropy.io.fits on the same bytes.

Every table ``read_tables`` returns is compared with what astropy reads from the same bytes:
the set of tables, each header keyword (value and type), the column names, units and every
column's values. Real files (H.E.S.S. DR1, CTA 1DC) and files written here with astropy
(scaled columns, multi-dimensional columns, strings, odd header values) are used.
"""

import gzip
import io

import numpy as np
import pytest
from astropy.io import fits
from conftest import gammapy_data

from ringbg.fitsfile import Table, UnsupportedFITS, read_tables

SKIP_KEYS = ("COMMENT", "HISTORY", "", "CONTINUE")


def fits_bytes(*hdus):
    """The bytes of a FITS file with an empty primary HDU and ``hdus``."""
    buf = io.BytesIO()
    hdus = list(hdus)
    if not hdus or not isinstance(hdus[0], fits.PrimaryHDU):
        hdus.insert(0, fits.PrimaryHDU())
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()


def with_header(raw, index, edit):
    """``raw`` with the header of HDU ``index`` replaced by ``edit(header)``'s changes, the
    data bytes untouched (astropy would rescale data written from scaled columns)."""
    with fits.open(io.BytesIO(raw)) as hdul:
        info = hdul.fileinfo(index)
        header = hdul[index].header.copy()
    edit(header)
    return raw[:info["hdrLoc"]] + header.tostring().encode("ascii") + raw[info["datLoc"]:]


def table_hdu(name, **columns):
    """A BinTableHDU from ``{name: (format, array)}`` or ``(format, array, dim)``."""
    cols = []
    for col_name, spec in columns.items():
        fmt, array, *dim = spec
        cols.append(fits.Column(col_name, fmt, array=array, dim=dim[0] if dim else None))
    return fits.BinTableHDU.from_columns(cols, name=name)


def read_file(path):
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _as_text(values):
    values = np.asarray(values)
    if values.dtype.kind == "S":
        values = np.char.decode(values, "ascii")
    return np.char.rstrip(values.astype(str))


def assert_header_same(ours, theirs, where):
    for key, value in theirs.items():
        if key in SKIP_KEYS:
            continue
        assert key in ours, f"{where}: {key} missing"
        assert ours[key] == value and type(ours[key]) is type(value), (
            f"{where}: {key} = {ours[key]!r}, astropy {value!r}")


def assert_column_same(table, hdu, name):
    ours = table.column(name)
    theirs = hdu.data[name]
    where = f"{hdu.name}.{name}"
    if theirs.dtype.kind in "SU":
        assert np.array_equal(_as_text(ours), _as_text(theirs)), where
        return
    theirs = np.asarray(theirs)
    assert ours.shape == theirs.shape, (where, ours.shape, theirs.shape)
    assert ours.dtype.kind == theirs.dtype.kind, (where, ours.dtype, theirs.dtype)
    assert ours.dtype.isnative
    assert np.array_equal(ours, theirs, equal_nan=ours.dtype.kind in "fc"), where


def assert_same_as_astropy(raw):
    """read_tables(raw) against astropy: tables, headers, columns, units, values."""
    tables = read_tables(raw)
    with fits.open(io.BytesIO(raw)) as hdul:
        expected = {}
        for hdu in hdul[1:]:
            if isinstance(hdu, fits.BinTableHDU):
                expected.setdefault(hdu.name.upper(), hdu)
        assert sorted(tables) == sorted(expected)
        for name, hdu in expected.items():
            table = tables[name]
            assert table.name == hdu.name
            assert len(table) == len(hdu.data)
            assert_header_same(table.header, hdu.header, name)
            assert table.colnames == [c.name.upper() for c in hdu.columns]
            for col in hdu.columns:
                assert table.unit(col.name) == (col.unit or ""), (name, col.name)
                assert_column_same(table, hdu, col.name)
    return tables


# --------------------------------------------------------------------------------------------
# real files


def _real_files():
    data = gammapy_data()
    return {
        "hess-dr1-events-irfs": data / "hess-dl3-dr1/data/hess_dl3_dr1_obs_id_020136.fits.gz",
        "hess-dr1-obs-index": data / "hess-dl3-dr1/obs-index.fits.gz",
        "hess-dr1-hdu-index": data / "hess-dl3-dr1/hdu-index.fits.gz",
        "cta-1dc-irfs": data / "cta-1dc/caldb/data/cta/1dc/bcf/South_z20_50h/irf_file.fits",
        "cta-1dc-events": data / "cta-1dc/data/baseline/gps/gps_baseline_110380.fits",
    }


@pytest.mark.parametrize("name", ["hess-dr1-events-irfs", "hess-dr1-obs-index",
                                  "hess-dr1-hdu-index", "cta-1dc-irfs", "cta-1dc-events"])
def test_real_files_same_as_astropy(name):
    tables = assert_same_as_astropy(read_file(_real_files()[name]))
    assert tables


def test_dr1_file_has_the_dl3_tables():
    tables = read_tables(read_file(_real_files()["hess-dr1-events-irfs"]))
    assert {"EVENTS", "GTI", "AEFF", "BKG"} <= set(tables)
    events = tables["EVENTS"]
    assert events.header["OBS_ID"] == 20136
    assert len(events) == events.header["NAXIS2"] > 1000


def test_from_astropy_gives_the_same_columns():
    raw = read_file(_real_files()["hess-dr1-events-irfs"])
    ours = read_tables(raw)
    with fits.open(io.BytesIO(raw)) as hdul:
        for name in ("EVENTS", "AEFF", "BKG"):
            wrapped = Table.from_astropy(hdul[name])
            assert wrapped.name == name
            assert wrapped.colnames == ours[name].colnames
            assert len(wrapped) == len(ours[name])
            for col in wrapped.colnames:
                assert wrapped.unit(col) == ours[name].unit(col)
                assert np.array_equal(wrapped.column(col), ours[name].column(col))


# --------------------------------------------------------------------------------------------
# files written here


def test_numeric_formats_repeat_and_tdim():
    rng = np.random.default_rng(1)
    n = 7
    hdu = table_hdu(
        "NUMBERS",
        B=("B", rng.integers(0, 256, n).astype(np.uint8)),
        I=("I", rng.integers(-2**15, 2**15, n).astype(np.int16)),
        J=("J", rng.integers(-2**31, 2**31, n).astype(np.int32)),
        K=("K", rng.integers(-2**62, 2**62, n).astype(np.int64)),
        E=("E", rng.normal(size=n).astype(np.float32)),
        D=("D", rng.normal(size=n)),
        C=("C", (rng.normal(size=n) + 1j * rng.normal(size=n)).astype(np.complex64)),
        M=("M", rng.normal(size=n) + 1j * rng.normal(size=n)),
        VEC=("3D", rng.normal(size=(n, 3))),
        MAT=("6E", rng.normal(size=(n, 2, 3)).astype(np.float32), "(3,2)"),
        CUBE=("24J", rng.integers(-100, 100, (n, 4, 3, 2)).astype(np.int32), "(2,3,4)"),
        SPECIAL=("E", np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e38, 1e-40], np.float32)),
    )
    tables = assert_same_as_astropy(fits_bytes(hdu))
    table = tables["NUMBERS"]
    assert table.column("MAT").shape == (n, 2, 3)
    assert table.column("CUBE").shape == (n, 4, 3, 2)


def test_float_tscal_and_tzero_applied():
    stored = np.array([0, 1, -7, 300, -32768, 32767], dtype=np.int16)
    raw = fits_bytes(table_hdu("SCALED", A=("I", stored), B=("J", stored.astype(np.int32)),
                               C=("E", stored.astype(np.float32)), D=("I", stored)))

    def edit(header):
        header.insert("TFORM1", ("TSCAL1", 0.25), after=True)
        header.insert("TSCAL1", ("TZERO1", 10.5), after=True)
        header.insert("TFORM2", ("TSCAL2", -3.0), after=True)
        header.insert("TFORM3", ("TZERO3", 1e3), after=True)
        header.insert("TFORM4", ("TZERO4", 0.5), after=True)

    raw = with_header(raw, 1, edit)
    table = assert_same_as_astropy(raw)["SCALED"]
    np.testing.assert_array_equal(table.column("A"), stored * 0.25 + 10.5)
    np.testing.assert_array_equal(table.column("B"), stored * -3.0)
    np.testing.assert_array_equal(table.column("C"), stored + 1e3)
    np.testing.assert_array_equal(table.column("D"), stored + 0.5)


@pytest.mark.parametrize("fmt, dtype, tzero", [
    ("I", np.int16, 32768),          # unsigned 16-bit integers (FITS convention)
    ("J", np.int32, 2147483648),     # unsigned 32-bit integers (e.g. CTA 1DC EVENT_ID)
    ("B", np.uint8, -128),           # signed bytes
])
def test_unsigned_integer_convention(fmt, dtype, tzero):
    """TZERO = 2**(bits-1) stores unsigned integers: the values are stored + TZERO."""
    info = np.iinfo(dtype)
    stored = np.array([info.min, -1 if info.min < 0 else 1, 0, 5, info.max], dtype=dtype)
    raw = fits_bytes(table_hdu("U", X=(fmt, stored)))
    raw = with_header(raw, 1, lambda h: h.insert("TFORM1", ("TZERO1", tzero), after=True))
    table = assert_same_as_astropy(raw)["U"]
    expected = stored.astype(np.int64) + tzero
    assert np.array_equal(table.column("X"), expected)


def test_float32_column_with_tzero_keeps_precision():
    """TZERO on a float32 column: astropy computes the physical values in float64."""
    stored = np.array([0.5, 1.25, -3.75], dtype=np.float32)
    raw = fits_bytes(table_hdu("T", TIME=("E", stored)))
    raw = with_header(raw, 1, lambda h: h.insert("TFORM1", ("TZERO1", 1e8), after=True))
    table = read_tables(raw)["T"]
    np.testing.assert_array_equal(table.column("TIME"), stored.astype(np.float64) + 1e8)
    assert_same_as_astropy(raw)


def test_integer_tscal_does_not_wrap_around():
    """An integer TSCAL on an integer column: physical values beyond the stored type's range
    must not wrap around (astropy gives floats)."""
    stored = np.array([0, 10000, 20000, -30000], dtype=np.int16)
    raw = fits_bytes(table_hdu("S", X=("I", stored)))
    raw = with_header(raw, 1, lambda h: h.insert("TFORM1", ("TSCAL1", 2), after=True))
    table = read_tables(raw)["S"]
    np.testing.assert_array_equal(table.column("X"), stored.astype(np.int64) * 2)
    assert_same_as_astropy(raw)


def test_string_columns():
    names = np.array(["a", "bb", "a space", "", "exactly8"])
    raw = fits_bytes(table_hdu("TEXT", NAME=("8A", names), CODE=("1A", np.array(list("xyz-!"))),
                               N=("J", np.arange(5, dtype=np.int32))))
    table = assert_same_as_astropy(raw)["TEXT"]
    assert list(_as_text(table.column("NAME"))) == list(names)


def test_header_values_as_astropy():
    """Quoted strings ('' inside, trailing comment with a slash, leading blanks), logicals,
    integers, floats (also with a D exponent) read as astropy reads them."""
    raw = fits_bytes(table_hdu("H", X=("E", np.zeros(2, np.float32))))

    def edit(header):
        header["QUOTE"] = ("O'Hara said ''hi''", "a comment / with a slash and 'quotes'")
        header["SLASH"] = ("a/b", "c")
        header["LEAD"] = "   leading blanks"
        header["EMPTY"] = ""
        header["BLANKS"] = "      "
        header["TRUE"] = (True, "logical")
        header["FALSE"] = False
        header["NEG"] = (-7, "negative")
        header["BIG"] = 12345678901234567
        header["FLOAT"] = (1.5e-3, "float")
        header["HUGE"] = 1e300
        header["HYPH-EN"] = "x"
        header.append(fits.Card.fromstring("DEXP    =              1.25D-3 / D exponent"))
        header.append(fits.Card.fromstring("EXTRA   = 'no comment'"))

    raw = with_header(raw, 1, edit)
    table = assert_same_as_astropy(raw)["H"]
    assert table.header["QUOTE"] == "O'Hara said ''hi''"
    assert table.header["DEXP"] == pytest.approx(1.25e-3)
    assert table.header["LEAD"] == "   leading blanks"
    assert table.header["TRUE"] is True and table.header["FALSE"] is False


def test_long_string_header_value_as_astropy():
    """A string longer than one card is continued on CONTINUE cards (FITS 4.0 standard)."""
    raw = fits_bytes(table_hdu("L", X=("E", np.zeros(2, np.float32))))
    long_value = "a long creator string " * 6

    def edit(header):
        header["CREATOR"] = long_value

    raw = with_header(raw, 1, edit)
    assert b"CONTINUE" in raw
    table = read_tables(raw)["L"]
    assert table.header["CREATOR"] == long_value.rstrip()


@pytest.mark.parametrize("fmt, values", [
    ("L", np.array([True, False, True, True, False])),
    ("3X", np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0], [1, 0, 0]], dtype=bool)),
])
def test_logical_and_bit_columns_as_astropy(fmt, values):
    raw = fits_bytes(table_hdu("FLAGS", F=(fmt, values)))
    table = read_tables(raw)["FLAGS"]
    with fits.open(io.BytesIO(raw)) as hdul:
        theirs = np.asarray(hdul["FLAGS"].data["F"])
    assert np.array_equal(theirs, values)
    assert np.array_equal(table.column("F"), theirs)


def test_zero_row_table():
    raw = fits_bytes(table_hdu("EMPTY", X=("D", np.zeros(0)), S=("4A", np.array([], "U4"))))
    table = assert_same_as_astropy(raw)["EMPTY"]
    assert len(table) == 0
    assert table.column("X").shape == (0,)


def test_images_and_ascii_tables_are_walked_past():
    """A primary image with data, an image extension and an ASCII table before and between
    binary tables: only the binary tables are returned, all read right."""
    primary = fits.PrimaryHDU(np.arange(35, dtype=np.float64).reshape(5, 7))
    image = fits.ImageHDU(np.ones((3, 11, 13), dtype=np.int16), name="IMG")
    ascii_table = fits.TableHDU.from_columns(
        [fits.Column("A", "E15.7", array=np.array([1.0, 2.0]))], name="ASCII")
    first = table_hdu("FIRST", X=("D", np.linspace(0, 1, 9)))
    second = table_hdu("SECOND", Y=("2J", np.arange(6, dtype=np.int32).reshape(3, 2)))
    raw = fits_bytes(primary, image, first, ascii_table, second)
    tables = assert_same_as_astropy(raw)
    assert sorted(tables) == ["FIRST", "SECOND"]


def test_duplicate_extname_first_table_kept():
    raw = fits_bytes(table_hdu("T", X=("D", np.array([1.0, 2.0]))),
                     table_hdu("t", X=("D", np.array([3.0, 4.0, 5.0]))))
    tables = read_tables(raw)
    assert list(tables) == ["T"]
    with fits.open(io.BytesIO(raw)) as hdul:
        assert np.array_equal(tables["T"].column("X"), hdul["T"].data["X"])


def test_table_interface():
    raw = fits_bytes(table_hdu("EVENTS", Energy=("E", np.array([1, 2, 3], np.float32)),
                               ra=("D", np.array([0.5, 1.5, 2.5]))))

    def edit(header):
        header.set("TUNIT1", "TeV", after="TFORM1")
        header["EXTNAME"] = "Events"

    tables = read_tables(with_header(raw, 1, edit))
    assert list(tables) == ["EVENTS"]  # keyed by the upper-case EXTNAME
    table = tables["EVENTS"]
    assert table.name.upper() == "EVENTS"
    assert table.colnames == ["ENERGY", "RA"]
    assert len(table) == 3
    assert "energy" in table and "ENERGY" in table and "DEC" not in table
    assert table.unit("energy") == "TeV" and table.unit("RA") == ""
    assert np.array_equal(table.column("Energy"), [1, 2, 3])
    assert table.column("ra").dtype == np.float64 and table.column("ra").dtype.isnative


def test_trailing_zero_padding_is_ignored():
    raw = fits_bytes(table_hdu("T", X=("D", np.array([1.0, 2.0]))))
    assert np.array_equal(read_tables(raw + b"\0" * 2880)["T"].column("X"), [1.0, 2.0])


# --------------------------------------------------------------------------------------------
# left to astropy, and damaged files


def _vla_bytes():
    col = fits.Column("V", "PJ()", array=np.array([np.arange(3), np.arange(5)], dtype=object))
    return fits_bytes(fits.BinTableHDU.from_columns([col], name="VLA"),
                      table_hdu("AFTER", X=("D", np.array([1.0]))))


def test_variable_length_arrays_are_left_to_astropy():
    with pytest.raises(UnsupportedFITS):
        read_tables(_vla_bytes())


def test_unsupported_raised_only_once_the_file_is_checked():
    """A file that astropy would be handed must be sound: damage after an unsupported table
    is reported as damage."""
    raw = _vla_bytes()
    with pytest.raises(ValueError, match="truncated"):
        read_tables(raw[:-2880])


@pytest.mark.parametrize("damage, message", [
    (lambda raw: b"NOT A FITS FILE" + raw[15:], "not a FITS file"),
    (lambda raw: b"", "not a FITS file"),
    (lambda raw: raw[:2880 + 1000], "truncated header"),
    (lambda raw: raw[:-2880], "truncated data"),
    (lambda raw: raw.replace(b"SIMPLE  =                    T",
                             b"SIMPLE  =                    F"), "not a standard FITS file"),
])
def test_damaged_files_raise_value_error(damage, message):
    rows = np.arange(1000, dtype=np.float64)
    raw = fits_bytes(table_hdu("T", X=("D", rows)))
    with pytest.raises(ValueError, match=message):
        read_tables(damage(raw))
