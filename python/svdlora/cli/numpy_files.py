"""Checked reading of .npy files and .npz archives: every header is validated against the bytes
actually present before anything is allocated, and nothing is ever unpickled."""
from __future__ import annotations

import math
import os
import struct
import tokenize
import zipfile
from dataclasses import dataclass
from typing import BinaryIO, Dict, Tuple

import numpy as np

from .errors import UsageError

#: An archive member that inflates to more than this many times its compressed size, and to
#: more than ``_BOMB_MIN_BYTES``, is refused as a zip bomb: real weights compress by 1.1-3x,
#: and a matrix that compresses 200-fold holds almost no information worth the time of a
#: full SVD (which is what a 1 MB file inflating to 1 GB would cost).
_MAX_INFLATION = 200
_BOMB_MIN_BYTES = 16 * 2**20
_READ_CHUNK = 4 * 2**20


@dataclass(frozen=True)
class NpyHeader:
    """What an .npy header declares, checked for sanity (not yet against the data size)."""

    shape: Tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    data_offset: int  # bytes from the start of the .npy stream to the data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # exact: no int64 wrap-around


def read_npy_header(stream: BinaryIO, where: str) -> NpyHeader:
    """Parse the magic string and header dict of an .npy stream positioned at its start.

    numpy's header parser evaluates a Python literal only (never code) and caps its length;
    object dtypes, whose data would be a pickle, are refused here.
    """
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = fmt.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran_order, dtype = fmt.read_array_header_2_0(stream)
        else:
            raise UsageError(f"{where}: unsupported .npy format version {version}")
    except UsageError:
        raise
    except (ValueError, TypeError, SyntaxError, tokenize.TokenError, EOFError, KeyError,
            IndexError, UnicodeDecodeError, OverflowError, RecursionError, MemoryError) as exc:
        # numpy's header parser tokenizes and literal-evaluates the header text, so the
        # errors of both (and of the dtype constructor) reach here
        raise UsageError(f"{where}: not a valid .npy array ({_one_line(exc)})") from None
    if dtype.hasobject:
        raise UsageError(f"{where}: holds Python objects (a pickle); svdlora never unpickles")
    if dtype.fields is not None or dtype.subdtype is not None:
        raise UsageError(f"{where}: has a structured dtype {dtype}; a plain numeric matrix is needed")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise UsageError(f"{where}: .npy header declares an invalid shape {shape}")
    return NpyHeader(tuple(shape), dtype, bool(fortran_order), stream.tell())


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _read_exactly(stream: BinaryIO, header: NpyHeader, where: str) -> np.ndarray:
    """The array of ``header`` read from ``stream`` into one buffer of exactly its size (the
    stream's declared size has been checked to match, so this cannot over-allocate)."""
    out = np.empty(header.nbytes, dtype=np.uint8)
    view = memoryview(out)
    done = 0
    while done < header.nbytes:
        got = stream.readinto(view[done:done + _READ_CHUNK])
        if not got:
            raise UsageError(f"{where}: data ends after {done} of {header.nbytes} bytes "
                             "(truncated file)")
        done += got
    if stream.read(1):  # also makes a zip member verify its CRC at the end of its data
        raise UsageError(f"{where}: has bytes beyond the array its header declares")
    array = out.view(header.dtype)
    order = "F" if header.fortran_order else "C"
    return array.reshape(header.shape, order=order)


def open_npy(path: str, role: str) -> Tuple[NpyHeader, str]:
    """Validate an .npy file's header against its size; returns the header and a location."""
    where = f"{role}: {path}"
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header = read_npy_header(f, where)
    if header.data_offset + header.nbytes != size:
        raise UsageError(f"{where}: header declares {header.nbytes} bytes of data for shape "
                         f"{header.shape}, the file holds {size - header.data_offset} "
                         "(truncated or corrupt file)")
    return header, path


def load_npy(path: str, header: NpyHeader, role: str) -> np.ndarray:
    with open(path, "rb") as f:
        f.seek(header.data_offset)
        return _read_exactly(f, header, f"{role}: {path}")


_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
               RuntimeError, NotImplementedError, MemoryError, OverflowError)
try:  # zlib/lzma/bz2 errors surface from ZipExtFile reads
    import zlib
    _ZIP_ERRORS = _ZIP_ERRORS + (zlib.error,)
except ImportError:  # pragma: no cover - zlib is part of every CPython build we support
    pass


def _member_where(role: str, path: str, member: str) -> str:
    return f"{role}: {path}, member {member!r}"


_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # signature ... file name length, extra length
_ZIP64_EXTRA_ID = 0x0001
_SIZES_IN_DESCRIPTOR = 0x08  # flag bit: CRC and sizes follow the data, local fields are 0


