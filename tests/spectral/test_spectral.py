"""svdlora.spectral against simulated random matrices and closed forms."""
from __future__ import annotations

import math

import numpy as np
import pytest

from svdlora import spectral

SIGMA = 0.3


def unit(rng: np.random.Generator, size: int) -> np.ndarray:
    v = rng.standard_normal(size)
    return v / np.linalg.norm(v)


def spiked_noise(m: int, n: int, theta: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = SIGMA * rng.standard_normal((m, n))
    return noise + theta * np.outer(unit(rng, m), unit(rng, n))


def theta_at(ratio_to_transition: float, m: int, n: int) -> float:
    """Spike strength at a multiple of the BBP threshold t = c^(1/4)."""
    c = min(m, n) / max(m, n)
    return ratio_to_transition * c ** 0.25 * SIGMA * math.sqrt(max(m, n))


@pytest.fixture(scope="module")
def pure_noise_spectrum():
    m, n = 2000, 4000
    S = spectral.singular_values(spiked_noise(m, n, 0.0, seed=0))
    return m, n, S


def test_fit_on_pure_noise_matches_simulation(pure_noise_spectrum):
    m, n, S = pure_noise_spectrum
    fit = spectral.fit_marchenko_pastur(S, m, n)
    assert fit.sigma == pytest.approx(SIGMA, rel=0.02)
    # the fitted edges are where the simulated spectrum actually ends
    assert fit.upper == pytest.approx(S.max(), rel=0.02)
    assert fit.lower == pytest.approx(S.min(), rel=0.02)
    assert (fit.lower, fit.upper) == pytest.approx(
        spectral.marchenko_pastur_edges(m, n, SIGMA), rel=0.02)
    assert fit.outliers.size == 0
    assert len(fit) == 4  # the contract: MPFit(sigma, lower, upper, outliers)
    threshold = spectral.outlier_threshold(m, n, fit.sigma)
    assert fit.upper < threshold < 1.01 * fit.upper
    assert spectral.outlier_threshold(m, n, fit.sigma, tw_margin=None) == fit.upper


def test_outlier_threshold_false_positive_rate_on_pure_noise():
    # the TW margin is TW1's 99th percentile: spurious outliers in few pure-noise draws,
    # where the bare asymptotic edge is crossed much more often
    m, n = 200, 400
    with_margin = bare = 0
    for seed in range(60):
        S = spectral.singular_values(spiked_noise(m, n, 0.0, seed=100 + seed))
        with_margin += spectral.fit_marchenko_pastur(S, m, n).outliers.size > 0
        bare += spectral.fit_marchenko_pastur(S, m, n, tw_margin=None).outliers.size > 0
    assert with_margin <= 4
    assert bare > with_margin


def test_density_matches_simulated_histogram(pure_noise_spectrum):
    m, n, S = pure_noise_spectrum
    lower, upper = spectral.marchenko_pastur_edges(m, n, SIGMA)
    grid = np.linspace(lower, upper, 20001)
    pdf = spectral.marchenko_pastur_pdf(grid, m, n, SIGMA)
    assert np.trapezoid(pdf, grid) == pytest.approx(1.0, abs=1e-4)
    cdf = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(grid))])
    empirical = np.searchsorted(np.sort(S), grid) / S.size
    assert np.abs(cdf - empirical).max() < 0.01  # Kolmogorov–Smirnov distance
    assert spectral.marchenko_pastur_pdf(upper * 1.01, m, n, SIGMA) == 0.0
    assert spectral.marchenko_pastur_median(m, n, SIGMA) == pytest.approx(np.median(S), rel=2e-3)


def test_square_case_is_the_quarter_circle():
    x = np.linspace(0.01, 1.99, 50)
    # m = n = 1 in the normalisation s / sqrt(n): sqrt(4 - s²) / pi on [0, 2]
    assert np.allclose(spectral.marchenko_pastur_pdf(x, 1, 1), np.sqrt(4 - x**2) / np.pi)
    assert spectral.marchenko_pastur_edges(7, 7, 2.0) == pytest.approx((0.0, 4 * math.sqrt(7)))


