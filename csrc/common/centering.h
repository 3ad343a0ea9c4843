// The matrix the rsvd algorithms see: the caller's A in its tall orientation (rows >= cols),
// minus an optional rank-one term left right^T -- PCA's implicit centring A - 1 mu^T -- which
// is never formed.  A device supplies only the raw products with A and its orthonormalisation
// and small-SVD kernels; the centring corrections and ||A_c||_F^2 are written here, once for
// every device.
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/ops/linalg_vector_norm.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "common/checks.h"

namespace svdlora {

using Factors = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// The rank-one term of PCA centring in the tall orientation: the caller's A - 1 mu^T becomes,
// transposed, A^T - mu 1^T.  Both absent without col_mean.
inline std::pair<std::optional<at::Tensor>, std::optional<at::Tensor>> centring_terms(
    const at::Tensor& A, const std::optional<at::Tensor>& col_mean, bool transposed,
    at::ScalarType dtype) {
  if (!col_mean.has_value()) return {std::nullopt, std::nullopt};
  at::Tensor mu = col_mean->to(dtype);
  std::vector<int64_t> ones_shape(A.sizes().begin(), A.sizes().end() - 1);  // (..., m)
  at::Tensor ones = at::ones(ones_shape, mu.options());
  if (transposed) return {mu, ones};
  return {ones, mu};
}

// Device must provide, for its tall view of A (..., M, N), M >= N:
//   at::Tensor apply(X, precise), apply_t(Y, precise)   A @ X and A^T @ Y (`precise`: the
//                                                        result feeds B = Q^T A)
//   at::Tensor orth(Y)           orthonormal basis of span(Y)
//   at::Tensor range_basis(Y)    a well-conditioned basis of span(Y) (between passes)
//   at::Tensor stable_basis(Y)   an orthonormal basis of span(Y) that resolves its weak
//                                directions too (block Krylov's new blocks)
//   Factors small_svd(Q, Bt, k)  rank-k SVD of Q B given B^T = A^T Q
template <class Device>
class CenteredOperator {
 public:
  CenteredOperator(Device device, at::Tensor tall, std::optional<at::Tensor> left,
                   std::optional<at::Tensor> right)
      : device_(std::move(device)), tall_(std::move(tall)), left_(std::move(left)),
        right_(std::move(right)) {}

  // (A - l r^T) X = A X - l (r^T X)
  at::Tensor apply(const at::Tensor& X, bool precise) const {
    at::Tensor Y = device_.apply(X, precise);
    if (left_.has_value()) Y.sub_(left_->unsqueeze(-1) * at::matmul(right_->unsqueeze(-2), X));
    return Y;
  }

  // (A - l r^T)^T Y = A^T Y - r (l^T Y)
  at::Tensor apply_t(const at::Tensor& Y, bool precise) const {
    at::Tensor Z = device_.apply_t(Y, precise);
    if (left_.has_value()) Z.sub_(right_->unsqueeze(-1) * at::matmul(left_->unsqueeze(-2), Y));
    return Z;
  }

  // ||A - l r^T||_F^2 in float64, a block of rows at a time (never a full-size copy of A; the
  // centred values are formed before squaring rather than expanding the square).  One host
  // read at the end.
  double squared_frobenius() const {
    const int64_t M = tall_.size(-2);
    const int64_t per_row = std::max<int64_t>(1, tall_.numel() / std::max<int64_t>(M, 1));
    const int64_t step = std::max<int64_t>(1, (int64_t{1} << 22) / per_row);
    at::Tensor total = at::zeros({}, tall_.options().dtype(at::kDouble));
    std::optional<at::Tensor> right64;
    if (right_.has_value()) right64 = right_->to(at::kDouble).unsqueeze(-2);
    for (int64_t start = 0; start < M; start += step) {
      const int64_t len = std::min(step, M - start);
      at::Tensor rows = tall_.narrow(-2, start, len).to(at::kDouble);
      if (left_.has_value()) {
        rows = rows - left_->narrow(-1, start, len).to(at::kDouble).unsqueeze(-1) * *right64;
      }
      total.add_(rows.square().sum());
    }
    return total.item<double>();
  }

  // ||A - l r^T||_F^2 of every matrix of the batch, float64, shape (...).  Uncentred: a norm
  // in the compute dtype (one read of A, accumulated blockwise by ATen, accurate to a few
  // eps relative -- the rounding of the Ritz values it is compared with).  Centred: the
  // exact blockwise sum above, per matrix.
  at::Tensor squared_frobenius_per_matrix() const {
    if (!left_.has_value()) {
      at::Tensor norm = at::linalg_vector_norm(tall_, 2, at::IntArrayRef{-2, -1}, false,
                                               compute_dtype(tall_));
      return norm.to(at::kDouble).square();
    }
    const int64_t M = tall_.size(-2);
    const int64_t per_row = std::max<int64_t>(1, tall_.numel() / std::max<int64_t>(M, 1));
    const int64_t step = std::max<int64_t>(1, (int64_t{1} << 22) / per_row);
    at::Tensor right64 = right_->to(at::kDouble).unsqueeze(-2);
    at::Tensor total;
    for (int64_t start = 0; start < M; start += step) {
      const int64_t len = std::min(step, M - start);
      at::Tensor rows = tall_.narrow(-2, start, len).to(at::kDouble) -
                        left_->narrow(-1, start, len).to(at::kDouble).unsqueeze(-1) * right64;
      at::Tensor part = rows.square().sum(at::IntArrayRef{-2, -1});
      total = total.defined() ? total + part : part;
    }
    return total;
  }

  at::Tensor orth(const at::Tensor& Y) const { return device_.orth(Y); }
  at::Tensor range_basis(const at::Tensor& Y) const { return device_.range_basis(Y); }
  at::Tensor stable_basis(const at::Tensor& Y) const { return device_.stable_basis(Y); }
  Factors small_svd(const at::Tensor& Q, const at::Tensor& Bt, int64_t k) const {
    return device_.small_svd(Q, Bt, k);
  }
  int64_t rows() const { return tall_.size(-2); }
  int64_t cols() const { return tall_.size(-1); }

 private:
  Device device_;
  at::Tensor tall_;
  std::optional<at::Tensor> left_, right_;
};

}  // namespace svdlora
