"""A small, fast reader of FITS binary tables (the HDUs of GADF DL3 files).

astropy.io.fits spends most of its time on header-card objects and column machinery; a DL3
observation needs a few tables read once, so this module parses the headers directly and
views each table as a numpy record array. Anything it does not handle (variable-length
arrays, images with data other than the primary) makes `read_tables` raise
`UnsupportedFITS`, and the caller falls back to astropy. A damaged file (truncated, or with
structural keywords that are not valid) raises `ValueError` saying what is wrong: the reader
never loops, never reads outside the bytes it is given and never returns a table whose
columns cannot be read.
"""

import functools
import math
import re

import numpy as np

__all__ = ["Table", "read_tables", "fits_extent", "UnsupportedFITS"]

BLOCK = 2880
_TFORM = re.compile(r"^\s*(\d*)([LXBIJKAEDCM])\s*$")
_NUMPY = {"L": "i1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8",
          "C": ">c8", "M": ">c16"}


class UnsupportedFITS(Exception):
    """The file uses a FITS feature this reader leaves to astropy."""


class Table:
    """A binary table HDU: ``header`` (dict of keyword -> value) and named columns."""

    def __init__(self, header, data, columns):
        self.header = header
        self._data = data
        self._columns = columns  # name -> (field, unit, tzero, tscal, shape, code, repeat)
        self.name = str(header.get("EXTNAME", "")).strip()

    @classmethod
    def from_astropy(cls, hdu):
        """Wrap an astropy ``BinTableHDU`` (which applies TZERO, TSCAL and TDIM itself)."""
        columns = {c.name.upper(): (c.name, str(c.unit or ""), 0, 1, None, None, 1)
                   for c in hdu.columns}
        return cls(dict(hdu.header), hdu.data, columns)

    @property
    def colnames(self):
        return list(self._columns)

    def __len__(self):
        return 0 if self._data is None else len(self._data)

    def _column_spec(self, name):
        try:
            return self._columns[name.upper()]
        except KeyError:
            raise KeyError(f"HDU {self.name!r} has no column {name!r} (it has "
                           f"{', '.join(self._columns) or 'none'})") from None

    def unit(self, name):
        return self._column_spec(name)[1]

    def __contains__(self, name):
        return name.upper() in self._columns

    def __getitem__(self, name):
        return self.column(name)

    def column(self, name):
        """Column values as a native-endian array (TZERO/TSCAL applied, TDIM shape)."""
        field, _, tzero, tscal, shape, code, repeat = self._column_spec(name)
        values = np.asarray(self._data[field])
        if shape is not None:
            values = values.reshape((len(values),) + shape)
        values = values.astype(values.dtype.newbyteorder("="), copy=False)
        if code == "L":
            return values == ord("T")
        if code == "X":
            return np.unpackbits(values, axis=-1)[..., :repeat].astype(bool)
        if tscal == 1 and tzero == 0:
            return values
        if tscal == 1 and code in _SIGN_FLIP and tzero == _SIGN_FLIP[code][0]:
            # FITS's unsigned integers: adding TZERO flips the sign bit
            bits = 8 * values.itemsize
            flipped = values.view(f"u{values.itemsize}") ^ (1 << (bits - 1))
            return flipped.view(_SIGN_FLIP[code][1])
        # physical values in float64, as astropy: no wrap-around, no float32 rounding
        return values.astype(np.float64) * tscal + tzero


_STRING = re.compile(r"'((?:[^']|'')*)")


#: TZERO of FITS's unsigned-integer convention per column code, and the resulting type
#: (signed bytes, B with TZERO -128, come out as floats, as astropy gives them)
_SIGN_FLIP = {"I": (2**15, np.uint16), "J": (2**31, np.uint32), "K": (2**63, np.uint64)}


@functools.lru_cache(maxsize=4096)
def _value(text):
    """A header value: quoted string, logical, integer, float or raw text."""
    text = text.strip()
    if text.startswith("'"):
        # up to the closing quote ('' is a quote inside the string; unterminated: to the end)
        return _STRING.match(text).group(1).replace("''", "'").rstrip()
    value = text.split("/", 1)[0].strip()
    if value in ("T", "F"):
        return value == "T"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value.replace("D", "E"))
    except ValueError:
        return value


