"""Reading the input files: gzipped and plain FITS, the astropy fall-back, only regular
files, size limits and gzip bombs, the read-ahead thread."""

import gzip
import os
import threading
import time

import numpy as np
import pytest
from astropy.io import fits

from ringbg import files
from ringbg.errors import DL3Error
from ringbg.files import read_fits_tables
from test_dl3 import dr1_file


def test_read_fits_tables_gzipped_and_plain_equal(tmp_path):
    plain = tmp_path / "obs.fits"
    plain.write_bytes(gzip.decompress(dr1_file().read_bytes()))
    a, b = read_fits_tables(dr1_file()), read_fits_tables(plain)
    assert list(a) == list(b) and {"EVENTS", "GTI", "AEFF", "BKG"} <= set(a)
    for name in a:
        for col in a[name].colnames:
            assert np.array_equal(a[name].column(col), b[name].column(col), equal_nan=True)


def test_read_fits_tables_falls_back_to_astropy(tmp_path):
    """A file with a variable-length array column is read by astropy, all tables kept."""
    vla = fits.Column("V", "PJ()", array=np.array([np.arange(3), np.arange(5)], dtype=object))
    energy = np.array([0.7, 1.1, 9.0])
    hdul = fits.HDUList([
        fits.PrimaryHDU(),
        fits.BinTableHDU.from_columns([vla], name="ODD"),
        fits.BinTableHDU.from_columns([fits.Column("ENERGY", "D", array=energy, unit="TeV")],
                                      name="EVENTS"),
    ])
    path = tmp_path / "vla.fits"
    hdul.writeto(path)
    tables = read_fits_tables(path)
    assert set(tables) == {"ODD", "EVENTS"}
    assert np.array_equal(tables["EVENTS"].column("ENERGY"), energy)
    assert tables["EVENTS"].unit("ENERGY") == "TeV"


@pytest.mark.parametrize("content, message", [
    (None, "file not found"),
    (b"plain text, not FITS", "not a FITS file"),
    (b"\x1f\x8b\x08\x00garbage", "cannot be read as FITS"),
])
def test_read_fits_tables_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "broken.fits.gz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DL3Error, match=message) as info:
        read_fits_tables(path)
    assert str(path) in str(info.value)


def _raw_dr1():
    return gzip.decompress(dr1_file().read_bytes())


@pytest.mark.parametrize("kind", ["fifo", "folder", "device", "symlink-to-device"])
def test_only_regular_files_are_read(tmp_path, kind):
    """A FIFO (which would block the read for ever), a folder or a device: refused at once."""
    path = tmp_path / "obs.fits"
    expected = {"fifo": "a FIFO", "folder": "a folder", "device": "a character device",
                "symlink-to-device": "a character device"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "device":
        path = "/dev/zero"
    else:
        path.symlink_to("/dev/zero")
    done = []
    reader = threading.Thread(target=lambda: done.append(_error_of(path)), daemon=True)
    reader.start()
    reader.join(10)
    assert done, "read_fits_tables blocked"
    assert str(path) in done[0] and expected in done[0] and "not a regular file" in done[0]


def _error_of(path):
    try:
        read_fits_tables(path)
    except DL3Error as exc:
        return str(exc)
    return "read"


def test_prefetch_skips_what_is_not_a_regular_file(tmp_path):
    """Read ahead of a FIFO: not attempted, so the reading thread never blocks."""

    fifo = tmp_path / "fifo.fits"
    os.mkfifo(fifo)
    good = tmp_path / "good.fits.gz"
    good.write_bytes(dr1_file().read_bytes())
    files.prefetch([fifo, "/dev/zero", good])
    assert set(files._PREFETCH["pending"]) == {str(good)}
    assert "EVENTS" in read_fits_tables(good)
    with pytest.raises(DL3Error, match="a FIFO"):
        read_fits_tables(fifo)
    files.discard_prefetched()


def test_gzip_decompressed_to_the_end_of_its_fits_content(tmp_path):
    """Several gzip members, zero padding after the stream: the FITS bytes; zeros inside the
    stream beyond MAX_TRAILING_BYTES after the last HDU: refused without inflating them."""

    raw = _raw_dr1()
    members = tmp_path / "members.fits.gz"
    members.write_bytes(gzip.compress(raw[:5 * 2880]) + gzip.compress(raw[5 * 2880:]) + bytes(9))
    assert files._read_decompressed(members) == raw
    padded = tmp_path / "padded.fits.gz"
    padded.write_bytes(gzip.compress(raw + bytes(3 * 2880)))
    assert bytes(files._read_decompressed(padded)) == raw + bytes(3 * 2880)
    bomb = tmp_path / "bomb.fits.gz"
    bomb.write_bytes(gzip.compress(raw + bytes(200 * 2**20), compresslevel=1))
    t0 = time.perf_counter()
    with pytest.raises(DL3Error, match=f"more than {files.MAX_TRAILING_BYTES} bytes after the end "
                                       "of its FITS content"):
        read_fits_tables(bomb)
    assert time.perf_counter() - t0 < 5  # 200 MB are not inflated (about 1 s)


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-3], "Compressed file ended before the end-of-stream marker"),
    # zlib's message, or ISA-L's (the inflate ringbg uses when isal imports)
    (lambda raw: raw[:-8] + bytes(4) + raw[-4:], "incorrect data check|Incorrect checksum"),
    (lambda raw: raw + b"trailing", "Not a gzipped file"),
])
@pytest.mark.parametrize("inflate", ["isal", "zlib"])
def test_damaged_gzip_streams_still_report_why(tmp_path, monkeypatch, damage, message, inflate):
    """With ISA-L's inflate (the default) and with zlib's (the fallback)."""
    import zlib

    from isal import isal_zlib

    assert files._inflate_lib is isal_zlib  # isal is a dependency: its inflate is used
    if inflate == "zlib":
        monkeypatch.setattr(files, "_inflate_lib", zlib)
        assert bytes(files._read_decompressed(dr1_file())) == gzip.decompress(
            dr1_file().read_bytes())
    path = tmp_path / "bad.fits.gz"
    path.write_bytes(damage(dr1_file().read_bytes()))
    with pytest.raises(DL3Error, match=message):
        read_fits_tables(path)


def test_declared_size_beyond_the_limit_is_refused_before_inflating(tmp_path):
    header = fits.Header([("SIMPLE", True), ("BITPIX", 8), ("NAXIS", 1), ("NAXIS1", 10**12)])
    path = tmp_path / "huge.fits.gz"
    path.write_bytes(gzip.compress(header.tostring().encode() + bytes(2880)))
    with pytest.raises(DL3Error, match="its FITS headers declare .* bytes, more than the 2 GiB"):
        read_fits_tables(path)


