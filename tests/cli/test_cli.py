"""The `svdlora` console script, run for real in subprocesses."""
from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

from svdlora import spectral
from svdlora._extension import HAS_COMPILED

SCRIPT = os.path.join(os.path.dirname(sys.executable), "svdlora")


def run_cli(*args: str, check_exit: int = 0, env=None) -> subprocess.CompletedProcess:
    assert os.path.exists(SCRIPT), "the svdlora console script is not installed in this venv"
    proc = subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == check_exit, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def write_safetensors(path, tensors: dict) -> None:
    """Minimal writer (the format is 8-byte length + JSON header + raw little-endian data);
    'bf16:' names are stored as bfloat16 by truncating float32."""
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        if name.startswith("bf16:"):
            name = name[5:]
            raw = (np.ascontiguousarray(array, np.float32).view(np.uint32) >> 16).astype(np.uint16)
            dtype = "BF16"
        else:
            raw = np.ascontiguousarray(array)
            dtype = {np.float32: "F32", np.float64: "F64", np.int64: "I64"}[raw.dtype.type]
        data = raw.tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    blob = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + b"".join(chunks))


def low_rank_plus_noise(m, n, seed=0, rank=5):
    rng = np.random.default_rng(seed)
    A = 0.01 * rng.standard_normal((m, n))
    A += (rng.standard_normal((m, rank)) * np.arange(rank, 0, -1)) @ rng.standard_normal((rank, n))
    return A.astype(np.float32)


def error_ratio(A, U, S, Vh, k):
    A = A.astype(np.float64)
    optimum = np.sqrt(np.sum(np.linalg.svd(A, compute_uv=False)[k:] ** 2))
    return np.linalg.norm(A - (U * S) @ Vh) / optimum


# ----------------------------------------------------------------------------- svd


def test_svd_npy_roundtrip(tmp_path):
    A = low_rank_plus_noise(120, 80)
    np.save(tmp_path / "a.npy", A)
    out = tmp_path / "f.npz"
    proc = run_cli("svd", tmp_path / "a.npy", "-k", 7, "--seed", 3, "-o", out)
    assert "rank 7" in proc.stdout and "relative error" in proc.stdout and " ms" in proc.stdout
    with np.load(out, allow_pickle=False) as f:
        U, S, Vh = f["U"], f["S"], f["Vh"]
    assert U.shape == (120, 7) and S.shape == (7,) and Vh.shape == (7, 80)
    assert error_ratio(A, U, S, Vh, 7) <= 1.01
    assert np.allclose(U.T @ U, np.eye(7), atol=1e-5)
    reported = float(proc.stdout.split("= ")[1].split(",")[0])
    exact = np.linalg.norm(A - (U * S) @ Vh) / np.linalg.norm(A)
    assert reported == pytest.approx(exact, rel=1e-3)


def test_svd_safetensors_bf16_tensor_and_tol(tmp_path):
    A = low_rank_plus_noise(96, 64, seed=1)
    write_safetensors(tmp_path / "w.safetensors", {"bf16:layer.weight": A, "bias": A[0].copy()})
    out = tmp_path / "f.npz"
    proc = run_cli("svd", tmp_path / "w.safetensors", "--tensor", "layer.weight", "-k", 40,
                   "--tol", 0.05, "-o", out)
    with np.load(out) as f:
        S = f["S"]
    # the bulk beyond the 5 spikes is tiny, so the adaptive rank is small
    assert 5 <= S.shape[0] < 40 and f"rank {S.shape[0]}" in proc.stdout
    assert "BF16" in proc.stdout
    # the file was read as bfloat16: the singular values are those of the rounded matrix
    A_bf16 = ((A.view(np.uint32) >> 16) << 16).view(np.float32)
    assert np.allclose(S[:5], np.linalg.svd(A_bf16, compute_uv=False)[:5], rtol=1e-4)


def test_safetensors_reader_matches_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    from svdlora.cli.tensor_files import TensorFile

    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4),
              "b": np.linspace(0, 1, 10).reshape(2, 5), "c": np.arange(3, dtype=np.int64)}
    st.save_file(arrays, str(tmp_path / "x.safetensors"))
    f = TensorFile(str(tmp_path / "x.safetensors"))
    assert sorted(f.names) == ["a", "b", "c"]
    assert np.array_equal(f.load("a"), arrays["a"]) and np.array_equal(f.load("b"), arrays["b"])
    assert f.matrices() == [n for n in f.names if n in ("a", "b")]


# ----------------------------------------------------------------------------- spectrum


