"""The CPU output-buffer cache behind the adapter ops: recycled outputs are correct, never
shared between live tensors, bounded by the limit, thread-safe, and the controls validate
their argument."""
from __future__ import annotations

import threading

import pytest

from helpers import needs_compiled, reference_output, torch

pytestmark = needs_compiled

D = K = 1024  # N x D float32 outputs of N >= 1024 rows reach the 4 MiB recycling size


@pytest.fixture(autouse=True)
def restore_limit():
    import svdlora
    limit = svdlora.buffer_cache_info()["limit_bytes"]
    yield
    svdlora.set_buffer_cache_limit(limit)


def factors(r=16, rr=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(D, r, generator=g))[0]
    Vh = torch.linalg.qr(torch.randn(K, r, generator=g))[0].T.contiguous()
    S = torch.rand(r, generator=g) + 0.5
    X, Y = torch.randn(r, rr, generator=g), torch.randn(rr, r, generator=g)
    return U, S, Vh, X, Y


def plain(x, U, S, Vh, X, Y, scale=0.5):
    return reference_output(x, U, S, Vh, X, Y, scale)


def fused(x, U, S, Vh, X, Y, scale=0.5):
    import svdlora
    return svdlora.svd_lora_linear(x, U, S, Vh, X, Y, scale)


def test_min_block_and_default_limit():
    import svdlora
    info = svdlora.buffer_cache_info()
    assert info["min_block_bytes"] == 4 << 20
    assert info["limit_bytes"] >= 0
    assert set(info) == {"cached_bytes", "cached_blocks", "limit_bytes", "min_block_bytes", "hits", "misses"}


def test_recycled_output_is_reused_and_correct():
    import svdlora
    svdlora.set_buffer_cache_limit(1 << 30)
    svdlora.empty_buffer_cache()
    U, S, Vh, X, Y = factors()
    x1, x2 = torch.randn(1024, K), torch.randn(1024, K)
    y1 = fused(x1, U, S, Vh, X, Y)
    ptr = y1.data_ptr()
    del y1  # its block goes back to the cache ...
    before = svdlora.buffer_cache_info()
    assert before["cached_blocks"] == 1 and before["cached_bytes"] == 1024 * D * 4
    y2 = fused(x2, U, S, Vh, X, Y)  # ... and the next output of that size takes it
    after = svdlora.buffer_cache_info()
    assert after["hits"] == before["hits"] + 1 and after["cached_blocks"] == 0
    assert y2.data_ptr() == ptr
    torch.testing.assert_close(y2, plain(x2, U, S, Vh, X, Y), rtol=1e-4, atol=1e-4)


def test_live_outputs_never_share_memory():
    import svdlora
    svdlora.set_buffer_cache_limit(1 << 30)
    U, S, Vh, X, Y = factors()
    xs = [torch.randn(1024, K) for _ in range(3)]
    ys = [fused(x, U, S, Vh, X, Y) for x in xs]
    assert len({y.data_ptr() for y in ys}) == 3
    for x, y in zip(xs, ys):
        torch.testing.assert_close(y, plain(x, U, S, Vh, X, Y), rtol=1e-4, atol=1e-4)


def test_small_outputs_bypass_the_cache():
    import svdlora
    U, S, Vh, X, Y = factors()
    before = svdlora.buffer_cache_info()
    y = fused(torch.randn(8, K), U, S, Vh, X, Y)
    del y
    after = svdlora.buffer_cache_info()
    assert (after["hits"], after["misses"], after["cached_bytes"]) == (
        before["hits"], before["misses"], before["cached_bytes"])


def test_limit_bounds_the_cache_and_zero_turns_it_off():
    import svdlora
    U, S, Vh, X, Y = factors()
    block = 1024 * D * 4
    svdlora.set_buffer_cache_limit(2 * block)
    ys = [fused(torch.randn(1024, K), U, S, Vh, X, Y) for _ in range(4)]
    del ys
    assert svdlora.buffer_cache_info()["cached_bytes"] == 2 * block  # the two newest kept
    svdlora.set_buffer_cache_limit(0)
    assert svdlora.buffer_cache_info()["cached_bytes"] == 0
    hits = svdlora.buffer_cache_info()["hits"]
    y = fused(torch.randn(1024, K), U, S, Vh, X, Y)
    del y
    info = svdlora.buffer_cache_info()
    assert info["hits"] == hits and info["cached_bytes"] == 0


