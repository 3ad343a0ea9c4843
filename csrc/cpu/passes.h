// Products with the (optionally centred, optionally low-precision) input matrix: the "passes"
// over A that dominate randomized SVD.
#pragma once

#include <ATen/core/Tensor.h>
#include <optional>

namespace svdlora::cpu {

// Represents A_c = A - left * right^T for A (..., M, N) without forming A_c.  A may be a
// strided view (e.g. the transpose of the caller's matrix) and may be fp16/bf16: such an A is
// up-cast one row block at a time, so there is never a full fp32 copy of it.
class CenteredMatrix {
 public:
  CenteredMatrix(at::Tensor A, std::optional<at::Tensor> left, std::optional<at::Tensor> right,
                 at::ScalarType compute_dtype);

  at::Tensor apply(const at::Tensor& X) const;    // A_c @ X,   X (..., N, l) or (N, l)
  at::Tensor apply_t(const at::Tensor& Y) const;  // A_c^T @ Y, Y (..., M, l)
  double squared_frobenius() const;               // ||A_c||_F^2 accumulated in float64

  int64_t rows() const { return A_.size(-2); }
  int64_t cols() const { return A_.size(-1); }

 private:
  at::Tensor dense_apply(const at::Tensor& X) const;
  at::Tensor dense_apply_t(const at::Tensor& Y) const;
  int64_t block_rows() const;
  // Calls fn(first_row, rows, block) over row blocks of A up-cast to the compute dtype.
  template <typename F>
  void for_each_upcast_block(F&& fn) const;

  at::Tensor A_;
  std::optional<at::Tensor> left_, right_;
  at::ScalarType dtype_;
};

// Build the operator for the canonical tall orientation (M >= N): transposes a wide A as a view
// and maps the PCA column means onto the right side.
CenteredMatrix make_tall_operator(const at::Tensor& A, const std::optional<at::Tensor>& col_mean,
                                  bool transpose, at::ScalarType compute_dtype);

}  // namespace svdlora::cpu