@pytest.mark.parametrize("ratio", [1.5, 2.0, 3.0, 5.0])
def test_spike_location_matches_simulation(ratio):
    m, n = 1000, 2000
    theta = theta_at(ratio, m, n)
    W = spiked_noise(m, n, theta, seed=int(ratio * 10))
    S = spectral.singular_values(W)
    predicted = spectral.spike_singular_value(theta, m, n, SIGMA)
    assert S[0] == pytest.approx(predicted, rel=0.03)
    assert predicted > spectral.marchenko_pastur_edges(m, n, SIGMA)[1]
    fit = spectral.fit_marchenko_pastur(S, m, n)
    assert fit.outliers.tolist() == [0]
    # the transposed matrix has the same spectrum and the same prediction
    assert spectral.spike_singular_value(theta, n, m, SIGMA) == predicted


@pytest.mark.parametrize("seed", range(4))
def test_no_outlier_below_the_transition(seed):
    m, n = 600, 1200
    theta = theta_at(0.7, m, n)
    assert spectral.spike_singular_value(theta, m, n, SIGMA) == pytest.approx(
        spectral.marchenko_pastur_edges(m, n, SIGMA)[1])
    S = spectral.singular_values(spiked_noise(m, n, theta, seed))
    assert spectral.fit_marchenko_pastur(S, m, n).outliers.size == 0


def test_fit_is_robust_to_a_few_spikes():
    m, n = 800, 1600
    rng = np.random.default_rng(3)
    W = SIGMA * rng.standard_normal((m, n))
    for _ in range(5):
        W += theta_at(4.0, m, n) * np.outer(unit(rng, m), unit(rng, n))
    S = spectral.singular_values(W)
    fit = spectral.fit_marchenko_pastur(S, m, n)
    assert fit.sigma == pytest.approx(SIGMA, rel=0.02)
    assert sorted(fit.outliers.tolist()) == [0, 1, 2, 3, 4]


def decaying_matrix(m: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, min(m, n))))
    V, _ = np.linalg.qr(rng.standard_normal((n, min(m, n))))
    return (U / np.arange(1, min(m, n) + 1)) @ V.T


@pytest.mark.parametrize("shape", [(120, 200), (200, 120), (300, 300)])
def test_intruders_zero_for_small_dense_noise(shape):
    W0 = decaying_matrix(*shape, seed=0)
    noise = 1e-3 / math.sqrt(shape[1]) * np.random.default_rng(1).standard_normal(shape)
    report = spectral.intruder_report(W0, W0 + noise)
    assert report.count == 0
    assert report.max_cosines.min() > 0.99
    assert report.subspace_overlap > 0.99
    assert spectral.intruder_dimensions(W0, W0 + noise) == 0


@pytest.mark.parametrize("shape", [(120, 200), (200, 120), (300, 300)])
def test_strong_random_spike_is_an_intruder(shape):
    W0 = decaying_matrix(*shape, seed=0)
    rng = np.random.default_rng(2)
    W1 = W0 + 3.0 * np.outer(unit(rng, shape[0]), unit(rng, shape[1]))
    report = spectral.intruder_report(W0, W1)
    assert report.count >= 1
    assert report.indices[0] == 0               # the spike is the new top direction
    assert report.max_cosines[0] < 0.5
    assert report.span_overlap[0] < 0.5         # and it is new, not a rotation of old ones
    assert spectral.intruder_dimensions(W0, W1, k=10, eps=0.5) == report.count


def test_rotation_inside_top_subspace_is_flagged_but_overlap_says_so():
    W0 = decaying_matrix(100, 150, seed=4)
    U, S, Vh = np.linalg.svd(W0, full_matrices=False)
    # mix the top two singular directions 45 degrees and make them degenerate
    R = np.eye(100)
    R[:2, :2] = np.array([[1, -1], [1, 1]]) / math.sqrt(2)
    S2 = S.copy()
    S2[:2] = [2.0, 1.5]
    W1 = (U @ R) @ np.diag(S2) @ Vh
    report = spectral.intruder_report(W0, W1, k=2, eps=0.75)
    assert report.count == 2
    assert report.span_overlap == pytest.approx([1.0, 1.0])


