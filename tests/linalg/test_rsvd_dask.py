"""rsvd and pca on dask arrays: the threaded scheduler and a real dask.distributed
LocalCluster of worker processes; accuracy against a full SVD, parity with the in-memory
result for the same seed, a lazily generated matrix far larger than a worker's memory limit,
and bad input refused before any task runs."""
from __future__ import annotations

import numpy as np
import pytest

import svdlora
from svdlora import spectral
from helpers import case_seed, matrix_with_spectrum, spectrum

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
sp = pytest.importorskip("scipy.sparse")

CHUNKINGS = {"rows": (300, -1), "rows+cols": (250, 70), "ragged": ((100, 700, 400, 300), (50, 130, 20))}
COMPILED = svdlora.build_info()["compiled"]
needs_core = pytest.mark.skipif(not COMPILED, reason="needs the compiled core")


def _matrix(shape, dtype, *params) -> np.ndarray:
    m, n = shape
    s = spectrum("i^-1", min(m, n))
    return matrix_with_spectrum(m, n, s, seed=case_seed("dask", m, n, *params)).astype(dtype)


def _chunks(name: str, shape):
    rows, cols = CHUNKINGS[name]
    if shape[0] < shape[1]:  # wide: the same pattern on the transposed layout
        rows, cols = cols, rows
    return (rows, cols)


