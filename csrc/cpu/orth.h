// Tall-skinny orthonormalisation used by the rsvd kernels built on ATen.
#pragma once

#include <ATen/core/Tensor.h>
#include <tuple>

namespace svdlora::cpu {

// Y (..., m, l) with m >= l  ->  (Q, R) with Y = Q R, Q orthonormal columns, R upper triangular.
// CholeskyQR2 (two Gram + Cholesky + triangular-solve sweeps: GEMM speed, no Householder
// panels); any batch entry whose Gram is not numerically positive definite, or whose second
// sweep shows Q1 was far from orthonormal, is redone with Householder QR.
std::tuple<at::Tensor, at::Tensor> orth_qr(const at::Tensor& Y);

// A well-conditioned basis of range(Y) for the intermediate steps of subspace iteration,
// where only the span matters: one CholeskyQR sweep, falling back to orth_qr for entries
// whose Cholesky fails or whose R looks too ill-conditioned for a single sweep.
at::Tensor range_basis(const at::Tensor& Y);

}  // namespace svdlora::cpu
