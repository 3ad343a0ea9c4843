// Sync-free orthonormalisation of tall-skinny panels on the GPU.
#pragma once

#include <ATen/core/Tensor.h>

namespace svdlora::cuda {

// Orthonormal basis of span(Y) for Y (..., m, l), m >= l, returned in `precision` (float32 or
// float64).  Shifted CholeskyQR3 (Fukaya et al. 2020) in float64: every Gram matrix, potrf and
// trsm runs in double, the first sweep(s) with a shift that makes the Cholesky factorisation
// succeed for any input, the last two plain.  Before that, Y is normalised and nudged by a
// fixed pseudo-random matrix of relative size ~eps(precision), which makes it numerically full
// rank: a rank-deficient (or zero) Y gets an orthonormal completion instead of a failure.  So
// nothing can fail, nothing is checked on the host, and there is no data-dependent fallback.
at::Tensor orth(const at::Tensor& Y, at::ScalarType precision);

}  // namespace svdlora::cuda