@pytest.fixture()
def noise_with_spike(tmp_path):
    rng = np.random.default_rng(0)
    m, n, sigma = 300, 600, 0.05
    noisy = sigma * rng.standard_normal((m, n))
    u, v = rng.standard_normal(m), rng.standard_normal(n)
    spiked = noisy + 4 * sigma * np.sqrt(n) * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))
    path = tmp_path / "weights.safetensors"
    write_safetensors(path, {"noise": noisy.astype(np.float32), "spiked": spiked.astype(np.float32),
                             "vector": np.ones(5, np.float32), "ids": np.zeros((1, 4), np.int64)})
    return path, sigma


def test_spectrum_table_and_json(tmp_path, noise_with_spike):
    path, sigma = noise_with_spike
    out = tmp_path / "s.json"
    proc = run_cli("spectrum", path, "--json", out)
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"noise", "spiked"}  # 1-D and integer tensors are skipped
    assert rows["noise"]["outliers"] == 0 and rows["spiked"]["outliers"] == 1
    assert rows["noise"]["mp_sigma"] == pytest.approx(sigma, rel=0.02)
    edge = spectral.marchenko_pastur_edges(300, 600, rows["spiked"]["mp_sigma"])[1]
    assert rows["spiked"]["bulk_edge"] == pytest.approx(edge)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("noise", "spiked"))]
    assert len(lines) == 2 and "300x600" in lines[0]


def test_spectrum_plot(tmp_path, noise_with_spike):
    pytest.importorskip("matplotlib")
    path, _ = noise_with_spike
    png = tmp_path / "s.png"
    run_cli("spectrum", path, "--tensor", "spiked", "--plot", png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_extra_names_it(tmp_path, noise_with_spike):
    path, _ = noise_with_spike
    code = ("import sys; sys.modules['matplotlib'] = None; from svdlora.cli import main; "
            f"sys.exit(main(['spectrum', {str(path)!r}, '--plot', {str(tmp_path / 'x.png')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "svdlora[cli]" in proc.stderr and "matplotlib" in proc.stderr
    assert not (tmp_path / "x.png").exists()


def test_spectrum_of_zero_and_tiny_matrices_has_no_fit_but_no_error(tmp_path):
    np.savez(tmp_path / "w.npz", zero=np.zeros((20, 30), np.float32),
             one=np.full((1, 1), 3.0), rank1=np.outer(np.arange(1, 21), np.ones(30)))
    proc = run_cli("spectrum", tmp_path / "w.npz", "--json", tmp_path / "s.json")
    rows = {r["name"]: r for r in json.loads((tmp_path / "s.json").read_text())}
    assert rows["zero"]["mp_sigma"] is None and rows["zero"]["outliers"] is None
    assert rows["rank1"]["mp_sigma"] is None
    assert rows["one"]["outliers"] == 0
    zero_line = next(line for line in proc.stdout.splitlines() if line.startswith("zero"))
    assert " - " in zero_line


# ----------------------------------------------------------------------------- compare


def test_compare_counts_intruders(tmp_path):
    rng = np.random.default_rng(5)
    base = {"a": low_rank_plus_noise(100, 120, seed=2, rank=20),
            "b": low_rank_plus_noise(80, 60, seed=3, rank=20)}
    u, v = rng.standard_normal(80), rng.standard_normal(60)
    spike = 2 * np.linalg.norm(base["b"], 2) * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))
    tuned = {"a": base["a"] + 1e-4 * rng.standard_normal((100, 120)).astype(np.float32),
             "b": base["b"] + spike.astype(np.float32)}
    np.savez(tmp_path / "base.npz", **base)
    write_safetensors(tmp_path / "tuned.safetensors", tuned)
    out = tmp_path / "c.json"
    proc = run_cli("compare", tmp_path / "base.npz", tmp_path / "tuned.safetensors",
                   "--k", 10, "--eps", 0.5, "--json", out)
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    assert rows["a"]["intruders"] == 0
    assert rows["b"]["intruders"] >= 1
    for name in ("a", "b"):
        expected = spectral.intruder_dimensions(base[name], tuned[name].astype(np.float32), 10, 0.5)
        assert rows[name]["intruders"] == expected
    assert "total intruder dimensions" in proc.stdout


def test_compare_skips_tensors_smaller_than_k(tmp_path):
    rng = np.random.default_rng(0)
    base = {"big": rng.standard_normal((40, 30)), "tiny": rng.standard_normal((2, 30))}
    np.savez(tmp_path / "a.npz", **base)
    np.savez(tmp_path / "b.npz", **base)
    proc = run_cli("compare", tmp_path / "a.npz", tmp_path / "b.npz", "--json", tmp_path / "c.json")
    rows = json.loads((tmp_path / "c.json").read_text())
    assert [r["name"] for r in rows] == ["big"] and rows[0]["intruders"] == 0
    assert "skipped" in proc.stderr and "tiny" in proc.stderr


