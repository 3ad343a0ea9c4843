"""Generator of malformed and adversarial .safetensors/.npy/.npz files for the reader fuzz suite."""
from __future__ import annotations

import ast
import copy
import io
import json
import math
import pickle
import random
import struct
import sys
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

ST, NPY, NPZ = ".safetensors", ".npy", ".npz"


@dataclass(frozen=True)
class Case:
    name: str    # unique, filesystem-safe
    suffix: str  # ".safetensors" | ".npy" | ".npz"
    data: bytes  # full file contents
    valid: bool  # a correct reader should accept it (>= 1 finite, non-empty float 2-D matrix)
    note: str    # what is wrong with it


# --------------------------------------------------------------------------- valid builders
_ST_NP = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "I8": "i1", "I16": "<i2", "I32": "<i4",
          "I64": "<i8", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?"}
_ST_SIZE = {**{k: np.dtype(v).itemsize for k, v in _ST_NP.items()},
            "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_NP_ST = {np.dtype(v): k for k, v in _ST_NP.items()}


def _to_bf16(a: np.ndarray) -> bytes:
    # truncating float32 to its upper half is exactly bfloat16 (round-toward-zero)
    return (np.ascontiguousarray(a, "<f4").view("<u4") >> 16).astype("<u2").tobytes()


def st_parts(tensors: dict[str, np.ndarray], bf16: Iterable[str] = ()) -> tuple[dict, bytes]:
    """Header dict and data buffer of a valid safetensors file (names in `bf16` stored as BF16)."""
    header: dict[str, Any] = {}
    chunks, pos, bf16 = [], 0, set(bf16)
    for name, arr in tensors.items():
        a = np.asarray(arr)
        if name in bf16:
            dtype, raw = "BF16", _to_bf16(a)
        else:
            a = a.astype(a.dtype.newbyteorder("<"))
            dtype, raw = _NP_ST[a.dtype], np.ascontiguousarray(a).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [pos, pos + len(raw)]}
        chunks.append(raw)
        pos += len(raw)
    return header, b"".join(chunks)


def st_raw(header: dict | str | bytes, data: bytes, length: int | None = None) -> bytes:
    """Length prefix + header + data; dict/str headers are space-padded to 8 bytes like the
    reference writer, bytes headers are written verbatim (exact control for malformed ones)."""
    if isinstance(header, dict):
        header = json.dumps(header, ensure_ascii=False)
    if isinstance(header, str):
        header = header.encode("utf-8", "surrogatepass")
        header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header) if length is None else length) + header + data


def valid_safetensors(tensors: dict[str, np.ndarray], metadata: dict | None = None,
                      bf16: Iterable[str] = ()) -> bytes:
    header, data = st_parts(tensors, bf16)
    if metadata is not None:
        header = {"__metadata__": metadata, **header}
    return st_raw(header, data)


def npy_header(descr: Any, fortran: Any, shape: Any, version: tuple[int, int] = (1, 0),
               override: str | bytes | None = None) -> bytes:
    text = override if override is not None else (
        "{'descr': %r, 'fortran_order': %r, 'shape': %r, }" % (descr, fortran, shape))
    body = text.encode("utf-8" if version == (3, 0) else "latin1") if isinstance(text, str) else text
    fmt = "<H" if version[0] == 1 else "<I"
    pre = 8 + struct.calcsize(fmt)
    body += b" " * (-(pre + len(body) + 1) % 64) + b"\n"  # total header a multiple of 64
    return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, len(body)) + body


def npy_bytes(array: np.ndarray, header_override: str | bytes | None = None,
              version: tuple[int, int] = (1, 0), fortran: bool | None = None,
              data: bytes | None = None) -> bytes:
    a = np.asarray(array)
    if fortran is None:
        fortran = bool(a.flags.f_contiguous and not a.flags.c_contiguous)
    head = npy_header(np.lib.format.dtype_to_descr(a.dtype), fortran,
                      tuple(int(d) for d in a.shape), version, header_override)
    return head + (a.tobytes(order="F" if fortran else "C") if data is None else data)


