// Matrix passes over A for the ATen-based rsvd kernels (see passes.h).
#include "cpu/passes.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <utility>

namespace svdlora::cpu {

CenteredMatrix::CenteredMatrix(at::Tensor A, std::optional<at::Tensor> left,
                               std::optional<at::Tensor> right, at::ScalarType compute_dtype)
    : A_(std::move(A)), left_(std::move(left)), right_(std::move(right)), dtype_(compute_dtype) {}

int64_t CenteredMatrix::block_rows() const {
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
void CenteredMatrix::for_each_upcast_block(F&& fn) const {
  const int64_t M = A_.size(-2);
  const int64_t step = block_rows();
  for (int64_t i0 = 0; i0 < M; i0 += step) {
    const int64_t len = std::min(step, M - i0);
    fn(i0, len, A_.narrow(-2, i0, len).to(dtype_));
  }
}

at::Tensor CenteredMatrix::dense_apply(const at::Tensor& X) const {
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

at::Tensor CenteredMatrix::dense_apply_t(const at::Tensor& Y) const {
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

at::Tensor CenteredMatrix::apply(const at::Tensor& X) const {
  at::Tensor out = dense_apply(X);
  if (left_.has_value()) {
    // (A - a b^T) X = A X - a (b^T X)
    at::Tensor bx = at::matmul(right_->unsqueeze(-2), X);  // (..., 1, l)
    out.sub_(left_->unsqueeze(-1) * bx);
  }
  return out;
}

at::Tensor CenteredMatrix::apply_t(const at::Tensor& Y) const {
  at::Tensor out = dense_apply_t(Y);
  if (left_.has_value()) {
    // (A - a b^T)^T Y = A^T Y - b (a^T Y)
    at::Tensor ay = at::matmul(left_->unsqueeze(-2), Y);  // (..., 1, l)
    out.sub_(right_->unsqueeze(-1) * ay);
  }
  return out;
}

double CenteredMatrix::squared_frobenius() const {
  // ||A - a b^T||^2 = ||A||^2 - 2 a^T A b + ||a||^2 ||b||^2, summed in float64 block by block.
  double total = 0.0;
  for_each_upcast_block([&](int64_t, int64_t, const at::Tensor& block) {
    total += block.to(at::kDouble).square().sum().item<double>();
  });
  if (left_.has_value()) {
    at::Tensor a = left_->to(at::kDouble), b = right_->to(at::kDouble);
    at::Tensor Ab = dense_apply(right_->unsqueeze(-1)).to(at::kDouble).squeeze(-1);
    total += -2.0 * (a * Ab).sum().item<double>() +
             (a.square().sum(-1) * b.square().sum(-1)).sum().item<double>();
  }
  return std::max(total, 0.0);
}

CenteredMatrix make_tall_operator(const at::Tensor& A, const std::optional<at::Tensor>& col_mean,
                                  bool transpose, at::ScalarType compute_dtype) {
  at::Tensor tall = transpose ? A.mT() : A;
  if (!col_mean.has_value()) {
    return CenteredMatrix(tall, std::nullopt, std::nullopt, compute_dtype);
  }
  // Caller's matrix is A - 1 mu^T; transposed it is A^T - mu 1^T.
  at::Tensor mu = col_mean->to(compute_dtype);
  std::vector<int64_t> ones_shape(A.sizes().begin(), A.sizes().end() - 1);  // (..., m)
  at::Tensor ones = at::ones(ones_shape, mu.options());
  if (transpose) {
    return CenteredMatrix(tall, mu, ones, compute_dtype);
  }
  return CenteredMatrix(tall, ones, mu, compute_dtype);
}

}  // namespace svdlora::cpu