#: the keywords `_data_size` (and its messages) read
_SIZE_KEYS = frozenset(["SIMPLE", "XTENSION", "EXTNAME", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT"])


def _header(raw, offset, size_only=False):
    """Parse the header starting at ``offset``; returns (dict, offset after the header).

    ``size_only``: only the keywords that give the size of the HDU's data (`_data_size`).
    """
    header = {}
    last = None  # keyword whose string value may go on in CONTINUE cards
    while True:
        if offset + BLOCK > len(raw):
            raise ValueError("truncated header")
        block = raw[offset:offset + BLOCK].decode("ascii", errors="replace")
        offset += BLOCK
        for i in range(0, BLOCK, 80):
            card = block[i:i + 80]
            key = card[:8].strip()
            if key == "END":
                return header, offset
            if size_only and key not in _SIZE_KEYS and not key.startswith("NAXIS"):
                continue
            if card[8:10] == "= " and key:
                header[key] = _value(card[10:])
                last = key
            elif key == "CONTINUE" and last is not None:
                # long-string convention: a string ending in '&' goes on in the next card
                head, more = header[last], _value(card[8:])
                if isinstance(head, str) and head.endswith("&") and isinstance(more, str):
                    header[last] = head[:-1] + more
                else:
                    last = None


def _int(header, key, default=None, minimum=0, maximum=None):
    """A structural integer keyword, checked; `ValueError` naming it when it is not valid."""
    value = header.get(key, default)
    if value is None:
        raise ValueError(f"header of HDU {_hdu_name(header)} has no {key}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"header of HDU {_hdu_name(header)}: {key} = {value!r} is not an integer")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"header of HDU {_hdu_name(header)}: {key} = {value} is out of range")
    return value


def _hdu_name(header):
    return repr(str(header.get("EXTNAME", "PRIMARY" if "SIMPLE" in header else "")).strip())


def _data_size(header):
    naxis = _int(header, "NAXIS", 0, maximum=999)
    if naxis == 0:
        return 0
    bitpix = _int(header, "BITPIX", 8, minimum=-64)
    if bitpix not in (8, 16, 32, 64, -32, -64):
        raise ValueError(f"header of HDU {_hdu_name(header)}: BITPIX = {bitpix} is not valid")
    size = abs(bitpix) // 8
    for k in range(1, naxis + 1):
        size *= _int(header, f"NAXIS{k}", 0)
    size = _int(header, "GCOUNT", 1) * (_int(header, "PCOUNT", 0) + size)
    return size


def _scaling(header, key, default):
    value = header.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"header of HDU {_hdu_name(header)}: {key} = {value!r} is not a number")
    return value


def _columns(header):
    n = _int(header, "TFIELDS", 0, maximum=999)
    names, formats, columns = [], [], {}
    for k in range(1, n + 1):
        form = str(header.get(f"TFORM{k}", "")).strip()
        match = _TFORM.match(form)
        if not match:
            raise UnsupportedFITS(f"column format {form!r}")
        repeat = int(match.group(1) or 1)
        code = match.group(2)
        name = str(header.get(f"TTYPE{k}", f"COL{k}")).strip()
        field = f"f{k}"
        if code == "A":
            fmt = f"S{repeat}"
            shape = None
        elif code == "X":
            fmt, shape = (np.dtype("u1"), ((repeat + 7) // 8,)), None
        else:
            # (type, shape) tuples: numpy parses "(n,)type" strings with ast.literal_eval
            fmt = _NUMPY[code] if repeat == 1 else (np.dtype(_NUMPY[code]), (repeat,))
            shape = None
            tdim = header.get(f"TDIM{k}")
            if tdim and repeat > 1:
                try:
                    dims = [int(d) for d in str(tdim).strip("() ").split(",")]
                except ValueError:
                    raise ValueError(f"TDIM{k} = {tdim!r} is not a list of integers") from None
                if any(d <= 0 for d in dims) or int(np.prod(dims)) != repeat:
                    # smaller than the repeat count is allowed by FITS: left to astropy
                    raise UnsupportedFITS(f"TDIM{k} = {tdim!r} with TFORM{k} = {form!r}")
                shape = tuple(reversed(dims))
        names.append(field)
        formats.append(fmt)
        unit = str(header.get(f"TUNIT{k}", "")).strip()
        tzero = _scaling(header, f"TZERO{k}", 0)
        tscal = _scaling(header, f"TSCAL{k}", 1)
        columns[name.upper()] = (field, unit, tzero, tscal, shape, code, repeat)
    return np.dtype({"names": names, "formats": formats}), columns


def read_tables(raw):
    """All binary-table HDUs of the FITS bytes ``raw`` (bytes or bytearray), as
    ``{EXTNAME: Table}``.

    Raises
    ------
    ValueError
        For a truncated or malformed file (message saying what is wrong).
    UnsupportedFITS
        For features left to astropy; raised only once the whole file has been walked, so
        the bytes handed to astropy have sound headers and sizes (astropy can loop without
        end on some damaged files).
    """
    if not raw.startswith(b"SIMPLE  ="):
        raise ValueError("not a FITS file (no SIMPLE card)")
    tables = {}
    unsupported = None
    offset = 0
    first = True
    while offset < len(raw):
        if not raw[offset:offset + 80].strip(b" \x00"):
            break  # padding at the end
        header, offset = _header(raw, offset)
        if first and header.get("SIMPLE") is not True:
            raise ValueError(f"not a standard FITS file (SIMPLE = {header.get('SIMPLE')!r})")
        if not first and "XTENSION" not in header:
            raise ValueError(f"HDU at byte {offset} has no XTENSION keyword")
        size = _data_size(header)
        end = offset + size
        if end > len(raw):
            raise ValueError(f"truncated data of HDU {_hdu_name(header)}")
        if not first and str(header.get("XTENSION", "")).strip() == "BINTABLE":
            try:
                table = _table(raw, offset, header)
            except UnsupportedFITS as exc:
                # the rest of the file is still checked: astropy only sees sound files
                unsupported = unsupported or exc
            else:
                tables.setdefault(table.name.upper(), table)
        first = False
        offset += _padded(size)
    if unsupported is not None:
        raise unsupported
    return tables


def _padded(size):
    return -(-size // BLOCK) * BLOCK


def fits_extent(buffer, need, limit):
    """Walk the HDU headers of a FITS byte stream that arrives on demand; bytes it spans.

    Used to decompress no more of a file than its FITS content: ``buffer`` (bytes-like) grows
    as ``need(n)`` is called, which makes it hold at least ``n`` bytes and returns False when
    the input ends first. The walk stops at the end of the input, at padding after the last
    HDU, or at a header that is not sound (`read_tables` then reports it on the bytes read).

    Parameters
    ----------
    buffer : bytes-like
        The bytes read so far (grown by ``need``).
    need : callable
        ``need(n) -> bool``.
    limit : int
        Largest number of bytes the headers may declare.

    Returns
    -------
    end : int
        Offset after the last complete HDU (0 for bytes that are not FITS).

    Raises
    ------
    ValueError
        When the headers declare more than ``limit`` bytes (message saying how many).
    """
    offset = 0
    while need(offset + 80):
        card = bytes(buffer[offset:offset + 80])
        if offset == 0 and not card.startswith(b"SIMPLE  ="):
            break
        if offset > 0 and not card.strip(b" \x00"):
            break  # padding at the end
        pos = offset
        while True:  # to the block holding the END card
            if not need(pos + BLOCK):
                return offset
            block = bytes(buffer[pos:pos + BLOCK])
            pos += BLOCK
            if b"END" in block and any(block[i:i + 8].strip() == b"END"
                                       for i in range(0, BLOCK, 80)):
                break
            if pos - offset > limit:
                raise ValueError(f"a header of more than {limit} bytes")
        try:
            header, data_start = _header(buffer, offset, size_only=True)
            size = _data_size(header)
        except ValueError:
            break  # read_tables says what is wrong
        end = data_start + _padded(size)
        if end > limit:
            raise ValueError(f"its FITS headers declare {end} bytes")
        if not need(end):
            break  # truncated data: read_tables says so
        offset = end
    return offset


def _table(raw, offset, header):
    if _int(header, "PCOUNT", 0) != 0:
        raise UnsupportedFITS("variable-length arrays")
    if _int(header, "NAXIS") != 2 or _int(header, "BITPIX") != 8 or _int(header, "GCOUNT", 1) != 1:
        raise ValueError(f"HDU {_hdu_name(header)}: BINTABLE with NAXIS, BITPIX or GCOUNT not "
                         "2, 8 and 1")
    dtype, columns = _columns(header)
    nrows = _int(header, "NAXIS2")
    if dtype.itemsize != _int(header, "NAXIS1"):
        raise UnsupportedFITS("row size does not match the column formats")
    data = np.frombuffer(raw, dtype=dtype, count=nrows, offset=offset)
    data.flags.writeable = False  # also when ``raw`` is a bytearray
    return Table(header, data, columns)
