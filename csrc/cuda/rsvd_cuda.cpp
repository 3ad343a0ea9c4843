// CUDA kernels of svdlora::rsvd, rsvd_krylov and rsvd_adaptive: the shared driver
// (common/rsvd_driver.h) on cuBLAS passes over A in its own dtype, the sync-free float64
// shifted CholeskyQR3, and a batched cuSOLVER eigensolver for the small SVD.  Everything runs
// on torch's current stream with workspaces from its caching allocator.  The fixed-rank op
// never reads device data on the host, so it can be captured in a CUDA graph; the adaptive op
// reads one number per block (its stopping rule and output shape depend on the data).
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/rsvd_driver.h"
#include "cuda/orth_cuda.h"
#include "cuda/passes_cuda.h"
#include "cuda/small_svd_cuda.h"

namespace svdlora::cuda {
namespace {

// The raw passes over the tall view of A (rows >= cols) and the CUDA linear-algebra kernels;
// PCA centring is added by common/centering.h.
struct CudaDevice {
  at::Tensor A;
  at::ScalarType dtype;

  // bf16/fp16 A: one split term for the sketch and the power iterations, three (float32's 24
  // bits) for B = Q^T A (see passes_cuda.h).
  static int terms(bool precise) { return precise ? 3 : 1; }

  at::Tensor apply(const at::Tensor& X, bool precise) const {
    return multiply(A, /*transpose=*/false, X, terms(precise));
  }
  at::Tensor apply_t(const at::Tensor& Y, bool precise) const {
    return multiply(A, /*transpose=*/true, Y, terms(precise));
  }
  at::Tensor orth(const at::Tensor& Y) const { return cuda::orth(Y, dtype); }
  // A second, cheaper scheme for intermediate bases would save little: the float64 Gram
  // products are O(m l^2) against the passes' O(m n l).
  at::Tensor range_basis(const at::Tensor& Y) const { return cuda::orth(Y, dtype); }
  // The float64 shifted CholeskyQR3 resolves weak directions as well as Householder does.
  at::Tensor stable_basis(const at::Tensor& Y) const { return cuda::orth(Y, dtype); }
  Factors small_svd(const at::Tensor& Q, const at::Tensor& Bt, int64_t k) const {
    return cuda::small_svd(Q, Bt, k);
  }
};

CudaDevice make_device(const at::Tensor& tall, at::ScalarType dtype) { return {tall, dtype}; }

Factors rsvd_cuda(const at::Tensor& A, const at::Tensor& omega,
                  const std::optional<at::Tensor>& col_mean, int64_t rank, int64_t n_iter) {
  c10::cuda::CUDAGuard guard(A.device());
  return run_fixed_rank(A, omega, col_mean, rank, n_iter, make_device);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rsvd_krylov_cuda(
    const at::Tensor& A, const at::Tensor& omega, const std::optional<at::Tensor>& col_mean,
    int64_t rank, int64_t settle_passes, int64_t max_passes, double stop_tol, double gain_tol) {
  c10::cuda::CUDAGuard guard(A.device());
  return run_block_krylov(A, omega, col_mean, rank, settle_passes, max_passes, stop_tol,
                          gain_tol, make_device);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rsvd_adaptive_cuda(
    const at::Tensor& A, const at::Tensor& omega, const std::optional<at::Tensor>& col_mean,
    double tol, int64_t block_size, int64_t max_rank, int64_t n_iter) {
  c10::cuda::CUDAGuard guard(A.device());
  return run_adaptive_rank(A, omega, col_mean, tol, block_size, max_rank, n_iter, make_device);
}

}  // namespace

TORCH_LIBRARY_IMPL(svdlora, CUDA, m) {
  m.impl("rsvd", &rsvd_cuda);
  m.impl("rsvd_adaptive", &rsvd_adaptive_cuda);
  m.impl("rsvd_krylov", &rsvd_krylov_cuda);
}

}  // namespace svdlora::cuda