def _assert_parity(result, reference, dtype, A, uncentred=None) -> None:
    """Same factors to rounding: the two runs differ only in the order of the sums inside
    each product (chunk by chunk here), an error of a few eps * ||A||.  Singular values move by
    at most that; singular vectors by that over the relative gap to the neighbouring values
    (Wedin), which is what the vector tolerance allows.  With implicit centring the products
    are those of the uncentred matrix, so their rounding scales with its norm instead."""
    eps = float(np.finfo(dtype).eps)
    s = np.linalg.svd(np.asarray(A, dtype=np.float64), compute_uv=False)
    k = len(reference[1])
    gaps = np.abs(np.diff(s[:k + 1])) / s[0]
    scale = 1.0 if uncentred is None else np.linalg.norm(uncentred, 2) / s[0]
    noise = 64 * eps * scale
    np.testing.assert_allclose(result[1], reference[1], atol=noise * s[0], rtol=0)
    for got, want in ((result[0], reference[0]), (result[2], reference[2])):
        np.testing.assert_allclose(got, want, atol=noise / max(gaps.min(), noise), rtol=0)
    if len(result) == 4:  # PCA's mean
        np.testing.assert_allclose(result[3], reference[3], rtol=0,
                                   atol=64 * eps * np.abs(reference[3]).max())


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("shape", [(1500, 200), (200, 1500)], ids=["tall", "wide"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# chunk GEMMs: NumPy's (the default, or asked for) or the compiled core's
@pytest.mark.parametrize("backend", ["auto", "numpy", pytest.param("compiled", marks=needs_core)])
def test_threaded_scheduler_matches_in_memory_and_the_bar(chunking, shape, dtype, backend):
    A = _matrix(shape, dtype, chunking)
    D = da.from_array(A, chunks=_chunks(chunking, shape))
    result = svdlora.rsvd(D, 12, seed=7, backend=backend)
    _assert_parity(result, svdlora.rsvd(A, 12, seed=7, backend="numpy"), dtype, A)
    s = np.linalg.svd(A.astype(np.float64), compute_uv=False)
    U, S, Vh = (x.astype(np.float64) for x in result)
    assert np.linalg.norm(A - (U * S) @ Vh) <= 1.01 * np.sqrt(np.sum(s[12:] ** 2))
    assert np.abs(U.T @ U - np.eye(12)).max() < 100 * np.finfo(dtype).eps
    assert np.all(U[np.abs(U).argmax(axis=0), np.arange(12)] > 0)  # the sign convention


def test_backend_compiled_means_compiled_chunk_products():
    A = _matrix((600, 90), np.float32, "compiled")
    D = da.from_array(A, chunks=(200, 45))
    if not COMPILED:
        with pytest.raises(ImportError, match=r"backend='compiled'\) needs (PyTorch|svdlora's compiled core)"):
            svdlora.rsvd(D, 5, backend="compiled")
        return
    _assert_parity(svdlora.rsvd(D, 5, seed=2, backend="compiled"),
                   svdlora.rsvd(A, 5, seed=2, backend="numpy"), np.float32, A)


def _spectrum_case(name: str, m: int, n: int) -> np.ndarray:
    if name == "zero":
        return np.zeros((m, n), np.float32)
    s = {"i^-1": spectrum("i^-1", n), "spike": np.r_[1e4, spectrum("i^-1", n - 1)],
         "rank 3": np.array([3.0, 2.0, 1.0])}[name]
    return matrix_with_spectrum(m, n, s, seed=case_seed("dask-orth", name)).astype(np.float32)


@pytest.mark.parametrize("name, falls_back", [("i^-1", False), ("spike", True),
                                              ("rank 3", True), ("zero", True)])
def test_long_side_panels_use_cholesky_qr_and_fall_back_to_tsqr(name, falls_back, monkeypatch):
    """The long-side panels are orthonormalised by CholeskyQR; a panel whose Gram is singular
    (rank below l, zero) or too ill-conditioned for float32 (a spike 10^4 above the rest)
    goes to Dask's TSQR instead, and the factors stay accurate and orthonormal."""
    from svdlora.linalg.backends import dask_subspace
    tsqr_calls = []
    real_tsqr = dask_subspace._tsqr
    monkeypatch.setattr(dask_subspace, "_tsqr", lambda Y: tsqr_calls.append(Y.shape) or real_tsqr(Y))
    m, n, k = 1200, 150, 10
    A = _spectrum_case(name, m, n)
    U, S, Vh = svdlora.rsvd(da.from_array(A, chunks=(300, -1)), k, seed=1)
    assert bool(tsqr_calls) == falls_back
    eps = float(np.finfo(np.float32).eps)
    for factor in (U, Vh.T):
        assert np.abs(factor.T @ factor - np.eye(k)).max() < 100 * eps
    s = np.linalg.svd(A.astype(np.float64), compute_uv=False)
    err = np.linalg.norm(A - (U.astype(np.float64) * S) @ Vh)
    # the bar, or rounding where the optimum is zero (rank 3, zero)
    assert err <= 1.01 * np.sqrt(np.sum(s[k:] ** 2)) + 64 * eps * max(s[0], 1e-30)


def test_block_krylov_on_request_matches_in_memory():
    A = _matrix((1500, 200), np.float64, "krylov")
    D = da.from_array(A, chunks=(250, 70))
    _assert_parity(svdlora.rsvd(D, 12, seed=3, method="krylov"),
                   svdlora.rsvd(A, 12, seed=3, method="krylov", backend="numpy"), np.float64, A)


def test_pca_centres_implicitly_and_sparse_chunks_work():
    for shape, chunks in (((1200, 150), (200, 50)), ((150, 1200), (50, 200))):
        X = _matrix(shape, np.float64, "pca") + 5.0  # wide: the centring is on the long side
        D = da.from_array(X, chunks=chunks)
        _assert_parity(svdlora.pca(D, 6, seed=1), svdlora.pca(X, 6, seed=1, backend="numpy"),
                       np.float64, X - X.mean(axis=0), uncentred=X)
    counts = sp.random(1200, 300, density=0.02, format="csr", rng=case_seed("dask-sparse"))
    sparse_chunks = da.from_array(counts, chunks=(300, 300), asarray=False)
    _assert_parity(svdlora.rsvd(sparse_chunks, 5, seed=2), svdlora.rsvd(counts, 5, seed=2),
                   np.float64, counts.toarray())
    integer = da.from_array(np.random.default_rng(3).poisson(1.0, (800, 120)), chunks=(200, 120))
    assert svdlora.rsvd(integer, 4, seed=0).S.dtype == np.float64


@pytest.mark.parametrize("shape", [(900, 120), (120, 900)], ids=["tall", "wide"])
def test_compute_false_gives_factors_chunked_like_a(shape):
    A = _matrix(shape, np.float64, "compute")
    D = da.from_array(A, chunks=(200, 90) if shape[0] > shape[1] else (90, 200))
    eager = svdlora.rsvd(D, 7, seed=5)
    lazy = svdlora.rsvd(D, 7, seed=5, compute=False)
    assert isinstance(lazy.U, da.Array) and isinstance(lazy.Vh, da.Array)
    assert lazy.U.chunks[0] == D.chunks[0] and lazy.Vh.chunks[1] == D.chunks[1]
    assert isinstance(lazy.S, np.ndarray)
    for got, want in zip(lazy, eager):  # the same run: bit for bit
        np.testing.assert_array_equal(np.asarray(got), want)
    centred = svdlora.pca(D, 4, seed=5, compute=False)
    np.testing.assert_array_equal(centred.U.compute(), svdlora.pca(D, 4, seed=5).U)
    with pytest.raises(ValueError, match="compute=False applies to a dask array A only"):
        svdlora.rsvd(A, 3, compute=False)
    with pytest.raises(ValueError, match="compute=False applies to a dask array X only"):
        svdlora.pca(A, 3, compute=False)
    with pytest.raises(TypeError, match="compute must be a bool"):
        svdlora.rsvd(D, 3, compute="no")


@pytest.fixture
def cluster_client():
    """A real LocalCluster: 2 worker processes, 1 thread each, 200 MB memory limit.  One per
    test, so that no later test computes on it as the default client by accident."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit="200MB", dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            yield client


def _cluster_parity(backend: str) -> None:
    A = _matrix((2000, 300), np.float32, "cluster")
    D = da.from_array(A, chunks=(250, 150))
    _assert_parity(svdlora.rsvd(D, 10, seed=4, backend=backend),
                   svdlora.rsvd(A, 10, seed=4, backend="numpy"), np.float32, A)
    _assert_parity(svdlora.pca(D, 5, seed=4, backend=backend),
                   svdlora.pca(A, 5, seed=4, backend="numpy"),
                   np.float32, A - A.mean(axis=0), uncentred=A)


def _workers_with(client, module: str) -> list:
    found = client.run(lambda: __import__("sys").modules.get(module) is not None)
    return [worker for worker, has in found.items() if has]


def test_local_cluster_matches_in_memory(cluster_client):
    _cluster_parity("auto")
    # with NumPy's chunk GEMMs (the default) the tasks carry numpy/dask functions only: the
    # workers never import svdlora (nor torch), which keeps them within this cluster's 200 MB
    assert _workers_with(cluster_client, "svdlora") == []


@needs_core
def test_local_cluster_with_compiled_chunk_products():
    # its own cluster: its workers import svdlora and torch, too heavy for the 200 MB one
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            _cluster_parity("compiled")
            assert _workers_with(client, "torch")  # the products ran there, on torch


@pytest.mark.heavy
def test_matrix_far_larger_than_a_worker_memory_limit(cluster_client):
    from distributed.diagnostics import MemorySampler

    # 300000 x 500 float32 = 600 MB, generated lazily chunk by chunk: 3x one worker's limit.
    # Gaussian noise plus a rank-one spike, so the expected spectrum is known: the spike at
    # its BBP location, then the Marchenko-Pastur bulk edge.
    m, n, theta, rows = 300_000, 500, 3000.0, 5_000
    noise = da.random.default_rng(5).standard_normal((m, n), chunks=(rows, n), dtype=np.float32)
    u = da.ones((m, 1), chunks=(rows, 1), dtype=np.float32) / np.float32(np.sqrt(m))
    v = np.zeros((1, n), np.float32)
    v[0, 0] = 1.0
    A = noise + np.float32(theta) * u * v
    sampler = MemorySampler()
    with sampler.sample("rsvd", interval=0.1):
        # the default NumPy chunk GEMMs: torch alone would take most of a 200 MB worker
        U, S, Vh = svdlora.rsvd(A, 3, seed=0)
    peak = max(value for _, value in sampler.samples["rsvd"])  # both workers together
    print(f"dask rsvd of {A.nbytes / 2**20:.0f} MB on 2 x 200 MB workers: peak "
          f"{peak / 2**20:.0f} MB in the cluster, S = {S}")
    assert peak < 2 * 200 * 2**20
    assert S[0] == pytest.approx(spectral.spike_singular_value(theta, m, n), rel=5e-3)
    edge = np.sqrt(m) + np.sqrt(n)
    assert 0.9 * edge < S[2] <= S[1] < 1.01 * edge
    assert abs(Vh[0, 0]) > 0.99  # the spike's direction


def test_bad_dask_input_is_refused_before_any_task_runs():
    calls = []

    def tracked(block):
        calls.append(1)
        return block

    A = da.from_array(np.ones((40, 30)), chunks=(10, 30)).map_blocks(tracked)
    unknown_rows = A[A[:, 0] > 0]
    calls.clear()  # dask calls the function once on an empty block to infer its output
    with pytest.raises(ValueError, match="A must have shape \\(m, n\\), got a 3-D dask array"):
        svdlora.rsvd(da.ones((4, 40, 30)), 2)
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        svdlora.rsvd(unknown_rows, 2)
    with pytest.raises(ValueError, match="rank must satisfy 1 <= rank <= min\\(m, n\\) = 30"):
        svdlora.rsvd(A, 31)
    with pytest.raises(TypeError, match="A has complex dtype"):
        svdlora.rsvd(A.astype(np.complex64), 2)
    with pytest.raises(ValueError, match="backend='cusolver_gesvdr' needs a 2-D float32/float64 CUDA"):
        svdlora.rsvd(A, 2, backend="cusolver_gesvdr")
    assert calls == []  # every refusal came from metadata alone
    nan = da.from_array(np.full((40, 30), np.nan), chunks=(10, 30))
    with pytest.raises(ValueError, match="NaN or Inf"):
        svdlora.rsvd(nan, 2)
