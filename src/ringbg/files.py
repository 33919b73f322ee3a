"""Reading the input files: the bytes of a FITS file (gzipped or not), within size limits,
optionally read ahead in a background thread, parsed into tables (`ringbg.fitsfile`, astropy
for what it leaves aside).

Only regular files are read; a file on disk or inflated beyond `MAX_FILE_BYTES`, or a gzip
stream that goes on long after its FITS content, is refused with a `DL3Error` naming it.
"""

import contextlib
import io
import os
import signal
import stat
import warnings
import zlib

from astropy.io import fits

try:  # ISA-L's inflate: the same streams and checks as zlib's, in about half the time
    from isal import isal_zlib as _inflate_lib
except ImportError:  # pragma: no cover (isal is a dependency; zlib if its import fails)
    _inflate_lib = zlib

from .errors import DL3Error, one_line
from .fitsfile import Table, UnsupportedFITS, fits_extent, read_tables

__all__ = ["read_fits_tables", "prefetch", "discard_prefetched", "MAX_FILE_BYTES"]


#: no DL3 file is larger than this, on disk or decompressed: a H.E.S.S. DR1 run is 1 MB, a
#: CTA 1DC run 4 MB, a long run of a large array with loose cuts some 100 MB
MAX_FILE_BYTES = 2 * 2**30
#: bytes a gzip stream may hold beyond the end of its FITS content (trailing padding)
MAX_TRAILING_BYTES = 2**20
_CHUNK = 16 * 2**20
_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _size_text(n_bytes):
    return f"{n_bytes / 2**30:g} GiB" if n_bytes >= 2**30 else f"{n_bytes} bytes"


def _file_kind(mode):
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "not a regular file")


