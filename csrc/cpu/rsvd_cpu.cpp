// CPU kernels of svdlora::rsvd and svdlora::rsvd_adaptive: the shared driver
// (common/rsvd_driver.h) on MKL/OpenBLAS GEMMs for the passes, CholeskyQR2 with a Householder
// fallback for orthonormalisation, and LAPACK for the small l x l SVD.
#include <ATen/ops/linalg_svd.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/rsvd_driver.h"
#include "cpu/orth.h"
#include "cpu/passes.h"

namespace svdlora::cpu {
namespace {

struct CpuBackend {
  CenteredMatrix op;

  at::Tensor apply(const at::Tensor& X, bool /*precise*/) const { return op.apply(X); }
  at::Tensor apply_t(const at::Tensor& Y, bool /*precise*/) const { return op.apply_t(Y); }
  at::Tensor orth(const at::Tensor& Y) const { return std::get<0>(orth_qr(Y)); }
  at::Tensor range_basis(const at::Tensor& Y) const { return cpu::range_basis(Y); }
  double squared_frobenius() const { return op.squared_frobenius(); }
  int64_t rows() const { return op.rows(); }
  int64_t cols() const { return op.cols(); }

  // B (l x n) through a QR of B^T: B^T = Qb R gives B = R^T Qb^T = Vr S (Qb Ur)^T with
  // R = Ur S Vr^T -- one tall-skinny QR and an l x l SVD instead of gesdd on l x n.
  Factors small_svd(const at::Tensor& Q, const at::Tensor& Bt, int64_t k) const {
    auto [Qb, R] = orth_qr(Bt);
    auto [Ur, S, Vrh] = at::linalg_svd(R, /*full_matrices=*/false);
    at::Tensor U = at::matmul(Q, Vrh.mT().narrow(-1, 0, k));
    at::Tensor Vh = at::matmul(Qb, Ur.narrow(-1, 0, k)).mT();
    return {U, S.narrow(-1, 0, k), Vh};
  }
};

CpuBackend make_backend(const at::Tensor& A, const std::optional<at::Tensor>& col_mean,
                        bool transposed) {
  return {make_tall_operator(A, col_mean, transposed, compute_dtype(A))};
}

Factors rsvd_cpu(const at::Tensor& A, const at::Tensor& omega,
                 const std::optional<at::Tensor>& col_mean, int64_t rank, int64_t n_iter) {
  check_rsvd_inputs(A, omega, col_mean, n_iter);
  check_rank(rank, omega);
  const bool transposed = A.size(-2) < A.size(-1);
  return rsvd_fixed_rank(make_backend(A, col_mean, transposed), omega, rank, n_iter, transposed);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rsvd_adaptive_cpu(
    const at::Tensor& A, const at::Tensor& omega, const std::optional<at::Tensor>& col_mean,
    double tol, int64_t block_size, int64_t max_rank, int64_t n_iter) {
  check_rsvd_inputs(A, omega, col_mean, n_iter);
  check_adaptive_inputs(A, omega, tol, block_size, max_rank);
  const bool transposed = A.size(-2) < A.size(-1);
  return rsvd_adaptive_rank(make_backend(A, col_mean, transposed), omega, tol, block_size,
                            max_rank, n_iter, transposed);
}

}  // namespace

TORCH_LIBRARY_IMPL(svdlora, CPU, m) {
  m.impl("rsvd", &rsvd_cpu);
  m.impl("rsvd_adaptive", &rsvd_adaptive_cpu);
}

}  // namespace svdlora::cpu