def test_null_space_vectors_of_a_low_rank_update_are_not_intruders():
    W0 = decaying_matrix(50, 60, seed=8)
    U, S, Vh = np.linalg.svd(W0, full_matrices=False)
    W1 = (U[:, :4] * S[:4]) @ Vh[:4]       # rank 4: its 5th..10th vectors are arbitrary
    for W in (W1, W1.astype(np.float32)):   # float32 rounding noise is not a direction either
        report = spectral.intruder_report(W0, W)
        assert report.examined == 4
        assert report.count == 0
        assert report.subspace_overlap == pytest.approx(1.0)


def test_top_singular_vectors_use_randomized_svd_for_large_matrices(monkeypatch):
    W1 = decaying_matrix(600, 700, seed=5)
    calls = []
    real_rsvd = spectral.spectra.rsvd
    monkeypatch.setattr(spectral.spectra, "rsvd", lambda *a, **k: calls.append(1) or real_rsvd(*a, **k))
    U_r, S_r = spectral.top_singular_vectors(W1, 10)
    assert calls == [1]
    S_full = np.linalg.svd(W1, compute_uv=False)[:10]
    # Ritz values never exceed the true singular values; at the default q they are close
    assert np.all(S_r <= S_full * (1 + 1e-9))
    assert np.allclose(S_r, S_full, rtol=1e-2)
    assert S_r[0] == pytest.approx(S_full[0], rel=1e-9)
    assert np.allclose(U_r.T @ U_r, np.eye(10), atol=1e-10)


def test_a_matrix_has_no_intruders_against_itself_even_with_a_flat_spectrum():
    # close top singular values: only exact singular vectors give |cos| = 1 here
    W = np.random.default_rng(7).standard_normal((600, 800))
    report = spectral.intruder_report(W, W)
    assert report.count == 0 and report.max_cosines.min() > 0.999


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_intruders_of_low_precision_tensors(dtype):
    torch = pytest.importorskip("torch")
    W0 = decaying_matrix(200, 150, seed=0)
    rng = np.random.default_rng(2)
    W1 = W0 + 3.0 * np.outer(unit(rng, 200), unit(rng, 150))
    t = getattr(torch, dtype)
    report = spectral.intruder_report(torch.from_numpy(W0).to(t), torch.from_numpy(W1).to(t))
    assert report.examined == 10
    assert report.count >= 1 and report.indices[0] == 0


def test_one_by_one_matrix():
    fit = spectral.fit_marchenko_pastur([3.0], 1, 1)
    assert fit.upper == pytest.approx(2 * fit.sigma) and fit.outliers.size == 0


def test_effective_rank():
    assert spectral.effective_rank(np.ones(17)) == pytest.approx(17)
    assert spectral.effective_rank([5.0, 0.0, 0.0]) == pytest.approx(1.0)
    S = np.array([3.0, 2.0, 1.0])
    p = S / S.sum()
    assert spectral.effective_rank(S) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert spectral.effective_rank(10 * S) == pytest.approx(spectral.effective_rank(S))


def test_torch_inputs_match_numpy():
    torch = pytest.importorskip("torch")
    W0 = decaying_matrix(80, 60, seed=7)
    W1 = W0 + 0.5 * np.outer(unit(np.random.default_rng(8), 80), unit(np.random.default_rng(9), 60))
    S = spectral.singular_values(torch.from_numpy(W1))
    assert np.allclose(S, spectral.singular_values(W1))
    assert spectral.effective_rank(torch.from_numpy(S)) == pytest.approx(spectral.effective_rank(S))
    report_t = spectral.intruder_report(torch.from_numpy(W0).float(), torch.from_numpy(W1))
    assert report_t.count == spectral.intruder_report(W0, W1).count
    x = torch.linspace(0, 20, 11, dtype=torch.float64)
    assert torch.allclose(spectral.marchenko_pastur_pdf(x, 80, 60),
                          torch.from_numpy(spectral.marchenko_pastur_pdf(x.numpy(), 80, 60)))


