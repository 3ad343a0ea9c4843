// CholeskyQR2 with a Householder fallback (see orth.h).
#include "cpu/orth.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/linalg_cholesky_ex.h>
#include <ATen/ops/linalg_qr.h>
#include <ATen/ops/linalg_solve_triangular.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/nonzero.h>

#include <limits>

namespace svdlora::cpu {
namespace {

struct CholQRStep {
  at::Tensor Q, R, info;
};

// Q = Y R^{-1}.  For a batch, ATen's triangular solve runs one trsm per entry on a transposed
// copy of Y (2x the time of the Gram at 64 x 256 x 26); inverting the small l x l R and
// multiplying is one batched GEMM.  Both are accurate to O(eps cond(R)), which the callers'
// conditioning checks already bound.  A single matrix keeps the direct solve.
at::Tensor right_divide_upper(const at::Tensor& Y, const at::Tensor& R) {
  if (Y.dim() == 2) {
    return at::linalg_solve_triangular(R, Y, /*upper=*/true, /*left=*/false);
  }
  at::Tensor identity = at::eye(R.size(-1), R.options()).expand_as(R);
  return at::matmul(Y, at::linalg_solve_triangular(R, identity, /*upper=*/true, /*left=*/true));
}

CholQRStep cholesky_qr_step(const at::Tensor& Y) {
  at::Tensor gram = at::matmul(Y.mT(), Y);
  auto [R, info] = at::linalg_cholesky_ex(gram, /*upper=*/true, /*check_errors=*/false);
  return {right_divide_upper(Y, R), R, info};
}

// Redo the entries of a batch flagged in `bad` with `redo` (Householder-based), in place of
// the CholeskyQR results.
template <typename Redo>
void repair_entries(const at::Tensor& Y, const at::Tensor& bad, at::Tensor& Q, at::Tensor* R,
                    Redo redo) {
  const int64_t m = Y.size(-2), l = Y.size(-1);
  at::Tensor idx = at::nonzero(bad.reshape({-1})).squeeze(-1);
  at::Tensor Qf = Q.reshape({-1, m, l}).clone();
  auto [Qh, Rh] = redo(Y.reshape({-1, m, l}).index_select(0, idx));
  Qf.index_copy_(0, idx, Qh);
  Q = Qf.view(Q.sizes());
  if (R != nullptr) {
    at::Tensor Rf = R->reshape({-1, l, l}).clone();
    Rf.index_copy_(0, idx, Rh);
    *R = Rf.view(R->sizes());
  }
}

std::tuple<at::Tensor, at::Tensor> householder_qr(const at::Tensor& Y) {
  auto [Q, R] = at::linalg_qr(Y, "reduced");
  return {Q, R};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> orth_qr(const at::Tensor& Y) {
  const int64_t l = Y.size(-1);
  CholQRStep first = cholesky_qr_step(Y);
  CholQRStep second = cholesky_qr_step(first.Q);
  at::Tensor Q = second.Q;
  at::Tensor R = at::matmul(second.R, first.R);

  // R2^T R2 = Q1^T Q1, so ||R2 - I||_F < 1/2 bounds cond(Q1) <= 3: then the second sweep has
  // restored orthogonality to O(eps).  Otherwise (rank deficiency, cond(Y) ~ 1/sqrt(eps)) fall
  // back.  `!(dev < 0.25)` also catches NaN from a failed factorisation.
  at::Tensor dev = (second.R - at::eye(l, Y.options())).square().sum({-2, -1});
  at::Tensor bad = first.info.ne(0).logical_or(second.info.ne(0)).logical_or(dev.lt(0.25).logical_not());
  if (!bad.any().item<bool>()) {
    return {Q, R};
  }
  if (Y.dim() == 2) {
    return householder_qr(Y);
  }
  repair_entries(Y, bad, Q, &R, householder_qr);
  return {Q, R};
}

at::Tensor range_basis(const at::Tensor& Y) {
  CholQRStep step = cholesky_qr_step(Y);
  // One sweep leaves Q^T Q - I ~ eps * cond(Y)^2.  cond(R) >= max|r_ii| / min|r_ii|; demand
  // eps * ratio^2 <= 1/64 (so Q stays within a small factor of orthonormal), else do the
  // full CholeskyQR2-with-fallback.
  at::Tensor diag = step.R.diagonal(0, -2, -1).abs();
  at::Tensor ratio = diag.amax(-1) / diag.amin(-1);
  const double eps = Y.scalar_type() == at::kDouble ? std::numeric_limits<double>::epsilon()
                                                    : std::numeric_limits<float>::epsilon();
  at::Tensor bad = step.info.ne(0).logical_or((ratio.square() * eps).le(1.0 / 64).logical_not());
  if (!bad.any().item<bool>()) {
    return step.Q;
  }
  if (Y.dim() == 2) {
    return std::get<0>(orth_qr(Y));
  }
  at::Tensor Q = step.Q;
  repair_entries(Y, bad, Q, nullptr, orth_qr);
  return Q;
}

}  // namespace svdlora::cpu