# ----------------------------------------------------------------------------- demo


@pytest.mark.skipif(not HAS_COMPILED, reason="the demo needs torch and the compiled core")
def test_demo_quick(tmp_path):
    for module in ("sklearn", "matplotlib", "PIL", "tqdm"):
        pytest.importorskip(module)
    proc = run_cli("demo", "--quick", "--out", tmp_path / "demo")
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert results["quick"] is True
    for png in ("compression.png", "tradeoff.png"):
        assert (tmp_path / "demo" / png).read_bytes()[:4] == b"\x89PNG"
    comp = results["compression"]
    assert all(r["error_over_optimum"] <= 1.01 for r in comp)
    assert [r["psnr_db"] for r in comp] == sorted(r["psnr_db"] for r in comp)
    rows = results["digits"]["rows"]
    full = next(r for r in rows if r["method"] == "full fine-tuning")
    assert full["new_task_accuracy"] > 0.9
    assert all(r["trainable"] < full["trainable"] for r in rows if r is not full)
    # SVD-LoRA updates live in the span of the kept singular vectors: no new directions
    assert all(r["new_direction_intruders"] == 0 for r in rows if r["method"].startswith("SVD"))
    assert "## 1. Compression" in proc.stdout and "| method" in proc.stdout


@pytest.mark.skipif(HAS_COMPILED, reason="checks the message of an install without torch")
def test_demo_without_torch_names_the_extra(tmp_path):
    proc = run_cli("demo", "--out", tmp_path / "d", check_exit=2)
    assert "svdlora[demo]" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- bad input


def test_help_for_every_command():
    assert "svd" in run_cli("--help").stdout
    for command in ("svd", "spectrum", "compare", "demo"):
        assert "usage: svdlora " + command in run_cli(command, "--help").stdout


@pytest.fixture()
def files(tmp_path):
    np.save(tmp_path / "m.npy", low_rank_plus_noise(20, 30))
    np.save(tmp_path / "v.npy", np.ones(7, np.float32))
    np.save(tmp_path / "t.npy", np.ones((2, 3, 4), np.float32))
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "nan.npy", np.full((4, 4), np.nan, np.float32))
    np.savez(tmp_path / "two.npz", a=np.ones((3, 3)), b=np.ones((3, 3)))
    np.savez(tmp_path / "other.npz", a=np.ones((4, 3)), b=np.ones((3, 3)))
    with open(tmp_path / "model.safetensors", "wb") as f:  # a pickle under the wrong name
        pickle.dump({"weight": [1.0, 2.0]}, f)
    with open(tmp_path / "model.pt", "wb") as f:
        pickle.dump({"weight": [1.0, 2.0]}, f)
    (tmp_path / "short.safetensors").write_bytes(b"\x01\x02")
    (tmp_path / "dir.npy").mkdir()
    (tmp_path / "outdir.npz").mkdir()
    np.save(tmp_path / "quad.npy", np.ones((3, 3), np.longdouble))
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with open(tmp_path / "archive.npy", "wb") as f:
        np.savez(f, a=np.ones((3, 3)))
    for name, header in {
            "offsets": {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": ["a", "b"]}},
            "floats": {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0.5, 16.5]}},
            "dtype": {"w": {"dtype": ["F32"], "shape": [2, 2], "data_offsets": [0, 16]}},
            "huge": {"w": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}},
            "fshape": {"w": {"dtype": "F32", "shape": [2.5, 2], "data_offsets": [0, 16]}}}.items():
        blob = json.dumps(header).encode()
        (tmp_path / f"{name}.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob
                                                       + bytes(16))
    nested = b"[" * 100000 + b"]" * 100000
    (tmp_path / "nested.safetensors").write_bytes(struct.pack("<Q", len(nested)) + nested)
    return tmp_path


