"""Fuzz suite of the weight-file readers: hundreds of malformed and adversarial files through
`svdlora spectrum`, `svd` and `compare`, each run in a child process with a memory limit and a
timeout; every run must end in exit 2 with one line on stderr, or in a correct result."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import malformed_files as mf  # noqa: E402

from svdlora.cli.errors import UsageError  # noqa: E402
from svdlora.cli.tensor_files import TensorFile  # noqa: E402

DRIVER = os.path.join(os.path.dirname(__file__), "fuzz_driver.py")
#: "a few seconds on a file under 1 MB, whatever its header says"
MAX_SECONDS = 5.0
#: memory a run may add above the imported interpreter: the inputs here hold < 1 MB of data
MAX_EXTRA_MB = 300.0
COMMANDS = ("spectrum", "svd", "compare")


def command_argv(command: str, path: str, out_dir: str, run_id: str):
    if command == "spectrum":
        return ["spectrum", path, "--top", "3", "--json", os.path.join(out_dir, f"{run_id}.json")]
    if command == "svd":
        return ["svd", path, "-k", "1", "-o", os.path.join(out_dir, f"{run_id}.npz")]
    return ["compare", path, path, "--k", "1"]


@pytest.fixture(scope="module")
def driver():
    """One fuzz driver for the module: it imports svdlora once and forks a child per run."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, DRIVER, "--serve"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    yield proc
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0


def run_driver(driver, runs):
    """Results of the driver's forked runs, by run id."""
    driver.stdin.write(json.dumps(runs) + "\n")
    driver.stdin.flush()
    results = {}
    for _ in runs:
        line = driver.stdout.readline()
        assert line.startswith("{"), f"fuzz driver died after {len(results)} runs: {line!r}"
        result = json.loads(line)
        results[result["id"]] = result
    assert sorted(results) == sorted(run["id"] for run in runs)
    return results


def assert_clean_exit(result, command: str) -> None:
    """Exit 0, or exit 2 with exactly one line `svdlora <command>: error: ...`; in bounded
    time, within the memory limit, never a traceback."""
    assert not result["timed_out"], result
    assert result["seconds"] <= MAX_SECONDS, result
    assert "Traceback" not in result["stderr"], result["stderr"]
    assert result["exit"] in (0, 2), result
    if result["exit"] == 2:
        lines = [line for line in result["stderr"].splitlines() if line.strip()]
        assert len(lines) == 1, result["stderr"]
        assert lines[0].startswith(f"svdlora {command}: error: "), lines[0]
    assert result["peak_extra_mb"] is not None, result  # the child reported its peak
    assert result["peak_extra_mb"] <= MAX_EXTRA_MB, result


def expected_spectra(case):
    """(shape, top-3 singular values) of every matrix, from the strict reference reader."""
    out = []
    for array in mf.strict_arrays(case.suffix, case.data):
        if array.ndim == 2:
            S = np.linalg.svd(array.astype(np.float64), compute_uv=False)
            out.append((list(array.shape), S[:3]))
    return sorted(out, key=lambda item: (item[0], -item[1][0]))


def assert_correct_spectrum(case, json_path: str) -> None:
    """What `spectrum` wrote for a file it accepted matches the reference reader + LAPACK."""
    with open(json_path) as f:
        rows = json.load(f)
    got = sorted(((row["shape"], np.array(row["top_singular_values"])) for row in rows),
                 key=lambda item: (item[0], -item[1][0]))
    want = expected_spectra(case)
    assert [shape for shape, _ in got] == [shape for shape, _ in want], (got, want)
    for (_, S_got), (_, S_want) in zip(got, want):
        # both sides factorise the same float64 copy of the data: rounding-level agreement
        np.testing.assert_allclose(S_got, S_want, rtol=1e-10, atol=1e-12 * S_want[0])


@pytest.mark.heavy
def test_fuzz_corpus_through_three_commands(driver, tmp_path):
    cases = mf.generate_cases(seed=0)
    written = mf.write_cases(cases, tmp_path / "cases")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    runs, meta = [], {}
    for case, path in written:
        for command in COMMANDS:
            run_id = f"{case.name}:{command}"
            runs.append({"id": run_id, "argv": command_argv(command, path, str(out_dir), run_id)})
            meta[run_id] = (case, command)
    results = run_driver(driver, runs)
    failures, verified = [], 0
    for run_id, result in results.items():
        case, command = meta[run_id]
        try:
            assert_clean_exit(result, command)
            if case.valid and "huge finite" not in case.note and command != "svd":
                # (svd may ask for --tensor when a valid file holds several matrices)
                assert result["exit"] == 0, result
            if not case.valid:
                assert result["exit"] == 2, result  # a malformed file must not "succeed"
            if command == "spectrum" and result["exit"] == 0:
                assert_correct_spectrum(case, os.path.join(out_dir, f"{run_id}.json"))
                verified += 1
        except AssertionError as exc:
            failures.append(f"{run_id} ({case.note}): {exc}")
    summary = {"cases": len(cases), "runs": len(results), "failures": len(failures),
               "valid_cases": sum(c.valid for c in cases), "spectra_checked": verified,
               "peak_extra_mb": max(r["peak_extra_mb"] for r in results.values()),
               "slowest_s": max(r["seconds"] for r in results.values())}
    print("fuzz summary:", json.dumps(summary))
    if os.environ.get("SVDLORA_FUZZ_REPORT"):
        with open(os.environ["SVDLORA_FUZZ_REPORT"], "w") as f:
            json.dump(summary, f, indent=2)
    assert not failures, "\n".join(failures[:20])
    assert summary["cases"] >= 300
    assert verified >= summary["valid_cases"] - sum("huge finite" in c.note for c in cases)