def _read_raw(path, limit):
    """The bytes of a regular file; `DL3Error` for anything else (never blocks on a FIFO)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise DL3Error(f"{path}: file not found") from exc
    except OSError as exc:
        raise DL3Error(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except ValueError as exc:  # a NUL character in the name
        raise DL3Error(f"{str(path)!r}: not a valid file name ({exc})") from exc
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise DL3Error(f"{path}: cannot be read: it is {_file_kind(mode)}, not a regular file")
    with os.fdopen(fd, "rb", buffering=0) as f:
        chunks, total = [], 0
        try:
            while chunk := f.read(min(_CHUNK, limit + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise DL3Error(f"{path}: more than {_size_text(limit)}, larger than a "
                                   "DL3 file can be (ringbg.dl3.MAX_FILE_BYTES)")
        except OSError as exc:
            raise DL3Error(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return b"".join(chunks)


class _Gunzip:
    """A gzip stream decompressed on demand into ``out``, never beyond ``limit`` bytes."""

    def __init__(self, raw, path, limit):
        self.out = bytearray()
        self.path, self.limit = path, limit
        self._member(raw)

    def _member(self, data):
        # gzip wrapper: CRC and size checked
        self._inflate = _inflate_lib.decompressobj(wbits=31)
        self._input = data

    def _fail(self, reason):
        return DL3Error(f"{self.path}: cannot be read as FITS ({reason})")

    def ended(self):
        """True when the whole stream is decompressed."""
        return self._inflate.eof and not self._inflate.unused_data.lstrip(b"\x00")

    def need(self, n):
        """Decompress until ``out`` holds ``n`` bytes; False when the stream ends first."""
        while len(self.out) < n:
            if self._inflate.eof:
                rest = self._inflate.unused_data.lstrip(b"\x00")  # as gzip.decompress
                if not rest:
                    return False
                if rest[:2] != b"\x1f\x8b":
                    raise self._fail(f"Not a gzipped file ({rest[:2]!r})")
                self._member(rest)
            room = self.limit + 1 - len(self.out)
            try:
                chunk = self._inflate.decompress(self._input, min(_CHUNK, room))
            except (zlib.error, _inflate_lib.error) as exc:
                raise self._fail(one_line(exc)) from exc
            self._input = self._inflate.unconsumed_tail
            self.out += chunk
            if len(self.out) > self.limit:
                raise DL3Error(f"{self.path}: decompresses to more than "
                               f"{_size_text(self.limit)}, larger than a DL3 file can be "
                               "(ringbg.dl3.MAX_FILE_BYTES)")
            if not chunk and not self._input and not self._inflate.eof:
                raise self._fail("Compressed file ended before the end-of-stream marker was "
                                 "reached")
        return True


def _gunzip_fits(raw, path, limit=None):
    """Decompress a gzipped FITS file, no further than its FITS content (bounded).

    The headers are walked as the bytes arrive (`ringbg.fitsfile.fits_extent`): a file whose
    headers declare more than ``limit`` bytes, or whose stream goes on for more than
    `MAX_TRAILING_BYTES` after its last HDU (a gzip bomb), raises `DL3Error`.
    """
    limit = MAX_FILE_BYTES if limit is None else limit
    stream = _Gunzip(raw, path, limit)
    try:
        end = fits_extent(stream.out, stream.need, limit)
    except ValueError as exc:
        raise DL3Error(f"{path}: {exc}, more than the {_size_text(limit)} a DL3 file can "
                       "be (ringbg.dl3.MAX_FILE_BYTES)") from None
    if end > 0 and not stream.ended():
        # past the last HDU only padding may follow: read to the end of the stream (its
        # checksum is verified there), a little further at most
        stream.need(max(end, len(stream.out)) + MAX_TRAILING_BYTES + 1)
        if not stream.ended():
            raise DL3Error(f"{path}: its gzip stream goes on for more than "
                           f"{MAX_TRAILING_BYTES} bytes after the end of its FITS content "
                           "(damaged, or not a DL3 file)")
    return stream.out  # a bytearray: no copy (read_tables makes its tables read-only)


def _read_decompressed(path):
    """The FITS bytes of a file, gunzipped if need be; `DL3Error` naming the file."""
    raw = _read_raw(path, MAX_FILE_BYTES)
    return _gunzip_fits(raw, path) if raw[:2] == b"\x1f\x8b" else raw


_PREFETCH = {"pool": None, "pending": {}}
#: at most this many files read ahead and not yet taken (the oldest are dropped)
_PREFETCH_MAX = 16


def _file_signature(path):
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def prefetch(paths):
    """Start reading and decompressing files in a background thread.

    File reading and zlib release the GIL, so the next observation's input arrives while the
    current one is computed. `read_fits_tables` takes the bytes when it gets to the file, if
    the file has not changed since (size, modification time, inode); files read ahead and
    never taken (an observation skipped before its files are read) are dropped, oldest
    first, so they neither pile up nor get served later. Only regular files are read ahead,
    with the same limits as `read_fits_tables`.
    """
    from concurrent.futures import ThreadPoolExecutor

    if _PREFETCH["pool"] is None:
        _PREFETCH["pool"] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ringbg-io")
    pending = _PREFETCH["pending"]
    for path in paths:
        key = str(path)
        if key in pending:
            continue
        try:
            if not stat.S_ISREG(os.stat(key).st_mode):
                continue  # read_fits_tables reports it
            signature = _file_signature(key)
        except (OSError, ValueError):  # ValueError: a NUL in the name
            continue  # read_fits_tables reports it
        while len(pending) >= _PREFETCH_MAX:
            pending.pop(next(iter(pending)))[0].cancel()
        with _no_interrupt():
            pending[key] = (_PREFETCH["pool"].submit(_read_decompressed, key), signature)


@contextlib.contextmanager
def _no_interrupt():
    """Ctrl-C held back for a moment (delivered after): a KeyboardInterrupt inside
    ``ThreadPoolExecutor.submit``, between starting its thread and registering it for the
    interpreter's exit, leaves a thread that nothing stops, and the process hangs at exit.
    The thread started here inherits the blocked signal, so Ctrl-C goes to the main thread."""
    block = getattr(signal, "pthread_sigmask", None)
    if block is None:
        yield
        return
    previous = block(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        block(signal.SIG_SETMASK, previous)


def discard_prefetched():
    """Drop the files read ahead and not taken (call at the end of a run to free them)."""
    pending = _PREFETCH["pending"]
    while pending:
        pending.pop(next(iter(pending)))[0].cancel()


def _take_prefetched(path):
    """Bytes read ahead for ``path``, or None (not asked for, failed unexpectedly or the file
    changed since: read it again). A `DL3Error` of the read ahead is raised."""
    entry = _PREFETCH["pending"].pop(str(path), None)
    if entry is None:
        return None
    future, signature = entry
    try:
        if _file_signature(path) != signature:
            future.cancel()
            return None
        return future.result()
    except DL3Error:
        raise
    except Exception:  # the normal path reports the error with its message
        return None


def read_fits_tables(path):
    """The binary tables of a FITS file (gzipped or not) as ``{EXTNAME: Table}``.

    The file is read and decompressed in one pass and parsed by `ringbg.fitsfile`; files
    using features it leaves aside are read with astropy. Only regular files are read (not
    a FIFO, a device or a folder), of at most `MAX_FILE_BYTES` on disk and decompressed.
    Raises `DL3Error` naming the file.
    """
    raw = _take_prefetched(path)
    if raw is None:
        raw = _read_decompressed(path)
    return _parse_tables(path, raw)


def _parse_tables(path, raw):
    try:
        return read_tables(raw)
    except UnsupportedFITS:
        pass
    except ValueError as exc:  # damaged: read_tables says what is wrong
        raise DL3Error(f"{path}: cannot be read as FITS ({one_line(exc)})") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                tables = {}
                for hdu in hdul[1:]:
                    if isinstance(hdu, fits.BinTableHDU):
                        tables.setdefault(hdu.name.upper(), Table.from_astropy(hdu))
                return tables
    except Exception as exc:  # astropy raises many kinds (VerifyError, KeyError...) for damage
        raise DL3Error(f"{path}: cannot be read as FITS ({one_line(exc)})") from exc