BAD_CALLS = [
    (("svd", "{d}/missing.npy", "-k", 2, "-o", "{d}/o.npz"), "file not found"),
    (("svd", "{d}/dir.npy", "-k", 2, "-o", "{d}/o.npz"), "not a regular file"),
    (("svd", "{d}/two.npz", "--tensor", "zz", "-k", 2, "-o", "{d}/o.npz"), "no tensor named 'zz'"),
    (("svd", "{d}/two.npz", "-k", 2, "-o", "{d}/o.npz"), "--tensor"),
    (("svd", "{d}/v.npy", "-k", 2, "-o", "{d}/o.npz"), "2-D"),
    (("svd", "{d}/t.npy", "-k", 2, "-o", "{d}/o.npz"), "2-D"),
    (("svd", "{d}/m.npy", "-k", 21, "-o", "{d}/o.npz"), "-k"),
    (("svd", "{d}/m.npy", "-k", 0, "-o", "{d}/o.npz"), "-k"),
    (("svd", "{d}/m.npy", "-k", 2, "--tol", 2, "-o", "{d}/o.npz"), "--tol"),
    (("svd", "{d}/m.npy", "-k", 2, "-o", "{d}/o.txt"), ".npz"),
    (("svd", "{d}/m.npy", "-k", 2, "-o", "{d}/nodir/o.npz"), "directory does not exist"),
    (("svd", "{d}/m.npy", "-k", "two", "-o", "{d}/o.npz"), "invalid int value"),
    (("svd", "{d}/m.npy", "-k", 2, "--seed", -1, "-o", "{d}/o.npz"), "seed"),
    (("svd", "{d}/obj.npy", "-k", 1, "-o", "{d}/o.npz"), "never unpickles"),
    (("svd", "{d}/nan.npy", "-k", 1, "-o", "{d}/o.npz"), "NaN"),
    (("svd", "{d}/m.npy", "-o", "{d}/o.npz"), "required: -k"),
    (("spectrum", "{d}/model.safetensors"), "not a safetensors file"),
    (("spectrum", "{d}/model.pt"), "never unpickles"),
    (("spectrum", "{d}/short.safetensors"), "too short"),
    (("spectrum", "{d}/v.npy"), "no 2-D"),
    (("spectrum", "{d}/two.npz", "--tensor", "nope"), "no tensor named 'nope'"),
    (("spectrum", "{d}/t.npy", "--tensor", "t"), "2-D"),
    (("spectrum", "{d}/m.npy", "--plot", "{d}/x.jpg"), ".png"),
    (("spectrum", "{d}/m.txt"), "file not found"),
    (("compare", "{d}/two.npz", "{d}/other.npz"), "has shape"),
    (("compare", "{d}/two.npz", "{d}/m.npy"), "no 2-D tensor name is shared"),
    (("compare", "{d}/two.npz", "{d}/two.npz", "--k", 4), "--k"),
    (("compare", "{d}/two.npz", "{d}/two.npz", "--eps", 0), "--eps"),
    (("compare", "{d}/two.npz", "{d}/model.safetensors"), "not a safetensors file"),
    (("svd", "{d}/m.npy", "-k", 2, "-o", "{d}/outdir.npz"), "is a directory"),
    (("svd", "{d}/m.npy", "-k", 2, "--n-iter", 10**9, "-o", "{d}/o.npz"), "--n-iter"),
    (("svd", "{d}/quad.npy", "-k", 2, "-o", "{d}/o.npz"), "float16/bfloat16/float32/float64"),
    (("svd", "{d}/archive.npy", "-k", 2, "-o", "{d}/o.npz"), "not a valid .npy array"),
    (("spectrum", "{d}/broken.npz"), "cannot read"),
    (("spectrum", "{d}/quad.npy"), "no 2-D floating-point"),
    (("spectrum", "{d}/offsets.safetensors"), "malformed header"),
    (("spectrum", "{d}/floats.safetensors"), "malformed header"),
    (("spectrum", "{d}/dtype.safetensors"), "malformed header"),
    (("spectrum", "{d}/fshape.safetensors"), "malformed header"),
    (("spectrum", "{d}/huge.safetensors"), "inconsistent offsets"),
    (("spectrum", "{d}/nested.safetensors"), "nested too deeply"),
    (("demo", "--out", "{d}/m.npy"), "not a directory"),
    (("demo", "--out", ""), "--out"),
    (("frobnicate",), "invalid choice"),
]


@pytest.mark.parametrize("args, message", BAD_CALLS, ids=[" ".join(map(str, a[:2])) + " " + m
                                                           for a, m in BAD_CALLS])
def test_bad_input_exits_2_with_one_line(files, args, message):
    args = [str(a).format(d=files) for a in args]
    proc = run_cli(*args, check_exit=2)
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, err
    assert message in err
    assert err.startswith("svdlora")
    assert not (files / "o.npz").exists()


def test_output_equal_to_input_is_refused_and_the_input_kept(tmp_path):
    A = low_rank_plus_noise(20, 30)
    np.savez(tmp_path / "a.npz", A=A)
    proc = run_cli("svd", tmp_path / "a.npz", "-k", 2, "-o", tmp_path / "a.npz", check_exit=2)
    assert "is the input file" in proc.stderr
    with np.load(tmp_path / "a.npz") as f:
        assert np.array_equal(f["A"], A)


def test_written_files_get_ordinary_permissions(tmp_path):
    np.save(tmp_path / "m.npy", low_rank_plus_noise(20, 30))
    run_cli("svd", tmp_path / "m.npy", "-k", 2, "-o", tmp_path / "o.npz")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "o.npz").stat().st_mode & 0o777 == 0o666 & ~umask
