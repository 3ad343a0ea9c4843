"""svdlora.rsvd on dask arrays against dask.array.linalg.svd_compressed, in one run on a
LocalCluster: time and err/opt at the same rank, oversampling and iterations, plus the
scaling from 1 to 2 workers.

    python bench/bench_dask.py [--quick] [--out bench/results/dask.json]

The matrices have the spectrum sigma_i = 1/i on a rank-``r0`` part (exactly: A = U diag(s) V^T
with orthonormal U, V built chunk by chunk), computed into the workers' memory before the
timings with its row chunks dealt round robin, and pinned afresh whenever a run has moved or
copied a chunk, so every method reads the same chunks from the same even spread; each time is
the median of ``--repeats`` runs.  err/opt is ||A - U S Vh||_F over the Eckart-Young
optimum sqrt(sum_{i>k} s_i^2), computed chunk by chunk on the cluster after all the timings
(its graph moves chunks of A between workers, which would slow the runs after it).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, merge_section  # noqa: E402


def orthonormal_rows_factor(rows: int, rank: int, chunk: int, seed: int):
    """A rows x rank dask array with orthonormal columns: kron(Q1, Q2) of two small random
    orthonormal factors (a Kronecker product of orthonormal matrices is orthonormal), chunked
    by rows, never formed on the client."""
    import dask.array as da
    rng = np.random.default_rng(seed)
    r1 = next(d for d in range(int(np.sqrt(rank)), 0, -1) if rank % d == 0)
    r2 = rank // r1
    m2 = next(d for d in range(max(r2, int(np.sqrt(rows))), rows + 1) if rows % d == 0)
    m1 = rows // m2
    Q1 = np.linalg.qr(rng.standard_normal((m1, r1)))[0].astype(np.float32)
    Q2 = np.linalg.qr(rng.standard_normal((m2, r2)))[0].astype(np.float32)
    block = max(1, chunk // m2)
    Q1d = da.from_array(Q1, chunks=(block, r1))
    return (Q1d[:, None, :, None] * Q2[None, :, None, :]).reshape(rows, rank)


def known_matrix(m: int, n: int, r0: int, chunk: int):
    U = orthonormal_rows_factor(m, r0, chunk, seed=1)
    V = orthonormal_rows_factor(n, r0, n, seed=2).compute()
    s = (1.0 / np.arange(1, r0 + 1)).astype(np.float32)
    return (U * s) @ V.T, s


def error(A, U, S, Vh) -> float:
    import dask.array as da
    U = da.from_array(np.asarray(U), chunks=(A.chunks[0], -1)) if isinstance(U, np.ndarray) else U
    R = A - (U * np.asarray(S)) @ np.asarray(Vh)
    return float(np.sqrt(da.sum(R.astype(np.float64) ** 2).compute()))


def pinned(lazy, client):
    """``lazy`` (chunked by rows only) computed into the workers' memory with its row chunks
    dealt round robin, one copy each: every method then starts from the same even spread
    (a plain persist may leave 6 + 4 of 10 chunks on two workers)."""
    import dask.array as da
    from distributed import wait
    workers = sorted(client.scheduler_info()["workers"])
    blocks = [client.persist(lazy.blocks[i], workers=[workers[i % len(workers)]])
              for i in range(lazy.numblocks[0])]
    wait(blocks)
    return da.concatenate(blocks, axis=0)


def placement(client, A) -> dict:
    """Which workers hold each of A's chunks."""
    return {str(key): sorted(held) for key, held in client.who_has(A).items()}


def run_shape(m: int, n: int, k: int, q: int, r0: int, chunk: int, client,
              repeats: int) -> dict:
    import dask.array as da
    import svdlora

    lazy, s = known_matrix(m, n, r0, chunk)
    lazy = lazy.rechunk((chunk, n))
    state = {"A": pinned(lazy, client)}
    spread = placement(client, state["A"])
    optimum = float(np.sqrt(np.sum(s[k:].astype(np.float64) ** 2)))

    def svdlora_rsvd(**kw):
        return lambda: svdlora.rsvd(state["A"], k, seed=0, **kw)

    def svd_compressed(iterator):
        return lambda: da.compute(*da.linalg.svd_compressed(
            state["A"], k, n_power_iter=q, n_oversamples=10, iterator=iterator, seed=0))

    methods = {
        f"svdlora n_iter={q}": svdlora_rsvd(n_iter=q, method="subspace"),
        "svdlora default": svdlora_rsvd(),
        f"svdlora n_iter={q}, compiled chunk GEMMs": svdlora_rsvd(n_iter=q, method="subspace",
                                                                   backend="compiled"),
        f"svd_compressed power q={q}": svd_compressed("power"),
        f"svd_compressed QR q={q}": svd_compressed("QR"),
    }
    row = {"shape": [m, n], "k": k, "q": q, "chunks": [chunk, n], "methods": {}, "re_pinned": 0}

    def same_spread() -> None:
        # Some runs move or copy a chunk to the other worker (one 160 MB chunk more on a
        # worker costs the next run ~10%): A is then pinned afresh, so that no method
        # inherits another's placement.
        nonlocal spread
        if placement(client, state["A"]) != spread:
            state["A"] = pinned(lazy, client)
            spread = placement(client, state["A"])
            row["re_pinned"] += 1

    factors = {}
    for name, run in methods.items():
        same_spread()
        factors[name] = run()  # warm-up (graph construction paths, worker caches)
        row["methods"][name] = {"all_seconds": []}
    # round robin: successive runs on one LocalCluster drift (up to 1.4x here), so every
    # method gets the same mix of early and late slots
    for _ in range(repeats):
        for name, run in methods.items():
            same_spread()
            t0 = time.perf_counter()
            run()
            row["methods"][name]["all_seconds"].append(time.perf_counter() - t0)
    # the error graphs move chunks between workers (measured: 4 + 4 chunks became 5 + 3,
    # which slowed the next runs by up to 1.8x), so they come after all the timings
    for name, (U, S, Vh) in factors.items():
        row["methods"][name]["err_over_opt"] = error(state["A"], U, S, Vh) / optimum
    for name, result in row["methods"].items():
        result["seconds"] = float(np.median(result["all_seconds"]))
        print(f"{m}x{n} k={k} {name}: {result['seconds']:.2f} s (median of {repeats}), "
              f"err/opt {result['err_over_opt']:.4f}", flush=True)
    base = row["methods"][f"svdlora n_iter={q}"]["seconds"]
    for name, result in row["methods"].items():
        result["time_over_svdlora"] = result["seconds"] / base
    del state["A"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small matrices (a smoke run)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per method (median)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "dask.json"))
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    shapes = ([(20_000, 500, 2000), (4000, 4000, 2000)] if args.quick
              else [(200_000, 2000, 25_000), (20_000, 20_000, 2000)])
    k, q, r0 = 64, 3, 1000
    rows, scaling = [], {}
    for workers in (2, 1):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            for m, n, chunk in (shapes if workers == 2 else shapes[:1]):
                row = run_shape(m, n, k, q, min(r0, n), chunk, client, args.repeats)
                row["workers"] = workers
                rows.append(row)
                scaling.setdefault(f"{m}x{n}", {})[workers] = row["methods"][f"svdlora n_iter={q}"]["seconds"]
    payload = {"rows": rows, "scaling_1_to_2_workers": {
        shape: t[1] / t[2] for shape, t in scaling.items() if 1 in t and 2 in t}}
    merge_section(args.out, "dask", payload, machine())
    print("wrote", args.out)


if __name__ == "__main__":
    main()