def npz_bytes(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    bio = io.BytesIO()
    with warnings.catch_warnings():  # duplicate names are deliberate
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(bio, "w", compression) as zf:
            for name, data in members:  # fixed timestamp keeps the bytes deterministic
                info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
                info.compress_type = compression
                zf.writestr(info, data)
    return bio.getvalue()


# --------------------------------------------------------------------------- raw zip patching
# field -> (offset in local header, offset in central header, struct format)
_ZF = {"flags": (6, 8, "<H"), "method": (8, 10, "<H"), "crc": (14, 16, "<I"),
       "csize": (18, 20, "<I"), "usize": (22, 24, "<I")}


def _zip_entries(data: bytes) -> list[tuple[int, int]]:
    """(local header offset, central header offset) per member, walked from the EOCD record
    (not by searching for signatures, which can occur inside stored member data)."""
    eocd = data.rfind(b"PK\x05\x06")
    count, _size, cd = struct.unpack_from("<HII", data, eocd + 10)
    out = []
    for _ in range(count):
        n, m, k = struct.unpack_from("<HHH", data, cd + 28)
        out.append((struct.unpack_from("<I", data, cd + 42)[0], cd))
        cd += 46 + n + m + k
    return out


def _zip_data_offset(data: bytes, member: int = 0) -> int:
    loc = _zip_entries(data)[member][0]
    n, m = struct.unpack_from("<HH", data, loc + 26)
    return loc + 30 + n + m


def zip_patch(data: bytes, field: str, fn: Callable[[int], int], member: int = 0,
              where: str = "both") -> bytes:
    out = bytearray(data)
    loc, cen = _zip_entries(data)[member]
    lo, co, fmt = _ZF[field]
    mask = 0xFFFF if fmt == "<H" else 0xFFFFFFFF
    for base, off, on in ((loc, lo, where != "central"), (cen, co, where != "local")):
        if on:
            old = struct.unpack_from(fmt, out, base + off)[0]
            struct.pack_into(fmt, out, base + off, fn(old) & mask)
    return bytes(out)


def zip_bomb(shape: tuple[int, int] = (8192, 8192), name: str = "bomb.npy") -> bytes:
    """One deflated member: a valid .npy of float32 zeros (256 MiB for 8192x8192), streamed
    through compressobj in 1 MiB chunks so it never exists uncompressed in memory."""
    head = npy_header("<f4", False, shape)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts, crc, left, chunk = [co.compress(head)], zlib.crc32(head), math.prod(shape) * 4, bytes(1 << 20)
    while left:
        piece = chunk[:min(left, len(chunk))]
        parts.append(co.compress(piece))
        crc, left = zlib.crc32(piece, crc), left - len(piece)
    comp = b"".join(parts) + co.flush()
    usize, nm = len(head) + math.prod(shape) * 4, name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(comp), usize, len(nm), 0)
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(comp),
                          usize, len(nm), 0, 0, 0, 0, 0, 0) + nm
    body = local + nm + comp
    return body + central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(body), 0)


# --------------------------------------------------------------------------- strict oracle
_MEMBER_LIMIT = 64 << 20  # refuse members inflating past this, as a sane reader would


def _uint(x: Any) -> bool:
    return type(x) is int and 0 <= x < 2**63


