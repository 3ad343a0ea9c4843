// Matrix passes over A for the CPU rsvd kernels (see passes.h).
#include "cpu/passes.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <utility>
#include <vector>

namespace svdlora::cpu {

DensePasses::DensePasses(at::Tensor A, at::ScalarType compute_dtype)
    : A_(std::move(A)), dtype_(compute_dtype) {}

int64_t DensePasses::block_rows() const {
  // ~4M elements (16 MB of fp32) per up-cast block: large enough for efficient GEMMs, small
  // next to A itself.
  const int64_t per_row = std::max<int64_t>(1, A_.numel() / A_.size(-2));
  return std::max<int64_t>(1, (int64_t{1} << 22) / per_row);
}

namespace {

// MKL (and OpenBLAS) on row-major storage R: R @ X is fastest as is, R^T @ Y as (Y^T R)^T
// (measured 5-25% faster for skinny Y).  A wide input reaches us as a transposed view, so
// pick the formulation from the storage order, not from the logical orientation.
bool is_row_major(const at::Tensor& M) { return M.stride(-1) == 1; }

at::Tensor storage_times(const at::Tensor& R, const at::Tensor& X) { return at::matmul(R, X); }

at::Tensor storage_t_times(const at::Tensor& R, const at::Tensor& Y) {
  return at::matmul(Y.mT(), R).mT();
}

// A @ X for a same-dtype A, in the storage-friendly formulation.
at::Tensor fast_matmul(const at::Tensor& A, const at::Tensor& X) {
  if (is_row_major(A) || !is_row_major(A.mT())) {
    return storage_times(A, X);
  }
  return storage_t_times(A.mT(), X);
}

}  // namespace

template <typename F>
void DensePasses::for_each_upcast_block(F&& fn) const {
  const int64_t M = A_.size(-2);
  const int64_t step = block_rows();
  for (int64_t i0 = 0; i0 < M; i0 += step) {
    const int64_t len = std::min(step, M - i0);
    fn(i0, len, A_.narrow(-2, i0, len).to(dtype_));
  }
}

at::Tensor DensePasses::apply(const at::Tensor& X) const {
  if (A_.scalar_type() == dtype_) {
    return fast_matmul(A_, X);
  }
  std::vector<int64_t> shape(A_.sizes().begin(), A_.sizes().end());
  shape.back() = X.size(-1);
  at::Tensor out = at::empty(shape, X.options());
  for_each_upcast_block([&](int64_t i0, int64_t len, const at::Tensor& block) {
    out.narrow(-2, i0, len).copy_(at::matmul(block, X));
  });
  return out;
}

at::Tensor DensePasses::apply_t(const at::Tensor& Y) const {
  if (A_.scalar_type() == dtype_) {
    return fast_matmul(A_.mT(), Y);
  }
  std::vector<int64_t> shape(A_.sizes().begin(), A_.sizes().end());
  shape[shape.size() - 2] = A_.size(-1);
  shape.back() = Y.size(-1);
  at::Tensor out = at::zeros(shape, Y.options());
  for_each_upcast_block([&](int64_t i0, int64_t len, const at::Tensor& block) {
    out.add_(at::matmul(block.mT(), Y.narrow(-2, i0, len)));
  });
  return out;
}

}  // namespace svdlora::cpu