def test_empty_buffer_cache_releases_everything():
    import svdlora
    svdlora.set_buffer_cache_limit(1 << 30)
    U, S, Vh, X, Y = factors()
    y = fused(torch.randn(1024, K), U, S, Vh, X, Y)
    del y
    assert svdlora.buffer_cache_info()["cached_bytes"] > 0
    svdlora.empty_buffer_cache()
    assert svdlora.buffer_cache_info()["cached_bytes"] == 0


def test_gradient_accumulation_into_a_recycled_dx():
    # autograd may adopt dx as x.grad; a second backward then adds into that recycled block
    import svdlora
    svdlora.set_buffer_cache_limit(1 << 30)
    U, S, Vh, X, Y = factors()
    x = torch.randn(1024, K, requires_grad=True)
    dy = torch.randn(1024, D)
    fused(x, U, S, Vh, X, Y).backward(dy)
    once = x.grad.clone()
    fused(x, U, S, Vh, X, Y).backward(dy)
    torch.testing.assert_close(x.grad, 2 * once)
    x_ref = x.detach().clone().requires_grad_(True)
    plain(x_ref, U, S, Vh, X, Y).backward(dy)
    torch.testing.assert_close(once, x_ref.grad, rtol=1e-4, atol=1e-4)


def test_concurrent_threads_get_correct_results():
    import svdlora
    svdlora.set_buffer_cache_limit(64 << 20)  # small: forces evictions while threads run
    U, S, Vh, X, Y = factors()
    errors = []

    def work(seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(6):
            x = torch.randn(1024, K, generator=g, requires_grad=True)
            dy = torch.randn(1024, D, generator=g)
            y = fused(x, U, S, Vh, X, Y)
            y.backward(dy)
            x_ref = x.detach().clone().requires_grad_(True)
            y_ref = plain(x_ref, U, S, Vh, X, Y)
            y_ref.backward(dy)
            errors.append(max((y - y_ref).abs().max().item(), (x.grad - x_ref.grad).abs().max().item()))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 24 and max(errors) < 1e-3
    assert svdlora.buffer_cache_info()["cached_bytes"] <= 64 << 20


def test_set_limit_takes_any_integer_type():
    import numpy as np

    import svdlora
    svdlora.set_buffer_cache_limit(np.int64(64 << 20))
    assert svdlora.buffer_cache_info()["limit_bytes"] == 64 << 20
    svdlora.set_buffer_cache_limit(np.uint32(32 << 20))
    assert svdlora.buffer_cache_info()["limit_bytes"] == 32 << 20


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (2**63, ValueError), ("1GB", TypeError),
                                      (1.5, TypeError), (True, TypeError), (None, TypeError),
                                      (__import__("numpy").float64(8.0), TypeError)])
def test_set_limit_rejects_bad_values(bad, exc):
    import svdlora
    limit = svdlora.buffer_cache_info()["limit_bytes"]
    with pytest.raises(exc, match="nbytes"):
        svdlora.set_buffer_cache_limit(bad)
    assert svdlora.buffer_cache_info()["limit_bytes"] == limit


def test_recycled_output_serialises_and_refuses_to_grow(tmp_path):
    # the documented difference from a torch-allocated tensor: its storage is not resizable
    U, S, Vh, X, Y = factors()
    y = fused(torch.randn(1024, K), U, S, Vh, X, Y)
    path = tmp_path / "y.pt"
    torch.save(y, path)
    torch.testing.assert_close(torch.load(path, weights_only=True), y, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="not resizable"):
        y.resize_(2048, D)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_forked_child_starts_with_a_fresh_cache_and_the_same_limit():
    import os
    import svdlora
    U, S, Vh, X, Y = factors()
    svdlora.set_buffer_cache_limit(512 << 20)
    y = fused(torch.randn(1024, K), U, S, Vh, X, Y)
    del y
    assert svdlora.buffer_cache_info()["cached_blocks"] >= 1
    x = torch.randn(1024, K)
    expected = plain(x, U, S, Vh, X, Y)
    pid = os.fork()
    if pid == 0:  # child: report through the exit status only
        ok = False
        try:
            # OpenMP's thread pool does not survive fork (a torch-wide limitation): one thread
            torch.set_num_threads(1)
            info = svdlora.buffer_cache_info()
            y = fused(x, U, S, Vh, X, Y)
            ok = (info["limit_bytes"] == 512 << 20 and info["cached_blocks"] == 0 and
                  torch.allclose(y, expected, rtol=1e-4, atol=1e-4))
        finally:
            os._exit(0 if ok else 1)
    import signal
    import time
    deadline = time.monotonic() + 60
    while True:  # never hang the suite on a stuck child
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish within 60 s")
        time.sleep(0.05)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
