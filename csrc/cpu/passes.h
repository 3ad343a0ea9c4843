// Products with the (possibly low-precision, possibly strided) input matrix on the CPU: the
// "passes" over A that dominate randomized SVD.
#pragma once

#include <ATen/core/Tensor.h>

namespace svdlora::cpu {

// A (..., M, N) as the algorithms read it.  A may be a strided view (e.g. the transpose of the
// caller's matrix) and may be fp16/bf16: such an A is up-cast one row block at a time, so there
// is never a full fp32 copy of it.  PCA centring is added on top by common/centering.h.
class DensePasses {
 public:
  DensePasses(at::Tensor A, at::ScalarType compute_dtype);

  at::Tensor apply(const at::Tensor& X) const;    // A @ X,   X (..., N, l) or (N, l)
  at::Tensor apply_t(const at::Tensor& Y) const;  // A^T @ Y, Y (..., M, l)

 private:
  int64_t block_rows() const;
  // Calls fn(first_row, rows, block) over row blocks of A up-cast to the compute dtype.
  template <typename F>
  void for_each_upcast_block(F&& fn) const;

  at::Tensor A_;
  at::ScalarType dtype_;
};

}  // namespace svdlora::cpu