def _no_dups(pairs: list[tuple[str, Any]]) -> dict:
    if len({k for k, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


def _reject(token: str) -> None:
    raise ValueError(f"non-JSON constant {token}")


def _st_arrays(data: bytes) -> list[np.ndarray]:
    n = struct.unpack_from("<Q", data)[0]
    if n == 0 or n > len(data) - 8 or data[8:9] != b"{":
        raise ValueError("bad header length/start")
    header = json.loads(data[8:8 + n].decode("utf-8"), object_pairs_hook=_no_dups, parse_constant=_reject)
    if not isinstance(header, dict):
        raise ValueError("header not an object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("bad __metadata__")
    buf, spans, out = data[8 + n:], [], []
    for e in header.values():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise ValueError("bad entry")
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if not (isinstance(dt, str) and dt in _ST_SIZE and isinstance(shape, list)
                and all(map(_uint, shape)) and isinstance(offs, list) and len(offs) == 2
                and all(map(_uint, offs)) and offs[0] <= offs[1]
                and offs[1] - offs[0] == math.prod(shape) * _ST_SIZE[dt]):
            raise ValueError("bad dtype/shape/offsets")
        spans.append(tuple(offs))
        raw = buf[offs[0]:offs[1]]
        if dt == "BF16":
            a = (np.frombuffer(raw, "<u2").astype("<u4") << 16).view("<f4")
        else:
            a = np.frombuffer(raw, _ST_NP.get(dt, "u1"))
        out.append(a.reshape(shape))
    pos = 0
    for b, e in sorted(spans):
        if b != pos:
            raise ValueError("hole or overlap")
        pos = e
    if pos != len(buf):
        raise ValueError("buffer not tiled")
    return out


def _npy_array(data: bytes) -> np.ndarray:
    ver = tuple(data[6:8])
    if data[:6] != b"\x93NUMPY" or ver not in ((1, 0), (2, 0), (3, 0)):
        raise ValueError("bad magic/version")
    start = 10 if ver == (1, 0) else 12
    end = start + struct.unpack_from("<H" if ver == (1, 0) else "<I", data, 8)[0]
    if end > len(data):
        raise ValueError("header past EOF")
    d = ast.literal_eval(data[start:end].decode("utf-8" if ver == (3, 0) else "latin1"))
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise ValueError("bad header dict")
    shape, dtype = d["shape"], np.lib.format.descr_to_dtype(d["descr"])
    if (type(d["fortran_order"]) is not bool or not isinstance(shape, tuple)
            or not all(map(_uint, shape)) or dtype.hasobject):
        raise ValueError("bad header values")
    if len(data) != end + math.prod(shape) * dtype.itemsize:  # checked before np.load allocates
        raise ValueError("data size mismatch")
    return np.load(io.BytesIO(data), allow_pickle=False)


def _npz_arrays(data: bytes) -> list[np.ndarray]:
    if not data.startswith(b"PK\x03\x04"):
        raise ValueError("not a zip at offset 0")
    out, seen = [], set()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos, entries = zf.infolist(), _zip_entries(data)
        if len(infos) != len(entries):
            raise ValueError("member count")
        for (loc, cen), info in zip(entries, infos):
            if info.is_dir() and info.file_size == 0:
                continue  # a directory entry holds no data
            if data[loc:loc + 4] != b"PK\x03\x04" or any(
                    struct.unpack_from(f, data, loc + lo) != struct.unpack_from(f, data, cen + co)
                    for lo, co, f in _ZF.values()):
                raise ValueError("local/central header mismatch")
            if (info.filename in seen or not info.filename.endswith(".npy") or info.is_dir()
                    or info.flag_bits & 1 or info.compress_type not in (0, 8)
                    or info.file_size > _MEMBER_LIMIT):
                raise ValueError(f"bad member {info.filename!r}")
            seen.add(info.filename)
            raw = zf.read(info)
            if len(raw) != info.file_size:
                raise ValueError("size mismatch")
            out.append(_npy_array(raw))
    return out


def strict_arrays(suffix: str, data: bytes) -> list[np.ndarray]:
    """Every tensor of a file as the strict reference reader sees it; raises if malformed."""
    return {ST: _st_arrays, NPY: lambda d: [_npy_array(d)], NPZ: _npz_arrays}[suffix](data)


def strict_accepts(suffix: str, data: bytes) -> bool:
    """Strict reference check: well-formed, every tensor float and finite, >= 1 non-empty matrix."""
    try:
        arrays = strict_arrays(suffix, data)
    except Exception:  # includes RecursionError / MemoryError from adversarial headers
        return False
    return (all(a.dtype.kind == "f" and bool(np.isfinite(a).all()) for a in arrays)
            and any(a.ndim == 2 and a.size > 0 for a in arrays))


# --------------------------------------------------------------------------- case families
class _Cases(list):
    def add(self, prefix: str, suffix: str, data: bytes, valid: bool, note: str) -> None:
        n = sum(c.name.rsplit("_", 1)[0] == prefix for c in self)
        self.append(Case(f"{prefix}_{n}", suffix, data, valid, note))


def _baselines(c: _Cases, rng: np.random.Generator) -> None:
    m = {s: rng.standard_normal(s) for s in ((8, 5), (20, 30), (1, 1))}
    f4 = lambda s: m[s].astype("<f4")
    for s in ((8, 5), (20, 30)):
        for dt in ("<f4", "<f8", "<f2"):
            c.add("st_valid", ST, valid_safetensors({"w": m[s].astype(dt)}), True, f"{dt} {s}")
        c.add("st_valid", ST, valid_safetensors({"w": f4(s)}, bf16=["w"]), True, f"bf16 {s}")
    c.add("st_valid", ST, valid_safetensors({"w": f4((1, 1))}), True, "1x1 matrix")
    c.add("st_valid", ST, valid_safetensors({"w": f4((8, 5))}, {"format": "pt"}), True, "with __metadata__")
    c.add("st_valid", ST, valid_safetensors({"a": f4((8, 5)), "b": f4((20, 30))}), True, "two matrices")
    for dt in ("<f4", "<f2"):
        c.add("st_valid", ST, valid_safetensors({"w": f4((20, 30)).astype(dt), "bias": m[(8, 5)][0].astype(dt),
                                                 "scale": m[(1, 1)][0].astype(dt)}), True, f"{dt} matrix + 1-D extras")
    h, buf = st_parts({"a": f4((8, 5)), "b": f4((8, 5))})
    c.add("st_valid", ST, st_raw({"b": h["b"], "a": h["a"]}, buf), True, "entries listed out of offset order")
    for dt in ("<f4", "<f8", "<f2"):
        big = np.full((8, 5), 0.5 * np.finfo(dt).max, dt) * np.sign(m[(8, 5)]).astype(dt)
        c.add("st_huge", ST, valid_safetensors({"w": big}), True, f"huge finite {dt}")
    for nm in ("重み.ü", "model.layers.0 weight", "a/b/c", "../../etc/passwd", "a\nb\t\x01",
               'q"uote\\back', "x" * 1000, "", "__metadata", "\u202etxt.exe"):
        c.add("st_odd_name", ST, valid_safetensors({nm: f4((8, 5))}), True, f"odd tensor name {nm[:20]!r}")
    for ver in ((1, 0), (2, 0), (3, 0)):
        for dt in ("<f4", "<f8"):
            c.add("npy_valid", NPY, npy_bytes(m[(20, 30)].astype(dt), version=ver), True, f"{dt} C v{ver}")
            c.add("npy_valid", NPY, npy_bytes(np.asfortranarray(m[(8, 5)].astype(dt)), version=ver), True,
                  f"{dt} Fortran v{ver}")
    c.add("npy_valid", NPY, npy_bytes(m[(8, 5)].astype("<f2")), True, "float16")
    c.add("npy_valid", NPY, npy_bytes(f4((1, 1))), True, "1x1")
    c.add("npy_huge", NPY, npy_bytes(np.full((8, 5), 0.5 * np.finfo("<f8").max)), True, "huge finite f8")
    for comp, cn in ((zipfile.ZIP_STORED, "stored"), (zipfile.ZIP_DEFLATED, "deflated")):
        c.add("npz_valid", NPZ, npz_bytes([("w.npy", npy_bytes(f4((20, 30))))], comp), True, cn)
        c.add("npz_valid", NPZ, npz_bytes([("a.npy", npy_bytes(f4((8, 5)))),
                                           ("b.npy", npy_bytes(m[(20, 30)]))], comp), True, f"two matrices {cn}")
        c.add("npz_valid", NPZ, npz_bytes([("w.npy", npy_bytes(f4((8, 5)))),
                                           ("bias.npy", npy_bytes(f4((8, 5))[0]))], comp), True, f"matrix + 1-D {cn}")
    c.add("npz_valid", NPZ, npz_bytes([("sub/w.npy", npy_bytes(f4((8, 5))))]), True, "key with a slash (np.savez allows)")


def _st_cases(c: _Cases, rng: np.random.Generator) -> None:
    w = rng.standard_normal((8, 5)).astype("<f4")
    H, buf = st_parts({"w": w})
    full, txt = st_raw(H, buf), json.dumps(H)
    hl = struct.unpack_from("<Q", full)[0]
    for cut in (0, 3, 7, 8, 8 + hl // 3, 8 + hl - 1, 8 + hl, 8 + hl + 1, len(full) - 80, len(full) - 1):
        c.add("st_truncated", ST, full[:cut], False, f"cut at byte {cut} of {len(full)}")
    for n in (len(full) - 7, 2 * len(full), 2**32, 2**62, 2**63, 2**64 - 1, hl - 8, hl - 1):
        c.add("st_header_len", ST, struct.pack("<Q", n) + full[8:], False, f"header length {n} (real {hl})")
    c.add("st_header_len", ST, st_raw(b"", buf), False, "header length 0, data follows")
    c.add("st_header_len", ST, struct.pack("<Q", 0), False, "header length 0, nothing else")
    c.add("st_header_len", ST, b"", False, "empty file")
    enc = txt.encode()
    for bad, note in ((b"\xff\xfe" + enc, "UTF-16 BOM bytes"), (enc.replace(b'"w"', b'"w\xff"'), "0xff in name"),
                      (enc.replace(b'"w"', b'"\xe9"'), "latin-1 name"), (enc.replace(b'"w"', b'"\xc3"'), "cut UTF-8 sequence"),
                      (enc.replace(b'"w"', b'"\xed\xa0\x80"'), "UTF-8 encoded surrogate"),
                      (enc.replace(b'"w"', b'"\xc0\xaf"'), "overlong UTF-8")):
        c.add("st_not_utf8", ST, st_raw(bad, buf), False, note)
    for bad in ("{", "not json", "{'w': 1}", '{"w": {"dtype": "F32",}}', txt + " trailing", "\ufeff" + txt,
                txt[:-1], "{}}", "// c\n" + txt, txt.replace("[8, 5]", "[NaN, 5]")):
        c.add("st_not_json", ST, st_raw(bad, buf), False, f"not JSON: {bad[:30]!r}")
    for bad in ("[]", "[1, 2]", "42", '"w"', "null", "true", "[" + txt + "]"):
        c.add("st_not_object", ST, st_raw(bad, buf), False, f"JSON {bad[:20]} is not an object")
    deep = "[" * 100000 + "]" * 100000
    for bad, note in (('{"w": %s}' % deep, "100000 nested lists as entry"), (deep, "100000 nested lists top level"),
                      ('{"a":' * 100000 + "1" + "}" * 100000, "100000 nested objects"),
                      (txt.replace("[8, 5]", "[" * 50000 + "8" + "]" * 50000), "nested lists in shape"),
                      ('{"__metadata__": {"a": %s}, %s' % (deep, txt[1:]), "nested lists in metadata")):
        c.add("st_deep_json", ST, st_raw(bad, buf), False, note)
    e, e2 = json.dumps(H["w"]), json.dumps({**H["w"], "data_offsets": [160, 320]})
    for bad, data, note in (('{"w": %s, "w": %s}' % (e, e), buf, "same entry twice"),
                            ('{"w": %s, "w": %s}' % (e, e2), buf + buf, "name twice, second half of buffer"),
                            ('{"__metadata__": {"a": "1"}, "__metadata__": {"a": "2"}, "w": %s}' % e, buf, "metadata twice"),
                            ('{"w": {"dtype": "F32", "dtype": "I32", "shape": [8, 5], "data_offsets": [0, 160]}}', buf,
                             "dtype key twice")):
        c.add("st_duplicate", ST, st_raw(bad, data), False, note)

    def bad(prefix: str, note: str, fn: Callable[[dict], Any], data: bytes = buf) -> None:
        h = copy.deepcopy(H)
        fn(h)
        c.add(prefix, ST, st_raw(h, data), False, note)

    def setf(field: str, value: Any) -> Callable[[dict], None]:
        return lambda h: h["w"].__setitem__(field, value)

    for f in ("dtype", "shape", "data_offsets"):
        bad("st_missing_field", f"entry lacks {f}", lambda h, f=f: h["w"].pop(f))
    for v in ({}, [], "F32", None, 5):
        bad("st_entry_type", f"entry is {v!r}", lambda h, v=v: h.__setitem__("w", v))
    for v in ("F8_E9", "Q4", "", "f32", "float32", "F32 ", "BF32", 32, None, ["F32"], {"F32": 1}, True):
        bad("st_dtype", f"dtype {v!r}", setf("dtype", v))
    for v in ([-1, 5], [8, -5], [-8, -5], [-1, -40]):
        bad("st_shape_negative", f"shape {v}", setf("shape", v))
    for v in ([8.0, 5], [8.5, 5], ["8", "5"], [True, 5], [None, 5], "8x5", {"0": 8}, [[8], 5], [8, 5.0], 40):
        bad("st_shape_type", f"shape {v!r}", setf("shape", v))
    for v in ([2**40, 2**40], [2**32, 2**32], [2**62, 4], [2**63 - 1, 2], [2**64, 1], [2**31, 2**33],
              [2**62 + 10, 4], [2**61 + 5, 8]):
        bad("st_shape_overflow", f"shape {v} with 160-byte offsets (product mod 2**64 may be 40)", setf("shape", v))
    for v in ([8, 6], [8, 4], [8, 5, 1], [1, 8, 5], [40], []):
        bad("st_size_mismatch" if math.prod(v) != 40 else "st_no_matrix", f"shape {v} for 160 bytes", setf("shape", v))
    for v in ([0, 161], [0, 2**64], [200, 360], [-160, 0], [-1, 159], [0.0, 160.0], ["0", "160"], [False, 160],
              [160, 0], [100, 60], [0], [0, 160, 160], [], "0-160", {"begin": 0}, None):
        bad("st_offsets", f"data_offsets {v!r}", setf("data_offsets", v))
    for v, n in (([0, 156], 156), ([0, 164], 164)):
        bad("st_size_mismatch", f"offsets {v} for [8, 5] F32", setf("data_offsets", v), (buf * 2)[:n])
    for dt in ("F64", "F16", "I64"):
        bad("st_size_mismatch", f"{dt} declared over F32-sized data", setf("dtype", dt))
    for v in ([], "x", {"a": 1}, {"a": {"b": "c"}}, None, {"a": None}, {"a": ["x"]}):
        bad("st_metadata", f"__metadata__ {v!r}", lambda h, v=v: h.__setitem__("__metadata__", v))

    def two(a: list[int], b: list[int], n: int, note: str, bshape: tuple = (8, 5)) -> None:
        h = {"a": {"dtype": "F32", "shape": [8, 5], "data_offsets": a},
             "b": {"dtype": "F32", "shape": list(bshape), "data_offsets": b}}
        c.add("st_layout", ST, st_raw(h, (buf * 3)[:n]), False, note)
    two([0, 160], [80, 240], 240, "offsets overlap")
    two([0, 160], [40, 120], 160, "second tensor inside the first", (4, 5))
    two([0, 160], [0, 160], 160, "both tensors share the same bytes")
    two([0, 160], [170, 330], 330, "10-byte hole between tensors")
    two([0, 160], [160, 320], 328, "8 trailing bytes after the last tensor")
    two([8, 168], [168, 328], 328, "buffer starts with an 8-byte gap")
    v1 = rng.standard_normal(5).astype("<f4")
    for t, note in (({"a": v1, "b": v1}, "only 1-D tensors"), ({"a": w.reshape(2, 4, 5)}, "only a 3-D tensor"),
                    ({"a": np.float32(1.5)}, "0-D scalar"), ({}, "no tensors"), ({"a": w.reshape(1, 2, 4, 5)}, "4-D"),
                    ({"a": w.astype("<i4")}, "I32 matrix (no float matrix)"), ({"a": (w > 0)}, "BOOL matrix"),
                    ({"a": w.astype("<i8")}, "I64 matrix"), ({"a": w.astype("u1")}, "U8 matrix")):
        c.add("st_no_matrix", ST, valid_safetensors(t), False, note)
    c.add("st_no_matrix", ST, st_raw({"__metadata__": {"a": "b"}}, b""), False, "only __metadata__")
    c.add("st_no_matrix", ST, st_raw({"a": {"dtype": "F8_E4M3", "shape": [8, 5], "data_offsets": [0, 40]}},
                                     buf[:40]), False, "F8_E4M3 matrix (no reader support expected)")
    for s in ((0, 5), (5, 0), (0, 0)):
        c.add("st_empty_matrix", ST, valid_safetensors({"w": np.zeros(s, "<f4")}), False, f"empty matrix {s}")
    for dt, val in (("<f4", np.nan), ("<f8", np.inf), ("<f2", -np.inf)):
        x = w.astype(dt)
        x[3, 2] = val
        c.add("st_nonfinite", ST, valid_safetensors({"w": x}), False, f"{val} in {dt}")
    x = w.copy()
    x[0, 0] = np.nan
    c.add("st_nonfinite", ST, valid_safetensors({"w": x}, bf16=["w"]), False, "NaN in bf16")
    c.add("st_nonfinite", ST, valid_safetensors({"a": w, "b": x}), False, "second matrix has NaN")


def _npy_cases(c: _Cases, rng: np.random.Generator) -> None:
    w = rng.standard_normal((8, 5)).astype("<f4")
    full = npy_bytes(w)
    hend = full.index(b"\n") + 1
    for bad in (b"\x93NUMPZ", b"\x00NUMPY", b"NUMPY\x93", b"\x00" * 6, b"\x93numpy"):
        c.add("npy_bad_magic", NPY, bad + full[6:], False, f"magic {bad!r}")
    c.add("npy_bad_magic", NPY, b"hello world\n" * 8, False, "text file")
    for cut in (0, 3, 7, 9, hend // 2, hend - 1, hend, hend + 80, len(full) - 1):
        c.add("npy_truncated", NPY, full[:cut], False, f"cut at byte {cut} of {len(full)}")
    for shape, dt in (((2**20, 2**20), "<f4"), ((2**31, 2**31), "<f8"), ((2**62, 4), "<f4"), ((2**64, 1), "<f4")):
        c.add("npy_huge_shape", NPY, npy_header(dt, False, shape) + full[hend:], False, f"declares {shape} in a tiny file")
    for shape in ((-1, 5), (8, -5), (-8, -5), (-1, -1)):
        c.add("npy_negative_shape", NPY, npy_header("<f4", False, shape) + full[hend:], False, f"shape {shape}")
    for text in ("[1, 2, 3]", "'descr'", "None", "{'descr': <f4>}", "garbage", "{'descr': '<f4', 'fortran_order': False, "
                 "'shape': (8, 5)", "__import__('os').system('echo pwned')",
                 "{'descr': '<f4', 'fortran_order': False, 'shape': __import__('os').getpid()}",
                 "{'descr': '<f4', 'fortran_order': (lambda: False)(), 'shape': (8, 5)}",
                 "{'descr': '<f4', 'shape': (8, 5)}", "{'descr': '<f4', 'fortran_order': False, 'shape': (8, 5), 'x': 1}",
                 "{'descr': '<f4', 'fortran_order': False, 'shape': [8, 5]}",
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (8.0, 5.0)}",
                 "{'descr': '<f4', 'fortran_order': False, 'shape': ('8', '5')}",
                 "{'descr': '<f3', 'fortran_order': False, 'shape': (8, 5)}",
                 "{'descr': 'xyz', 'fortran_order': False, 'shape': (8, 5)}",
                 "{'descr': 5, 'fortran_order': False, 'shape': (8, 5)}"):
        c.add("npy_bad_header", NPY, npy_header(0, 0, 0, override=text) + full[hend:], False, f"header {text[:40]!r}")
    c.add("npy_bad_header", NPY, npy_header(0, 0, 0, (2, 0), "{'descr': '<f4', 'fortran_order': False, 'shape': "
                                            + "(" * 100000 + ")" * 100000 + "}") + full[hend:], False, "100000 nested tuples")
    c.add("npy_bad_header", NPY, npy_header(0, 0, 0, (3, 0), b"{'descr': '<f4\xff', 'fortran_order': False, "
                                            b"'shape': (8, 5)}") + full[hend:], False, "v3 header not UTF-8")
    for ver in ((9, 9), (0, 0), (4, 0), (1, 1)):
        c.add("npy_version", NPY, npy_bytes(w, version=ver), False, f"unsupported version {ver}")
    pk = pickle.dumps([[1.0] * 5] * 8)
    c.add("npy_object", NPY, npy_header("|O", False, (8, 5)) + pk, False, "object dtype with pickled data (must not unpickle)")
    c.add("npy_object", NPY, npy_header("|O", False, (1,)) + pk, False, "object 1-D with pickled data")
    for a, note in ((np.zeros((8, 5), [("a", "<f4"), ("b", "<f4")]), "structured dtype"),
                    (w.astype("<c8"), "complex64"), (w.astype("<c16"), "complex128"), (w.astype("<i4"), "int32"),
                    (w.astype("<i8"), "int64"), (w.astype("u1"), "uint8"), (w > 0, "bool"),
                    (w.astype("<i8").view("<M8[s]"), "datetime64"), (w.astype("<U4"), "unicode strings"),
                    (w.reshape(2, 4, 5), "3-D"), (w.ravel(), "1-D"), (np.float32(2.0), "0-D"),
                    (np.zeros((0, 5), "<f4"), "empty (0, 5)"), (np.zeros((5, 0), "<f4"), "empty (5, 0)")):
        c.add("npy_not_matrix", NPY, npy_bytes(a), False, note)
    for dt, val in (("<f4", np.nan), ("<f8", np.inf), ("<f2", -np.inf)):
        x = w.astype(dt)
        x[1, 1] = val
        c.add("npy_nonfinite", NPY, npy_bytes(x), False, f"{val} in {dt}")
    for v in (0, 1, "False", None):
        c.add("npy_fortran_type", NPY, npy_header("<f4", v, (8, 5)) + full[hend:], False, f"fortran_order {v!r}")
    c.add("npy_header_len", NPY, full[:8] + struct.pack("<H", 65535) + full[10:], False, "v1 header length past EOF")
    v2 = npy_bytes(w, version=(2, 0))
    c.add("npy_header_len", NPY, v2[:8] + struct.pack("<I", 2**32 - 1) + v2[12:], False, "v2 header length 2**32-1")
    c.add("npy_header_len", NPY, full[:8] + struct.pack("<H", 0) + full[10:], False, "header length 0")
    for extra in (b"\x00", bytes(100), full):
        c.add("npy_trailing", NPY, full + extra, False, f"{len(extra)} trailing bytes (numpy tolerates; strict rejects)")


def _npz_cases(c: _Cases, rng: np.random.Generator) -> None:
    w = rng.standard_normal((8, 5)).astype("<f4")
    m, big = npy_bytes(w), npy_bytes(rng.standard_normal((20, 30)).astype("<f4"))
    stored = npz_bytes([("w.npy", m)])
    defl = npz_bytes([("w.npy", big)], zipfile.ZIP_DEFLATED)
    for mem, note in (([("readme.txt", b"hello\n")], "only a text member"),
                      ([("w.npy", m), ("readme.txt", b"hello\n")], "stray text member beside a matrix"),
                      ([("w", m)], "npy member without .npy"),
                      ([("w.npy.txt", m)], "npy data under a .txt name"),
                      ([("w.npy", m), ("w.npy", m)], "duplicate member name, same data"),
                      ([("w.npy", m), ("w.npy", npy_bytes(np.full((8, 5), np.nan, "<f4")))], "duplicate name, NaN copy"),
                      ([("w.npy", m[:-7])], "truncated npy member"), ([("w.npy", npy_header("|O", False, (1,))
                                                                        + pickle.dumps([1.0]))], "object member"),
                      ([("w.npy", npy_bytes(np.full((8, 5), np.inf, "<f4")))], "Inf member"),
                      ([("w.npy", npy_bytes(w.astype("<i4")))], "int member"), ([("w.npy", npy_bytes(w[0]))], "1-D member"),
                      ([("inner.npy", stored)], "npz nested in a .npy member"), ([("inner.npz", stored)], "nested npz member"),
                      ([], "empty zip")):
        c.add("npz_members", NPZ, npz_bytes(mem), False, note)
    c.add("npz_valid", NPZ, npz_bytes([("sub/", b""), ("sub/w.npy", m)]), True, "directory entry sub/ (skipped)")
    for comp in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        c.add("npz_huge_member", NPZ, npz_bytes([("w.npy", npy_header("<f4", False, (2**20, 2**20)) + m[-160:])], comp),
              False, f"member declares 2**40 elements (method {comp})")
    c.add("npz_not_zip", NPZ, m, False, "an .npy renamed .npz")
    c.add("npz_not_zip", NPZ, valid_safetensors({"w": w}), False, "a .safetensors renamed .npz")
    c.add("npz_not_zip", NPZ, rng.bytes(512), False, "random bytes")
    c.add("npz_not_zip", NPZ, b"PK\x03\x04" + rng.bytes(200), False, "zip signature then random bytes")
    c.add("npz_not_zip", NPZ, bytes(100), False, "zeros")
    c.add("npz_not_zip", NPZ, b"", False, "empty file")
    c.add("npz_truncated", NPZ, stored[:-10], False, "EOCD cut")
    c.add("npz_truncated", NPZ, stored[:_zip_entries(stored)[0][1]], False, "central directory missing")
    c.add("npz_truncated", NPZ, defl[:len(defl) // 2], False, "cut in the middle")
    start = _zip_data_offset(defl)
    csize = struct.unpack_from("<I", defl, _zip_entries(defl)[0][1] + 20)[0]
    for pos in (0, csize // 3, csize // 2):
        out = bytearray(defl)
        out[start + pos] ^= 0xFF
        c.add("npz_corrupt_deflate", NPZ, bytes(out), False, f"flipped byte {pos} of the deflate stream")
    for base, name in ((stored, "stored"), (defl, "deflated")):
        c.add("npz_bad_crc", NPZ, zip_patch(base, "crc", lambda v: ~v), False, f"wrong CRC in both headers ({name})")
        c.add("npz_bad_crc", NPZ, zip_patch(base, "crc", lambda v: v ^ 1, where="central"), False, f"central CRC only ({name})")
        c.add("npz_encrypted", NPZ, zip_patch(base, "flags", lambda v: v | 1), False, f"encryption flag set ({name})")
        for meth in (99, 12, 14, 8 if base is stored else 0):
            c.add("npz_method", NPZ, zip_patch(base, "method", lambda v, k=meth: k), False, f"method patched to {meth} ({name})")
        for f, fn, note in (("usize", lambda v: v - 1, "smaller"), ("usize", lambda v: v + 1, "larger"),
                            ("usize", lambda v: v * 2, "doubled"), ("usize", lambda v: 0, "zero"),
                            ("csize", lambda v: v + 100, "compressed larger")):
            c.add("npz_size_lie", NPZ, zip_patch(base, f, fn, where="central"), False, f"central {f} {note} ({name})")
        c.add("npz_size_lie", NPZ, zip_patch(base, "usize", lambda v: v - 16), False, f"usize smaller in both ({name})")
    out = bytearray(stored)
    struct.pack_into("<I", out, _zip_entries(stored)[0][1] + 42, 1)
    c.add("npz_bad_offset", NPZ, bytes(out), False, "central directory points 1 byte into the local header")
    c.add("npz_bomb", NPZ, zip_bomb(), False, "zip bomb: 256 MiB of float32 zeros in a small deflated member")


# --------------------------------------------------------------------------- random mutations
_JUNK: list[Any] = [-1, 0, 2**31, 2**63, 2**64, -2**63, 1.5, "", "F32", "x" * 300, None, True, [], {}, [0],
                    [0, 0], [1, 2, 3], [-1, 5], [2**40, 2**40], {"a": 1}]
_NPY_JUNK = ["'<f4'", "'<i4'", "'|O'", "'<c8'", "'>f8'", "'<f3'", "None", "True", "0", "(8, 5)", "(-1, 5)",
             "(1048576, 1048576)", "[8, 5]", "(8.0, 5)", "()", "(3, 4, 5)", "'x'", "{}", "__import__('os')"]


def _rand_matrix(rng: np.random.Generator, dts: tuple = ("<f2", "<f4", "<f8")) -> np.ndarray:
    shape = tuple(int(x) for x in rng.integers(1, 33, 2))
    return (rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3)).astype(rng.choice(dts))


def _rand_st(rng: np.random.Generator) -> bytes:
    t = {"w": _rand_matrix(rng)}
    if rng.random() < 0.3:
        t["bias"] = t["w"][0].copy()
    bf = ["w"] if rng.random() < 0.25 else []
    if bf:
        t = {k: v.astype("<f4") for k, v in t.items()}
    return valid_safetensors(t, {"k": "v"} if rng.random() < 0.3 else None, bf)


def _rand_npy(rng: np.random.Generator) -> bytes:
    a = _rand_matrix(rng)
    return npy_bytes(np.asfortranarray(a) if rng.random() < 0.5 else a,
                     version=[(1, 0), (2, 0), (3, 0)][rng.integers(3)])


def _rand_npz(rng: np.random.Generator) -> bytes:
    mem = [(f"m{i}.npy", _rand_npy(rng)) for i in range(rng.integers(1, 4))]
    return npz_bytes(mem, [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED][rng.integers(2)])


def _flip(rng: np.random.Generator, d: bytes) -> bytes:
    out = bytearray(d)
    for _ in range(rng.integers(1, 5)):
        out[rng.integers(len(out))] ^= int(rng.integers(1, 256))
    return bytes(out)


def _st_json(rng: np.random.Generator, pr: random.Random) -> bytes:
    h, buf = st_parts({"w": _rand_matrix(rng)})
    op = pr.choice(["set", "del", "add"])
    if op == "add":
        h[pr.choice(["w2", "__metadata__", "w"])] = pr.choice(_JUNK)
    else:
        f = pr.choice(["dtype", "shape", "data_offsets"])
        h["w"].pop(f) if op == "del" else h["w"].__setitem__(f, pr.choice(_JUNK))
    return st_raw(h, buf)


def _npy_hdr(rng: np.random.Generator, pr: random.Random) -> bytes:
    a = _rand_matrix(rng, ("<f4",))
    d = {"descr": "'<f4'", "fortran_order": "False", "shape": repr(a.shape)}
    key = pr.choice(["descr", "fortran_order", "shape", "extra"])
    if pr.random() < 0.2 and key != "extra":
        del d[key]
    else:
        d[key] = pr.choice(_NPY_JUNK)
    return npy_header(0, 0, 0, override="{" + ", ".join(f"'{k}': {v}" for k, v in d.items()) + "}") + a.tobytes()


def _npz_patch(rng: np.random.Generator, pr: random.Random) -> bytes:
    d = _rand_npz(rng)
    field = pr.choice(list(_ZF))
    val = pr.getrandbits(16 if field in ("flags", "method") else 32)
    return zip_patch(d, field, lambda v: val if pr.random() < 0.5 else v ^ (1 << pr.randrange(16)),
                     pr.randrange(len(_zip_entries(d))), pr.choice(["both", "local", "central"]))


def _random_cases(c: _Cases, rng: np.random.Generator, pr: random.Random, k: int) -> None:
    def st_len(r: np.random.Generator) -> bytes:
        d = _rand_st(r)
        n = struct.unpack_from("<Q", d)[0] + int(r.integers(-16, 17)) if r.random() < 0.7 else int(r.integers(0, 2**63))
        return struct.pack("<Q", max(n, 0)) + d[8:]

    kinds: list[tuple[str, str, Callable[[np.random.Generator], bytes], bool]] = [
        ("st_rand_valid", ST, _rand_st, True), ("npy_rand_valid", NPY, _rand_npy, True),
        ("npz_rand_valid", NPZ, _rand_npz, True),
        ("st_rand_flip", ST, lambda r: _flip(r, _rand_st(r)), False),
        ("st_rand_trunc", ST, lambda r: (lambda d: d[:r.integers(len(d))])(_rand_st(r)), False),
        ("st_rand_json", ST, lambda r: _st_json(r, pr), False), ("st_rand_len", ST, st_len, False),
        ("npy_rand_flip", NPY, lambda r: _flip(r, _rand_npy(r)), False),
        ("npy_rand_trunc", NPY, lambda r: (lambda d: d[:r.integers(len(d))])(_rand_npy(r)), False),
        ("npy_rand_header", NPY, lambda r: _npy_hdr(r, pr), False),
        ("npz_rand_flip", NPZ, lambda r: _flip(r, _rand_npz(r)), False),
        ("npz_rand_trunc", NPZ, lambda r: (lambda d: d[:r.integers(len(d))])(_rand_npz(r)), False),
        ("npz_rand_patch", NPZ, lambda r: _npz_patch(r, pr), False)]
    for prefix, suffix, make, want_valid in kinds:
        for _ in range(k):
            # redraw mutations the strict oracle still accepts (e.g. a flip inside float data)
            for _attempt in range(10):
                data = make(rng)
                ok = strict_accepts(suffix, data)
                if ok == want_valid:
                    break
            c.add(prefix, suffix, data, ok, "random valid file" if ok else f"random mutation ({prefix})")


def generate_cases(seed: int = 0, random_per_kind: int = 8) -> list[Case]:
    """All cases, deterministic in `seed`."""
    rng, c = np.random.default_rng(seed), _Cases()
    for fam in (_baselines, _st_cases, _npy_cases, _npz_cases):
        fam(c, rng)
    _random_cases(c, rng, random.Random(seed), random_per_kind)
    assert len({x.name for x in c}) == len(c)
    return list(c)


def write_cases(cases: Iterable[Case], directory: str | Path) -> list[tuple[Case, str]]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for case in cases:
        p = d / (case.name + case.suffix)
        p.write_bytes(case.data)
        out.append((case, str(p)))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DIRECTORY")
    written = write_cases(generate_cases(), sys.argv[1])
    for suffix, n in sorted(Counter(c.suffix for c, _ in written).items()):
        print(f"{suffix}: {n}")
    print(f"total: {len(written)} ({sum(c.valid for c, _ in written)} valid)")
