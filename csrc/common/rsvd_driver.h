// The randomized-SVD algorithms themselves, written once for every device, over the
// CenteredOperator of common/centering.h (a device's raw passes plus PCA centring), and the
// entry points that every device's op registration calls.
//
// Everything here is ATen calls on the device of A; none of it reads data on the host except
// the adaptive scheme, whose stopping rule and output shape depend on the data.
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/scalar_tensor.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "common/block_krylov.h"
#include "common/centering.h"
#include "common/checks.h"

namespace svdlora {

// Undo the internal transpose and apply the sign convention: the largest-magnitude entry of
// every column of U is positive, rows of Vh flipped to match.
inline Factors finalize_factors(at::Tensor U, at::Tensor S, at::Tensor Vh, bool transposed) {
  if (transposed) {
    std::swap(U, Vh);
    U = U.mT();
    Vh = Vh.mT();
  }
  at::Tensor pivot = U.gather(-2, U.abs().argmax(-2, /*keepdim=*/true));  // (..., 1, k)
  at::Tensor sign = 1 - 2 * pivot.lt(0).to(U.scalar_type());
  return {(U * sign).contiguous(), S.contiguous(), (Vh * sign.mT()).contiguous()};
}

// Fixed rank: Q = orth(A Ω), q times Q = orth(A orth(A^T Q)), then the SVD of B = Q^T A.
// Normalising after every product matters: unnormalised power iteration loses the small
// singular directions to rounding in float32.
template <class Backend>
Factors rsvd_fixed_rank(const Backend& op, const at::Tensor& omega, int64_t rank, int64_t n_iter,
                        bool transposed) {
  at::Tensor Y = op.apply(omega, /*precise=*/false);
  for (int64_t i = 0; i < n_iter; ++i) {
    at::Tensor Z = op.range_basis(op.apply_t(op.range_basis(Y), /*precise=*/false));
    Y = op.apply(Z, /*precise=*/false);
  }
  at::Tensor Q = op.orth(Y);
  auto [U, S, Vh] = op.small_svd(Q, op.apply_t(Q, /*precise=*/true), rank);
  return finalize_factors(U, S, Vh, transposed);
}

// Adaptive rank: blocked randQB_EI (Yu, Gu & Li 2018).  Q and B = Q^T A (kept as B^T) grow
// block by block; ||A - QB||_F^2 = ||A||_F^2 - ||B||_F^2 comes for free.  Returns the factors
// of the smallest rank <= max_rank meeting tol (or max_rank) and the relative error.
template <class Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rsvd_adaptive_rank(
    const Backend& op, const at::Tensor& omega, double tol, int64_t block_size, int64_t max_rank,
    int64_t n_iter, bool transposed) {
  const int64_t L = omega.size(1);
  const double total = op.squared_frobenius();
  const double threshold = tol * tol * total;
  double remaining = total;
  at::Tensor Q = at::empty({op.rows(), 0}, omega.options());
  at::Tensor Bt = at::empty({op.cols(), 0}, omega.options());
  // (A - Q B) X and (A - Q B)^T Y: subtract the part already captured.
  auto residual_apply = [&](const at::Tensor& X) {
    at::Tensor Y = op.apply(X, /*precise=*/false);
    return Q.size(1) ? Y - at::matmul(Q, at::matmul(Bt.mT(), X)) : Y;
  };
  auto residual_apply_t = [&](const at::Tensor& Y) {
    at::Tensor Z = op.apply_t(Y, /*precise=*/false);
    return Q.size(1) ? Z - at::matmul(Bt, at::matmul(Q.mT(), Y)) : Z;
  };
  // The first block always runs, so even an all-zero A yields a (rank-1, zero) factorisation.
  for (int64_t start = 0; start < L && (start == 0 || remaining > threshold); start += block_size) {
    const int64_t b = std::min(block_size, L - start);
    at::Tensor Qi = op.orth(residual_apply(omega.narrow(1, start, b)));
    for (int64_t i = 0; i < n_iter; ++i) {
      Qi = op.orth(residual_apply(op.orth(residual_apply_t(Qi))));
    }
    if (Q.size(1)) {
      // Re-orthogonalise against earlier blocks (lost to rounding in the subtractions).
      Qi = op.orth(Qi - at::matmul(Q, at::matmul(Q.mT(), Qi)));
    }
    at::Tensor Bti = op.apply_t(Qi, /*precise=*/true);
    Q = at::cat({Q, Qi}, 1);
    Bt = at::cat({Bt, Bti}, 1);
    // The one host read per block: the stopping rule depends on the data.
    remaining -= Bti.to(at::kDouble).square().sum().template item<double>();
  }

  const int64_t l = Q.size(1);
  auto [U, S, Vh] = op.small_svd(Q, Bt, l);
  // Error of the rank-r truncation of QB: ||A||^2 - sum_{i<=r} sigma_i(B)^2; the smallest r
  // meeting the threshold, else the cap.
  at::Tensor S64 = S.to(at::kDouble).cpu().contiguous();
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
  auto [Uf, Sf, Vhf] = finalize_factors(U.narrow(-1, 0, r), S.narrow(-1, 0, r),
                                        Vh.narrow(-2, 0, r), transposed);
  return {Uf, Sf, Vhf, at::scalar_tensor(rel_err, omega.options().dtype(at::kDouble))};
}

// Op entry points.  `make_device(tall, compute_dtype)` builds the device's passes over the tall
// view of A (A itself, or A^T as a view when A is wide).
template <class MakeDevice>
Factors run_fixed_rank(const at::Tensor& A, const at::Tensor& omega,
                       const std::optional<at::Tensor>& col_mean, int64_t rank, int64_t n_iter,
                       MakeDevice make_device) {
  check_rsvd_inputs(A, omega, col_mean, n_iter);
  check_rank(rank, omega);
  const bool transposed = A.size(-2) < A.size(-1);
  const at::ScalarType dtype = compute_dtype(A);
  at::Tensor tall = transposed ? A.mT() : A;
  auto [left, right] = centring_terms(A, col_mean, transposed, dtype);
  CenteredOperator op(make_device(tall, dtype), tall, left, right);
  return rsvd_fixed_rank(op, omega, rank, n_iter, transposed);
}

// Block Krylov: returns U, S, Vh and the passes over A as an int64 scalar tensor.
template <class MakeDevice>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> run_block_krylov(
    const at::Tensor& A, const at::Tensor& omega, const std::optional<at::Tensor>& col_mean,
    int64_t rank, int64_t settle_passes, int64_t max_passes, double stop_tol, double gain_tol,
    MakeDevice make_device) {
  check_rsvd_inputs(A, omega, col_mean, /*n_iter=*/0);
  check_krylov_inputs(A, omega, rank, settle_passes, max_passes, stop_tol, gain_tol);
  const bool transposed = A.size(-2) < A.size(-1);
  const at::ScalarType dtype = compute_dtype(A);
  at::Tensor tall = transposed ? A.mT() : A;
  auto [left, right] = centring_terms(A, col_mean, transposed, dtype);
  CenteredOperator op(make_device(tall, dtype), tall, left, right);
  auto [factors, passes] =
      rsvd_block_krylov(op, omega, KrylovSettings{rank, settle_passes, max_passes, stop_tol, gain_tol});
  auto [U, S, Vh] = factors;
  auto [Uf, Sf, Vhf] = finalize_factors(U, S, Vh, transposed);
  return {Uf, Sf, Vhf, at::scalar_tensor(passes, omega.options().dtype(at::kLong))};
}

template <class MakeDevice>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> run_adaptive_rank(
    const at::Tensor& A, const at::Tensor& omega, const std::optional<at::Tensor>& col_mean,
    double tol, int64_t block_size, int64_t max_rank, int64_t n_iter, MakeDevice make_device) {
  check_rsvd_inputs(A, omega, col_mean, n_iter);
  check_adaptive_inputs(A, omega, tol, block_size, max_rank);
  const bool transposed = A.size(-2) < A.size(-1);
  const at::ScalarType dtype = compute_dtype(A);
  at::Tensor tall = transposed ? A.mT() : A;
  auto [left, right] = centring_terms(A, col_mean, transposed, dtype);
  CenteredOperator op(make_device(tall, dtype), tall, left, right);
  return rsvd_adaptive_rank(op, omega, tol, block_size, max_rank, n_iter, transposed);
}

}  // namespace svdlora
