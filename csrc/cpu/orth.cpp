// CholeskyQR2 with a Householder fallback (see orth.h).
#include "cpu/orth.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/linalg_cholesky_ex.h>
#include <ATen/ops/linalg_qr.h>
#include <ATen/ops/linalg_solve_triangular.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/nonzero.h>

namespace svdlora::cpu {
namespace {

struct CholQRStep {
  at::Tensor Q, R, info;
};

CholQRStep cholesky_qr_step(const at::Tensor& Y) {
  at::Tensor gram = at::matmul(Y.mT(), Y);
  auto [R, info] = at::linalg_cholesky_ex(gram, /*upper=*/true, /*check_errors=*/false);
  at::Tensor Q = at::linalg_solve_triangular(R, Y, /*upper=*/true, /*left=*/false);
  return {Q, R, info};
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
  // back.  `!(dev < 0.5)` also catches NaN from a failed factorisation.
  at::Tensor dev = (second.R - at::eye(l, Y.options())).square().sum({-2, -1});
  at::Tensor bad = first.info.ne(0).logical_or(second.info.ne(0)).logical_or(dev.lt(0.25).logical_not());
  if (!bad.any().item<bool>()) {
    return {Q, R};
  }
  if (Y.dim() == 2) {
    auto [Qh, Rh] = at::linalg_qr(Y, "reduced");
    return {Qh, Rh};
  }
  // Batched: redo only the failing entries.
  const int64_t m = Y.size(-2);
  at::Tensor Yf = Y.reshape({-1, m, l});
  at::Tensor Qf = Q.reshape({-1, m, l}).clone();
  at::Tensor Rf = R.reshape({-1, l, l}).clone();
  at::Tensor idx = at::nonzero(bad.reshape({-1})).squeeze(-1);
  auto [Qh, Rh] = at::linalg_qr(Yf.index_select(0, idx), "reduced");
  Qf.index_copy_(0, idx, Qh);
  Rf.index_copy_(0, idx, Rh);
  return {Qf.view(Q.sizes()), Rf.view(R.sizes())};
}

}  // namespace svdlora::cpu
