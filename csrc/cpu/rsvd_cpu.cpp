// CPU kernels of svdlora::rsvd and svdlora::rsvd_adaptive: randomized SVD built on ATen
// (MKL/OpenBLAS GEMMs for the passes, CholeskyQR2 for orthonormalisation, LAPACK for the
// small l x l SVD).
#include <ATen/ops/cat.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linalg_svd.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <cmath>

#include "common/checks.h"
#include "cpu/orth.h"
#include "cpu/passes.h"

namespace svdlora::cpu {
namespace {

using Factors = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

at::Tensor orth(const at::Tensor& Y) { return std::get<0>(orth_qr(Y)); }

// Given the range basis Q (..., M, l) and B^T = A^T Q (..., N, l), return the rank-k SVD of
// Q B.  The l x n matrix B is factorised through a QR of B^T (B^T = Qb R, so
// B = R^T Qb^T = Vr S (Qb Ur)^T with R = Ur S Vr^T), which costs one tall-skinny QR and an
// l x l SVD instead of LAPACK's gesdd on the full l x n matrix.
Factors small_svd(const at::Tensor& Q, const at::Tensor& Bt, int64_t k) {
  auto [Qb, R] = orth_qr(Bt);
  auto [Ur, S, Vrh] = at::linalg_svd(R, /*full_matrices=*/false);
  at::Tensor U = at::matmul(Q, Vrh.mT().narrow(-1, 0, k));
  at::Tensor Vh = at::matmul(Qb, Ur.narrow(-1, 0, k)).mT();
  return {U, S.narrow(-1, 0, k), Vh};
}

// Undo the internal transpose and apply the sign convention: the largest-magnitude entry of
// every column of U is positive, rows of Vh flipped to match.
Factors finalize(at::Tensor U, at::Tensor S, at::Tensor Vh, bool transposed) {
  if (transposed) {
    std::swap(U, Vh);
    U = U.mT();
    Vh = Vh.mT();
  }
  at::Tensor pivot = U.gather(-2, U.abs().argmax(-2, /*keepdim=*/true));  // (..., 1, k)
  at::Tensor sign = 1 - 2 * pivot.lt(0).to(U.scalar_type());
  return {(U * sign).contiguous(), S.contiguous(), (Vh * sign.mT()).contiguous()};
}

Factors rsvd_cpu(const at::Tensor& A, const at::Tensor& omega,
                 const std::optional<at::Tensor>& col_mean, int64_t rank, int64_t n_iter) {
  check_rsvd_inputs(A, omega, col_mean, n_iter);
  TORCH_CHECK(rank >= 1 && rank <= omega.size(1), "svdlora.rsvd: rank must be in [1, l=",
              omega.size(1), "], got ", rank);
  const bool transposed = A.size(-2) < A.size(-1);
  CenteredMatrix op = make_tall_operator(A, col_mean, transposed, compute_dtype(A));

  // Normalise after every product: unnormalised power iteration loses the small singular
  // directions to rounding in float32.  Intermediate bases only need to be well conditioned
  // (the span is what matters), so they get a single CholeskyQR sweep; the final Q must be
  // orthonormal because U = Q Ũ and B = Q^T A.
  at::Tensor Y = op.apply(omega);
  for (int64_t i = 0; i < n_iter; ++i) {
    at::Tensor Z = range_basis(op.apply_t(range_basis(Y)));
    Y = op.apply(Z);
  }
  at::Tensor Q = orth(Y);
  auto [U, S, Vh] = small_svd(Q, op.apply_t(Q), rank);
  return finalize(U, S, Vh, transposed);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rsvd_adaptive_cpu(
    const at::Tensor& A, const at::Tensor& omega, const std::optional<at::Tensor>& col_mean,
    double tol, int64_t block_size, int64_t max_rank, int64_t n_iter) {
  check_rsvd_inputs(A, omega, col_mean, n_iter);
  TORCH_CHECK(A.dim() == 2, "svdlora.rsvd_adaptive: A must be 2-D, got ", A.dim(), " dims");
  TORCH_CHECK(tol > 0 && tol < 1, "svdlora.rsvd_adaptive: tol must be in (0, 1), got ", tol);
  TORCH_CHECK(block_size >= 1, "svdlora.rsvd_adaptive: block_size must be >= 1");
  const int64_t L = omega.size(1);
  TORCH_CHECK(max_rank >= 1 && max_rank <= L, "svdlora.rsvd_adaptive: max_rank must be in [1, ",
              L, "], got ", max_rank);
  const bool transposed = A.size(-2) < A.size(-1);
  CenteredMatrix op = make_tall_operator(A, col_mean, transposed, compute_dtype(A));

  // Blocked randQB_EI: grow Q and B = Q^T A (stored as B^T) block by block; the error
  // ||A - QB||_F^2 = ||A||_F^2 - ||B||_F^2 comes for free.
  const double total = op.squared_frobenius();
  const double threshold = tol * tol * total;
  double remaining = total;
  at::Tensor Q = at::empty({op.rows(), 0}, omega.options());
  at::Tensor Bt = at::empty({op.cols(), 0}, omega.options());
  // Subtract the part already captured: (A - Q B) X and (A - Q B)^T Y.
  auto residual_apply = [&](const at::Tensor& X) {
    at::Tensor Y = op.apply(X);
    return Q.size(1) ? Y - at::matmul(Q, at::matmul(Bt.mT(), X)) : Y;
  };
  auto residual_apply_t = [&](const at::Tensor& Y) {
    at::Tensor Z = op.apply_t(Y);
    return Q.size(1) ? Z - at::matmul(Bt, at::matmul(Q.mT(), Y)) : Z;
  };
  // The first block always runs, so even an all-zero A yields a (rank-1, zero) factorisation.
  for (int64_t start = 0; start < L && (start == 0 || remaining > threshold); start += block_size) {
    const int64_t b = std::min(block_size, L - start);
    at::Tensor Qi = orth(residual_apply(omega.narrow(1, start, b)));
    for (int64_t i = 0; i < n_iter; ++i) {
      Qi = orth(residual_apply(orth(residual_apply_t(Qi))));
    }
    if (Q.size(1)) {
      // Re-orthogonalise against earlier blocks (lost to rounding in the subtractions).
      Qi = orth(Qi - at::matmul(Q, at::matmul(Q.mT(), Qi)));
    }
    at::Tensor Bti = op.apply_t(Qi);
    Q = at::cat({Q, Qi}, 1);
    Bt = at::cat({Bt, Bti}, 1);
    remaining -= Bti.to(at::kDouble).square().sum().item<double>();
  }

  const int64_t l = Q.size(1);
  auto [U, S, Vh] = small_svd(Q, Bt, l);
  // Error of the rank-r truncation of QB: ||A||^2 - sum_{i<=r} sigma_i(B)^2; the smallest r
  // meeting the threshold, else the cap.
  at::Tensor S64 = S.to(at::kDouble).contiguous();
  const double* s = S64.data_ptr<double>();
  const int64_t cap = std::min(max_rank, l);
  double captured = 0.0;
  int64_t r = 0;
  do {
    captured += s[r] * s[r];
    ++r;
  } while (r < cap && total - captured > threshold);
  const double err2 = std::max(total - captured, 0.0);
  const double rel_err = total > 0 ? std::sqrt(err2 / total) : 0.0;
  auto [Uf, Sf, Vhf] =
      finalize(U.narrow(-1, 0, r), S.narrow(-1, 0, r), Vh.narrow(-2, 0, r), transposed);
  return {Uf, Sf, Vhf, at::scalar_tensor(rel_err, omega.options().dtype(at::kDouble))};
}

}  // namespace

TORCH_LIBRARY_IMPL(svdlora, CPU, m) {
  m.impl("rsvd", &rsvd_cpu);
  m.impl("rsvd_adaptive", &rsvd_adaptive_cpu);
}

}  // namespace svdlora::cpu
