// CUDA kernels of svdlora::rsvd and svdlora::rsvd_adaptive: the shared driver
// (common/rsvd_driver.h) on cuBLAS passes over A in its own dtype, the sync-free float64
// shifted CholeskyQR3, and a batched cuSOLVER eigensolver for the small SVD.  Everything runs
// on torch's current stream with workspaces from its caching allocator.  The fixed-rank op
// never reads device data on the host, so it can be captured in a CUDA graph; the adaptive op
// reads one number per block (its stopping rule and output shape depend on the data).
#include <ATen/TensorOperators.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/ones.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/checks.h"
#include "common/rsvd_driver.h"
#include "cuda/orth_cuda.h"
#include "cuda/passes_cuda.h"
#include "cuda/small_svd_cuda.h"

namespace svdlora::cuda {
namespace {

// The centred matrix A_c = A - left right^T in its tall orientation (rows >= cols), with
// left (..., rows) and right (..., cols) present only for PCA centring.
struct CudaBackend {
  at::Tensor A;
  std::optional<at::Tensor> left, right;
  at::ScalarType dtype;

  static int terms(bool precise) { return precise ? 3 : 1; }

  at::Tensor apply(const at::Tensor& X, bool precise) const {
    at::Tensor Y = multiply(A, /*transpose=*/false, X, terms(precise));
    if (!left) return Y;
    return Y - left->unsqueeze(-1) * at::matmul(right->unsqueeze(-2), X);
  }
  at::Tensor apply_t(const at::Tensor& Y, bool precise) const {
    at::Tensor Z = multiply(A, /*transpose=*/true, Y, terms(precise));
    if (!left) return Z;
    return Z - right->unsqueeze(-1) * at::matmul(left->unsqueeze(-2), Y);
  }
  at::Tensor orth(const at::Tensor& Y) const { return cuda::orth(Y, dtype); }
  // A second, cheaper scheme for intermediate bases would save little: the float64 Gram
  // products are O(m l^2) against the passes' O(m n l).
  at::Tensor range_basis(const at::Tensor& Y) const { return cuda::orth(Y, dtype); }
  Factors small_svd(const at::Tensor& Q, const at::Tensor& Bt, int64_t k) const {
    return cuda::small_svd(Q, Bt, k);
  }
  int64_t rows() const { return A.size(-2); }
  int64_t cols() const { return A.size(-1); }

  // ||A - l r^T||^2 = ||A||^2 - 2 l^T A r + ||l||^2 ||r||^2 (2-D A: the adaptive mode),
  // accumulated in float64 over row blocks so no full-size float copy of A is ever made.
  double squared_frobenius() const {
    const int64_t M = A.size(-2), N = A.size(-1);
    const int64_t block = std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(N, 1));
    at::Tensor total = at::zeros({}, A.options().dtype(at::kDouble));
    at::Tensor cross = at::zeros({}, A.options().dtype(at::kDouble));
    std::optional<at::Tensor> r64;
    if (right) r64 = right->to(at::kDouble);
    for (int64_t start = 0; start < M; start += block) {
      at::Tensor rows = A.narrow(-2, start, std::min(block, M - start)).to(at::kDouble);
      total.add_(rows.square().sum());
      if (left) {
        at::Tensor l64 = left->narrow(-1, start, rows.size(-2)).to(at::kDouble);
        cross.add_((l64 * at::matmul(rows, *r64)).sum());
      }
    }
    double value = total.item<double>();
    if (left) {
      value += -2 * cross.item<double>() +
               left->to(at::kDouble).square().sum().item<double>() * r64->square().sum().item<double>();
    }
    return std::max(value, 0.0);
  }
};

CudaBackend make_backend(const at::Tensor& A, const std::optional<at::Tensor>& col_mean,
                         bool transposed) {
  const at::ScalarType dtype = compute_dtype(A);
  CudaBackend op{transposed ? A.mT() : A, std::nullopt, std::nullopt, dtype};
  if (col_mean) {
    // A - 1 mu^T, or for the transposed orientation A^T - mu 1^T.
    at::Tensor mu = col_mean->to(dtype);
    std::vector<int64_t> ones_shape(A.sizes().begin(), A.sizes().end() - 1);
    at::Tensor ones = at::ones(ones_shape, mu.options());
    op.left = transposed ? mu : ones;
    op.right = transposed ? ones : mu;
  }
  return op;
}

Factors rsvd_cuda(const at::Tensor& A, const at::Tensor& omega,
                  const std::optional<at::Tensor>& col_mean, int64_t rank, int64_t n_iter) {
  check_rsvd_inputs(A, omega, col_mean, n_iter);
  check_rank(rank, omega);
  c10::cuda::CUDAGuard guard(A.device());
  const bool transposed = A.size(-2) < A.size(-1);
  return rsvd_fixed_rank(make_backend(A, col_mean, transposed), omega, rank, n_iter, transposed);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rsvd_adaptive_cuda(
    const at::Tensor& A, const at::Tensor& omega, const std::optional<at::Tensor>& col_mean,
    double tol, int64_t block_size, int64_t max_rank, int64_t n_iter) {
  check_rsvd_inputs(A, omega, col_mean, n_iter);
  check_adaptive_inputs(A, omega, tol, block_size, max_rank);
  c10::cuda::CUDAGuard guard(A.device());
  const bool transposed = A.size(-2) < A.size(-1);
  return rsvd_adaptive_rank(make_backend(A, col_mean, transposed), omega, tol, block_size,
                            max_rank, n_iter, transposed);
}

}  // namespace

TORCH_LIBRARY_IMPL(svdlora, CUDA, m) {
  m.impl("rsvd", &rsvd_cuda);
  m.impl("rsvd_adaptive", &rsvd_adaptive_cuda);
}

}  // namespace svdlora::cuda
