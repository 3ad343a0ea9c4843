// CPU kernels of svdlora::rsvd, rsvd_krylov and rsvd_adaptive: the shared driver
// (common/rsvd_driver.h) on MKL/OpenBLAS GEMMs for the passes, CholeskyQR2 with a Householder
// fallback for orthonormalisation, and LAPACK for the small l x l SVD.
#include <ATen/ops/linalg_qr.h>
#include <ATen/ops/linalg_svd.h>
#include <torch/library.h>

#include "common/rsvd_driver.h"
#include "cpu/orth.h"
#include "cpu/passes.h"

namespace svdlora::cpu {
namespace {

struct CpuDevice {
  DensePasses passes;

  at::Tensor apply(const at::Tensor& X, bool /*precise*/) const { return passes.apply(X); }
  at::Tensor apply_t(const at::Tensor& Y, bool /*precise*/) const { return passes.apply_t(Y); }
  at::Tensor orth(const at::Tensor& Y) const { return std::get<0>(orth_qr(Y)); }
  at::Tensor range_basis(const at::Tensor& Y) const { return cpu::range_basis(Y); }
  // Householder (LAPACK geqrf/orgqr): backward stable, as fast as a float64 CholeskyQR here.
  at::Tensor stable_basis(const at::Tensor& Y) const {
    return std::get<0>(at::linalg_qr(Y, "reduced"));
  }

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

CpuDevice make_device(const at::Tensor& tall, at::ScalarType dtype) {
  return {DensePasses(tall, dtype)};
}

Factors rsvd_cpu(const at::Tensor& A, const at::Tensor& omega,
                 const std::optional<at::Tensor>& col_mean, int64_t rank, int64_t n_iter) {
  return run_fixed_rank(A, omega, col_mean, rank, n_iter, make_device);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rsvd_krylov_cpu(
    const at::Tensor& A, const at::Tensor& omega, const std::optional<at::Tensor>& col_mean,
    int64_t rank, int64_t settle_passes, int64_t max_passes, double stop_tol, double gain_tol) {
  return run_block_krylov(A, omega, col_mean, rank, settle_passes, max_passes, stop_tol,
                          gain_tol, make_device);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rsvd_adaptive_cpu(
    const at::Tensor& A, const at::Tensor& omega, const std::optional<at::Tensor>& col_mean,
    double tol, int64_t block_size, int64_t max_rank, int64_t n_iter) {
  return run_adaptive_rank(A, omega, col_mean, tol, block_size, max_rank, n_iter, make_device);
}

}  // namespace

TORCH_LIBRARY_IMPL(svdlora, CPU, m) {
  m.impl("rsvd", &rsvd_cpu);
  m.impl("rsvd_adaptive", &rsvd_adaptive_cpu);
  m.impl("rsvd_krylov", &rsvd_krylov_cpu);
}

}  // namespace svdlora::cpu