def test_tensors_on_any_device_are_read_without_svdlora_kernels(monkeypatch, device):
    # the spectral functions copy tensors to the host: they never need (or ask about) the
    # build's device kernels, so CUDA tensors work with a CPU-only build too
    torch = pytest.importorskip("torch")
    import svdlora._checks as checks

    def no_kernels(t, name):
        raise AssertionError("spectral consulted the build's device kernels")

    monkeypatch.setattr(checks, "check_device", no_kernels)
    W0 = decaying_matrix(80, 60, seed=3)
    W1 = W0 + 0.5 * np.outer(unit(np.random.default_rng(4), 80), unit(np.random.default_rng(5), 60))
    T0, T1 = (torch.from_numpy(W).to(device) for W in (W0, W1))
    assert np.allclose(spectral.singular_values(T1), spectral.singular_values(W1))
    assert spectral.intruder_report(T0, T1).count == spectral.intruder_report(W0, W1).count
    U, S = spectral.top_singular_vectors(T1, 5)
    assert np.allclose(S, spectral.singular_values(W1)[:5])


def test_meta_tensors_get_a_clear_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="W is on the meta device, which holds no values") as info:
        spectral.singular_values(torch.empty(4, 3, device="meta"))
    assert "kernel" not in str(info.value) and "SVDLORA_CUDA" not in str(info.value)
    with pytest.raises(ValueError, match="meta device"):
        spectral.effective_rank(torch.empty(3, device="meta"))


@pytest.mark.parametrize("call, exc, match", [
    (lambda: spectral.fit_marchenko_pastur(np.ones(5), 10, 20), ValueError, "S must hold all"),
    (lambda: spectral.fit_marchenko_pastur(-np.ones(10), 10, 20), ValueError, "non-negative"),
    (lambda: spectral.fit_marchenko_pastur(np.zeros(10), 10, 20), ValueError, "median"),
    (lambda: spectral.fit_marchenko_pastur(np.r_[1.0, np.zeros(9)], 10, 20), ValueError, "median"),
    (lambda: spectral.fit_marchenko_pastur(np.ones(10), 10, 20, tw_margin=float("nan")),
     ValueError, "tw_margin"),
    (lambda: spectral.fit_marchenko_pastur([1.0, np.nan], 2, 3), ValueError, "NaN"),
    (lambda: spectral.fit_marchenko_pastur(np.ones((2, 2)), 2, 2), ValueError, "1-D"),
    (lambda: spectral.marchenko_pastur_edges(0, 5), ValueError, "m must be"),
    (lambda: spectral.outlier_threshold(5, 5, 0.0), ValueError, "sigma"),
    (lambda: spectral.outlier_threshold(5, 5, 1.0, tw_margin="x"), TypeError, "tw_margin"),
    (lambda: spectral.marchenko_pastur_edges(5, 5, -1.0), ValueError, "sigma"),
    (lambda: spectral.marchenko_pastur_edges(5.5, 5), TypeError, "m must be an int"),
    (lambda: spectral.spike_singular_value(float("inf"), 5, 5), ValueError, "theta"),
    (lambda: spectral.spike_singular_value("1", 5, 5), TypeError, "theta"),
    (lambda: spectral.effective_rank(np.zeros(3)), ValueError, "positive sum"),
    (lambda: spectral.effective_rank(["a"]), TypeError, "S must hold real"),
    (lambda: spectral.intruder_report(np.eye(4), np.eye(5)), ValueError, "W1 must have the shape"),
    (lambda: spectral.intruder_report(np.eye(4), np.eye(4), k=5), ValueError, "k must be in"),
    (lambda: spectral.intruder_report(np.eye(4), np.eye(4), k=2, eps=1.5), ValueError, "eps"),
    (lambda: spectral.intruder_report(np.ones(4), np.ones(4)), ValueError, "W0 must have shape"),
    # (integer matrices are analysed as float64; complex ones are refused)
    (lambda: spectral.intruder_report(np.eye(3, dtype=complex), np.eye(3)), TypeError, "W0 has complex"),
    (lambda: spectral.singular_values(np.full((3, 3), np.inf)), ValueError, "NaN or Inf"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