def _zip64_local_sizes(extra: bytes, usize: int, csize: int) -> Tuple[int, int]:
    """A local header's real sizes when its 32-bit fields hold the zip64 marker."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        if tag == _ZIP64_EXTRA_ID and size >= 16:
            return struct.unpack_from("<QQ", extra, pos + 4)
        pos += 4 + size
    return usize, csize


def _check_local_header(raw: BinaryIO, info: zipfile.ZipInfo, where: str) -> None:
    """The member's local header must agree with its central-directory entry: a reader that
    trusts one and a reader that trusts the other would otherwise see different data."""
    raw.seek(info.header_offset)
    fixed = raw.read(_LOCAL_HEADER.size)
    if len(fixed) != _LOCAL_HEADER.size:
        raise UsageError(f"{where}: its local header lies past the end of the file")
    sig, _version, flags, method, _time, _date, crc, csize, usize, name_len, extra_len = \
        _LOCAL_HEADER.unpack(fixed)
    if sig != b"PK\x03\x04":
        raise UsageError(f"{where}: the central directory points at no local header")
    extra = raw.read(name_len + extra_len)[name_len:]
    consistent = flags == info.flag_bits and method == info.compress_type
    if consistent and not flags & _SIZES_IN_DESCRIPTOR:
        if 0xFFFFFFFF in (usize, csize):
            usize, csize = _zip64_local_sizes(extra, usize, csize)
        consistent = (crc, csize, usize) == (info.CRC, info.compress_size, info.file_size)
    if not consistent:
        raise UsageError(f"{where}: local header and central directory disagree (corrupt archive)")


def _member_header(archive: zipfile.ZipFile, raw: BinaryIO, info: zipfile.ZipInfo,
                   where: str) -> NpyHeader:
    """The checked .npy header of one archive member; only the header is inflated."""
    if not info.filename.endswith(".npy"):
        raise UsageError(f"{where} is not an .npy array")
    if info.flag_bits & 0x1:
        raise UsageError(f"{where} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise UsageError(f"{where} uses compression method {info.compress_type}; "
                         "only stored and deflate members are read")
    if (info.file_size > _BOMB_MIN_BYTES
            and info.file_size > _MAX_INFLATION * max(info.compress_size, 1)):
        raise UsageError(f"{where} inflates {info.compress_size} bytes to "
                         f"{info.file_size} (a zip bomb?); refused")
    _check_local_header(raw, info, where)
    with archive.open(info) as stream:
        header = read_npy_header(stream, where)
    if header.data_offset + header.nbytes != info.file_size:
        raise UsageError(f"{where}: header declares {header.nbytes} bytes of data "
                         f"for shape {header.shape}, the member holds "
                         f"{info.file_size - header.data_offset} (corrupt archive)")
    return header


def open_npz(path: str, role: str) -> Dict[str, NpyHeader]:
    """Validate every member of an .npz archive without inflating more than its headers.

    Returns the arrays' headers by name (the member name without ``.npy``).  Refused: non-zip
    files, encrypted members, compression methods other than stored/deflate, members that are
    not .npy arrays, duplicate names, headers inconsistent with the member's size or with the
    central directory, zip bombs.
    """
    headers: Dict[str, NpyHeader] = {}
    try:
        with open(path, "rb") as raw, zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.is_dir() and info.file_size == 0:
                    continue  # a directory entry holds no data
                where = _member_where(role, path, info.filename)
                try:
                    header = _member_header(archive, raw, info, where)
                except UsageError:
                    raise
                except _ZIP_ERRORS as exc:
                    raise UsageError(f"{where}: cannot read: {_one_line(exc)}") from None
                if info.filename[:-4] in headers:
                    raise UsageError(f"{where} appears twice in the archive")
                headers[info.filename[:-4]] = header
    except UsageError:
        raise
    except _ZIP_ERRORS as exc:
        raise UsageError(f"{role}: cannot read {path}: {_one_line(exc)}") from None
    if not headers:
        raise UsageError(f"{role}: {path} holds no .npy arrays")
    return headers


def load_npz_member(path: str, name: str, header: NpyHeader, role: str) -> np.ndarray:
    """One member's array, inflated straight into a buffer of its declared size."""
    where = _member_where(role, path, name + ".npy")
    try:
        with zipfile.ZipFile(path) as archive, archive.open(name + ".npy") as stream:
            stream.read(header.data_offset)
            return _read_exactly(stream, header, where)
    except UsageError:
        raise
    except _ZIP_ERRORS as exc:
        raise UsageError(f"{where}: cannot read: {_one_line(exc)}") from None
