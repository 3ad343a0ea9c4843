// CPU kernels of svdlora::rsvd, rsvd_krylov and rsvd_adaptive: the shared driver
// (common/rsvd_driver.h) on MKL/OpenBLAS GEMMs for the passes, CholeskyQR2 with a Householder
// fallback for orthonormalisation, and LAPACK for the small l x l SVD.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/linalg_qr.h>
#include <ATen/ops/linalg_svd.h>
#include <torch/library.h>

#include <vector>

#include "common/rsvd_driver.h"
#include "cpu/orth.h"
#include "cpu/passes.h"

namespace svdlora::cpu {
namespace {

// SVD of a batch of small l x l matrices.  ATen runs gesdd as a serial loop over the batch,
// and at l ~ 26 one call (~75 us here) is too small for MKL to thread, so the batch is split
// across ATen's intra-op threads instead (nested ATen calls run single-threaded).
Factors small_square_svd(const at::Tensor& R) {
  const int64_t l = R.size(-1);
  if (R.dim() == 2 || at::get_num_threads() == 1) {
    auto [U, S, Vh] = at::linalg_svd(R, /*full_matrices=*/false);
    return {U, S, Vh};
  }
  at::Tensor flat = R.reshape({-1, l, l});
  const int64_t count = flat.size(0);
  at::Tensor U = at::empty_like(flat), Vh = at::empty_like(flat);
  at::Tensor S = at::empty({count, l}, R.options());
  at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
    auto [u, s, vh] = at::linalg_svd(flat.narrow(0, begin, end - begin), /*full_matrices=*/false);
    U.narrow(0, begin, end - begin).copy_(u);
    S.narrow(0, begin, end - begin).copy_(s);
    Vh.narrow(0, begin, end - begin).copy_(vh);
  });
  std::vector<int64_t> vec_shape(R.sizes().begin(), R.sizes().end() - 1);
  return {U.view(R.sizes()), S.view(vec_shape), Vh.view(R.sizes())};
}

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
    auto [Ur, S, Vrh] = small_square_svd(R);
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
