"""Reading weight files without unpickling, and writing results atomically.

Supported inputs: ``.safetensors`` (parsed here, so bfloat16 works with numpy alone and no
torch is needed), ``.npz`` and ``.npy`` (read by :mod:`.numpy_files`, which never unpickles).  Pickled
checkpoints (``.pt``, ``.bin``, ``.pkl``) are refused, never loaded.  Every failure is a
:class:`UsageError` with a one-line message naming the file.
"""
from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import zipfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from . import numpy_files
from .errors import UsageError

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
_MAX_HEADER_BYTES = 100 * 2**20  # the format's own limit
_FLOAT_NAMES = ("F64", "F32", "F16", "BF16")
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")


class TensorFile:
    """Named arrays of one weight file.

    ``names`` lists every array; ``shape(name)`` and ``dtype(name)`` come without reading
    data; ``load(name)`` returns a float32/float64 array (bfloat16 and float16 are widened to
    float32, since numpy has no bfloat16).  safetensors tensors are read one at a time when
    loaded, and so are the members of an .npz archive.  Every header is checked against the
    bytes present when the file is opened, so nothing larger than the real data is allocated.
    """

    def __init__(self, path: str, role: str = "INPUT") -> None:
        self.path = path
        self.role = role
        if not isinstance(path, str) or not path:
            raise UsageError(f"{role}: expected a file path")
        if not os.path.exists(path):
            raise UsageError(f"{role}: file not found: {path}")
        if not os.path.isfile(path):
            raise UsageError(f"{role}: not a regular file: {path}")
        suffix = os.path.splitext(path)[1].lower()
        if suffix in _PICKLE_SUFFIXES:
            raise UsageError(f"{role}: {path} looks like a pickled checkpoint; svdlora never "
                             "unpickles files - save it as .safetensors, .npz or .npy")
        loaders = {".safetensors": self._open_safetensors, ".npz": self._open_npz,
                   ".npy": self._open_npy}
        if suffix not in loaders:
            raise UsageError(f"{role}: unsupported file type {suffix or '(none)'!r} for {path}; "
                             "expected .safetensors, .npz or .npy")
        try:
            loaders[suffix]()
        except UsageError:
            raise
        except (OSError, ValueError, EOFError, KeyError, struct.error, zipfile.BadZipFile,
                RecursionError) as exc:
            raise UsageError(f"{role}: cannot read {path}: {_one_line(exc)}") from None

    # ------------------------------------------------------------------ formats

    def _open_safetensors(self) -> None:
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise UsageError(f"{self.role}: {self.path} is not a safetensors file (too short)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(_MAX_HEADER_BYTES, size - 8):
                raise UsageError(f"{self.role}: {self.path} is not a safetensors file (bad header "
                                 "length; a pickled checkpoint is never loaded)")
            raw = f.read(header_len)
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_refuse_duplicate_keys)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UsageError(f"{self.role}: {self.path} is not a safetensors file (header is "
                             "not JSON)") from None
        except _DuplicateKey as exc:
            raise UsageError(f"{self.role}: {self.path}: safetensors header names {exc} twice") from None
        except RecursionError:
            raise UsageError(f"{self.role}: {self.path}: safetensors header is nested too "
                             "deeply") from None
        if not isinstance(header, dict):
            raise UsageError(f"{self.role}: {self.path}: safetensors header is not a JSON object")
        data_start, data_size = 8 + header_len, size - 8 - header_len
        self._entries: Dict[str, Tuple[Tuple[int, ...], str, int]] = {}
        spans = []
        for name, spec in header.items():
            if name == "__metadata__":
                if not isinstance(spec, dict) or not all(isinstance(v, str) for v in spec.values()):
                    raise UsageError(f"{self.role}: {self.path}: safetensors __metadata__ must "
                                     "map names to strings")
                continue
            self._entries[name], span = self._check_entry(name, spec, data_start, data_size)
            spans.append((span, name))
        # The format requires the tensors to tile the data buffer exactly.  Overlapping
        # tensors would let a tiny file declare unbounded work; holes could hide other data.
        end = 0
        for (begin, stop), name in sorted(spans):
            if begin != end:
                problem = "overlaps another tensor" if begin < end else "leaves a gap before it"
                raise UsageError(f"{self.role}: {self.path}: tensor {name!r} {problem} in the "
                                 "data buffer (corrupt file)")
            end = stop
        if end != data_size:
            raise UsageError(f"{self.role}: {self.path}: {data_size - end} bytes after the last "
                             "tensor (corrupt file)")
        self._kind = "safetensors"

    def _check_entry(self, name: str, spec: Any, data_start: int, data_size: int):
        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        malformed = UsageError(f"{self.role}: {self.path}: malformed header entry for tensor "
                               f"{name!r}")
        if not isinstance(spec, dict):
            raise malformed
        dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
        if (not isinstance(dtype, str) or not isinstance(shape, list)
                or not all(is_int(d) and d >= 0 for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(is_int(o) for o in offsets)):
            raise malformed
        if dtype not in _SAFETENSORS_DTYPES:
            raise UsageError(f"{self.role}: {self.path}: tensor {name!r} has unsupported dtype "
                             f"{dtype}")
        begin, end = offsets
        itemsize = np.dtype(_SAFETENSORS_DTYPES[dtype]).itemsize
        # exact integer arithmetic: a huge shape must not wrap around to a small size
        if not 0 <= begin <= end <= data_size or end - begin != math.prod(shape) * itemsize:
            raise UsageError(f"{self.role}: {self.path}: tensor {name!r} has inconsistent "
                             "offsets (truncated or corrupt file)")
        return (tuple(shape), dtype, data_start + begin), (begin, end)

    def _open_npz(self) -> None:
        headers = numpy_files.open_npz(self.path, self.role)
        self._entries = {name: (h.shape, str(h.dtype), h) for name, h in headers.items()}
        self._kind = "npz"

    def _open_npy(self) -> None:
        header, _ = numpy_files.open_npy(self.path, self.role)
        name = os.path.splitext(os.path.basename(self.path))[0]
        self._entries = {name: (header.shape, str(header.dtype), header)}
        self._kind = "npy"

    # ------------------------------------------------------------------ access

    @property
    def names(self) -> List[str]:
        return list(self._entries)

    def shape(self, name: str) -> Tuple[int, ...]:
        return tuple(self._entry(name)[0])

    def dtype(self, name: str) -> str:
        return self._entry(name)[1]

    def is_float(self, name: str) -> bool:
        """float16/bfloat16/float32/float64, either byte order (what the analyses accept)."""
        dtype = self.dtype(name)
        if self._kind == "safetensors":
            return dtype in _FLOAT_NAMES
        parsed = np.dtype(dtype)
        return parsed.kind == "f" and parsed.itemsize in (2, 4, 8)

    def _entry(self, name: str):
        if name not in self._entries:
            available = ", ".join(repr(n) for n in list(self._entries)[:8])
            more = ", ..." if len(self._entries) > 8 else ""
            raise UsageError(f"{self.role}: no tensor named {name!r} in {self.path} "
                             f"(has {available}{more})")
        return self._entries[name]

    def load(self, name: str) -> np.ndarray:
        shape, dtype, where = self._entry(name)
        if not self.is_float(name):  # refused before any data is read
            raise UsageError(f"{self.role}: tensor {name!r} in {self.path} has dtype {dtype}; "
                             "a float16/bfloat16/float32/float64 matrix is needed")
        if self._kind == "safetensors":
            count = math.prod(shape)
            raw = np.fromfile(self.path, dtype=_SAFETENSORS_DTYPES[dtype], count=count, offset=where)
            if raw.size != count:  # the file shrank since it was opened
                raise UsageError(f"{self.role}: {self.path}: tensor {name!r} is truncated")
            raw = raw.reshape(shape)
            if dtype == "BF16":  # bfloat16 is the top half of a float32
                return (raw.astype(np.uint32) << 16).view(np.float32)
            array = raw
        elif self._kind == "npz":
            array = numpy_files.load_npz_member(self.path, name, where, self.role)
        else:
            array = numpy_files.load_npy(self.path, where, self.role)
        if array.dtype == np.float16 or not array.dtype.isnative:
            return array.astype(np.float32 if array.dtype.itemsize == 2 else array.dtype.newbyteorder("="))
        return array

    def matrices(self, names: Optional[List[str]] = None) -> List[str]:
        """The requested names (all must be 2-D), or every 2-D tensor of the file."""
        if names:
            for name in names:
                require_matrix(self, name)
            return list(names)
        found = [n for n in self.names if len(self.shape(n)) == 2 and min(self.shape(n)) > 0
                 and self.is_float(n)]
        if not found:
            raise UsageError(f"{self.role}: {self.path} holds no 2-D floating-point tensors")
        return found


class _DuplicateKey(Exception):
    pass


def _refuse_duplicate_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(repr(key))
        seen[key] = value
    return seen


def require_matrix(tensors: TensorFile, name: str) -> Tuple[int, int]:
    shape = tensors.shape(name)
    if len(shape) != 2:
        raise UsageError(f"{tensors.role}: tensor {name!r} has shape {shape}; a 2-D matrix is "
                         "needed")
    if min(shape) == 0:
        raise UsageError(f"{tensors.role}: tensor {name!r} is empty (shape {shape})")
    return shape[0], shape[1]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def write_atomically(path: str, write: Callable[[str], None], role: str) -> None:
    """Write via ``write(tmp_path)`` into the target directory, then rename into place (an
    existing file is replaced only by a complete new one)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"{role}: directory does not exist: {directory}")
    if os.path.isdir(path):
        raise UsageError(f"{role}: {path} is a directory")
    suffix = os.path.splitext(path)[1]
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".svdlora-", suffix=suffix, dir=directory)
        os.close(fd)
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is not what a user expects
        os.replace(tmp, path)
    except OSError as exc:
        raise UsageError(f"{role}: cannot write {path}: {_one_line(exc)}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def save_npz(path: str, arrays: Dict[str, np.ndarray], role: str = "-o") -> None:
    if not path.endswith(".npz"):
        raise UsageError(f"{role}: output must be a .npz file, got {path}")
    write_atomically(path, lambda tmp: np.savez(tmp, **arrays), role)


def save_json(path: str, payload, role: str = "--json") -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
    write_atomically(path, write, role)