# ------------------------------------------------- one named test per reported failure


def _npz_with(members, compression=zipfile.ZIP_DEFLATED) -> bytes:
    return mf.npz_bytes(members, compression)


def _matrix_npy(shape=(6, 4), seed=0) -> bytes:
    return mf.npy_bytes(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _run_named(driver, tmp_path, suffix: str, data: bytes, commands=COMMANDS):
    path = tmp_path / f"case{suffix}"
    path.write_bytes(data)
    runs = [{"id": c, "argv": command_argv(c, str(path), str(tmp_path), c)} for c in commands]
    results = run_driver(driver, runs)
    for command in commands:
        assert_clean_exit(results[command], command)
    return results


def _assert_error(results, fragment: str) -> None:
    for command, result in results.items():
        assert result["exit"] == 2, (command, result)
        assert fragment in result["stderr"], (command, result["stderr"])


def test_npz_member_that_is_not_npy(driver, tmp_path):
    data = _npz_with([("w.npy", _matrix_npy()), ("readme.txt", b"hello")])
    _assert_error(_run_named(driver, tmp_path, ".npz", data), "'readme.txt' is not an .npy array")


def test_npz_with_only_non_npy_members(driver, tmp_path):
    data = _npz_with([("notes.txt", b"x" * 10), ("sub/", b"")])
    _assert_error(_run_named(driver, tmp_path, ".npz", data), "is not an .npy array")


def test_npz_directory_entry_is_skipped(driver, tmp_path):
    data = _npz_with([("sub/", b""), ("w.npy", _matrix_npy())])
    results = _run_named(driver, tmp_path, ".npz", data)
    assert all(r["exit"] == 0 for r in results.values()), results


def test_npy_renamed_npz(driver, tmp_path):
    _assert_error(_run_named(driver, tmp_path, ".npz", _matrix_npy()), "cannot read")


def test_npz_member_with_corrupt_deflate_data(driver, tmp_path):
    data = bytearray(_npz_with([("w.npy", _matrix_npy((64, 64)))]))
    start = mf._zip_data_offset(bytes(data)) + 40
    data[start:start + 24] = bytes(24)
    _assert_error(_run_named(driver, tmp_path, ".npz", bytes(data)), "member 'w.npy'")


def test_npz_member_with_bad_crc(driver, tmp_path):
    data = _npz_with([("w.npy", _matrix_npy())], zipfile.ZIP_STORED)
    data = mf.zip_patch(data, "crc", lambda v: v ^ 0xFFFF)
    _assert_error(_run_named(driver, tmp_path, ".npz", data), "member 'w.npy'")


def test_npz_encrypted_member(driver, tmp_path):
    data = mf.zip_patch(_npz_with([("w.npy", _matrix_npy())]), "flags", lambda v: v | 0x1)
    _assert_error(_run_named(driver, tmp_path, ".npz", data), "is encrypted")


def test_npz_unsupported_compression_method(driver, tmp_path):
    data = mf.zip_patch(_npz_with([("w.npy", _matrix_npy())]), "method", lambda v: 99)
    _assert_error(_run_named(driver, tmp_path, ".npz", data), "compression method")


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_header_declaring_2_to_the_40_elements_in_a_tiny_file(driver, tmp_path, suffix):
    header = mf.npy_header("<f4", False, (2**20, 2**20))
    npy = header + bytes(64)
    data = npy if suffix == ".npy" else _npz_with([("w.npy", npy)])
    results = _run_named(driver, tmp_path, suffix, data)
    _assert_error(results, "header declares")
    assert all(r["peak_extra_mb"] < 50 for r in results.values()), results


def test_npz_zip_bomb(driver, tmp_path):
    data = mf.zip_bomb((8192, 8192))  # 256 MB of float32 zeros in a few hundred KB
    assert len(data) < 2**20
    results = _run_named(driver, tmp_path, ".npz", data)
    _assert_error(results, "zip bomb")
    assert all(r["peak_extra_mb"] < 50 for r in results.values()), results


def test_float64_entries_near_the_maximum(driver, tmp_path):
    rng = np.random.default_rng(7)
    B = rng.standard_normal((40, 30))
    # Entries of 1e300: squares overflow, singular values do not: every command works.
    results = _run_named(driver, tmp_path, ".npy", mf.npy_bytes(1e300 * B))
    assert all(r["exit"] == 0 for r in results.values()), results
    # Entries near float64's maximum: the singular values themselves exceed the range, so
    # spectrum and svd refuse with a reason ...
    huge = 0.5 * np.finfo(np.float64).max * rng.uniform(-1, 1, (40, 30))
    results = _run_named(driver, tmp_path, ".npy", mf.npy_bytes(huge), ("spectrum", "svd"))
    _assert_error(results, "beyond the float64 range")
    # ... while compare, whose cosines and ratios are scale-free, gives the exact answer for
    # a matrix against itself: every vector matched, no change.
    path = tmp_path / "huge.npy"
    np.save(path, huge)
    proc = subprocess.run([sys.executable, "-m", "svdlora.cli", "compare", str(path), str(path),
                           "--k", "3", "--json", str(tmp_path / "c.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    row = json.loads((tmp_path / "c.json").read_text())[0]
    assert row["intruders"] == 0 and row["relative_change"] == 0.0
    assert row["min_max_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert row["subspace_overlap"] == pytest.approx(1.0, abs=1e-12)


def test_spectrum_of_huge_float64_matrix_is_correct(tmp_path):
    rng = np.random.default_rng(8)
    B = rng.standard_normal((40, 30))
    np.save(tmp_path / "w.npy", np.ldexp(B, 990))
    from svdlora import spectral
    S = spectral.singular_values(np.ldexp(B, 990))
    np.testing.assert_allclose(np.ldexp(S, -990), np.linalg.svd(B, compute_uv=False), rtol=1e-12)
    proc = subprocess.run([sys.executable, "-m", "svdlora.cli", "spectrum", str(tmp_path / "w.npy"),
                           "--json", str(tmp_path / "s.json")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    row = json.loads((tmp_path / "s.json").read_text())[0]
    assert row["top_singular_values"][0] == pytest.approx(S[0], rel=1e-12)
    assert row["effective_rank"] == pytest.approx(spectral.effective_rank(np.ldexp(S, -990)), rel=1e-9)


# ------------------------------------------------------------ hypothesis: safetensors headers

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

_DTYPES = ["F32", "F64", "F16", "BF16", "I64", "I8", "BOOL", "F8_E4M3", "", "f32", 7, None]
_dims = st.one_of(st.integers(-3, 12), st.integers(2**31, 2**64), st.floats(allow_nan=True),
                  st.text(max_size=3), st.booleans(), st.none())
_entry = st.fixed_dictionaries(
    {"dtype": st.sampled_from(_DTYPES),
     "shape": st.one_of(st.lists(_dims, max_size=3), st.integers(), st.none()),
     "data_offsets": st.one_of(st.lists(st.integers(-5, 2**40), min_size=0, max_size=3),
                               st.tuples(st.integers(0, 400), st.integers(0, 400)).map(list))})
_header = st.dictionaries(st.text(min_size=0, max_size=6), st.one_of(_entry, st.integers(),
                                                                    st.text(max_size=4)),
                          max_size=4)


@hypothesis.settings(max_examples=300, deadline=None, derandomize=True)
@hypothesis.given(header=_header, data_len=st.integers(0, 512),
                  length_delta=st.sampled_from([0, 0, 0, -1, 1, 2**40]))
def test_safetensors_header_fuzz(tmp_path_factory, header, data_len, length_delta):
    """Any header either opens, with every tensor then loading at its declared shape or
    raising UsageError, or is refused with UsageError.  Nothing else may escape."""
    blob = json.dumps(header).encode()
    data = struct.pack("<Q", max(0, len(blob) + length_delta)) + blob + bytes(data_len)
    path = tmp_path_factory.mktemp("st") / "h.safetensors"
    path.write_bytes(data)
    try:
        tensors = TensorFile(str(path))
    except UsageError as exc:
        assert "\n" not in str(exc)
        return
    for name in tensors.names:
        try:
            array = tensors.load(name)
        except UsageError:
            continue
        assert array.shape == tensors.shape(name)
        assert array.nbytes <= 2 * data_len  # bfloat16/float16 widen to float32


def test_generator_labels_agree_with_the_reference_reader():
    """Each hand-written case's label (malformed or not) is what the strict reference reader
    says, so the corpus test's "must fail" and "must succeed" are about the files' contents."""
    wrong = [c.name for c in mf.generate_cases(seed=0)
             if mf.strict_accepts(c.suffix, c.data) != c.valid]
    assert not wrong, wrong
