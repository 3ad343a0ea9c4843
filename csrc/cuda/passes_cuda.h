// Products of the input matrix with thin panels on cuBLAS: the "passes" over A.
#pragma once

#include <ATen/core/Tensor.h>

namespace svdlora::cuda {

// op(A) @ X for A (..., M, N) with op the identity (transpose = false, X (..., N, l)) or the
// transpose (X (..., M, l)); X may also be 2-D and shared by every batch entry.  A may be a
// strided view (row- or column-major in its last two dims) and float16/bfloat16: it is read
// in place by a strided-batched cublasGemmEx with fp32 accumulation -- never copied to fp32.
// Returns (..., rows, l) in X's dtype (float32 for low-precision A, else A's dtype).
//
// cuBLAS multiplies operands of one type, so for fp16/bf16 A the fp32 panel is split into
// `terms` pieces of A's dtype (X = X1 + X2 + ...), each product accumulated into the same
// fp32 output: one term rounds X to 8 (bf16) / 11 (fp16) bits, which the sketch and the power
// iterations tolerate (they only need a good span); three terms carry float32's 24 bits, which
// the final B = Q^T A needs.
at::Tensor multiply(const at::Tensor& A, bool transpose, const at::Tensor& X, int terms);

}  // namespace svdlora::cuda
