// The small SVD step of randomized SVD on the GPU: SVD of B = Q^T A from B^T.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace svdlora::cuda {

// Rank-k SVD of Q B given Q (..., M, l) orthonormal and Bt = B^T = A^T Q (..., N, l); returns
// U (..., M, k), S (..., k) descending, Vh (..., k, N) in Q's dtype.
//
// Through the l x l Gram matrix B B^T in float64 and cuSOLVER's batched symmetric eigensolver
// (cusolverDnXsyevBatched, one call for the whole batch): B B^T = W diag(S^2) W^T, U = Q W,
// S_i = ||B^T w_i|| (accurate to eps * sigma_1, where sqrt of an eigenvalue is only good to
// sqrt(eps) * sigma_1), and Vh = the rows of W^T B, normalised by the float64 shifted
// CholeskyQR3 (which also gives zero singular values an orthonormal completion).  No QR of B^T,
// no gesvd (whose convergence checks read on the host).
std::tuple<at::Tensor, at::Tensor, at::Tensor> small_svd(const at::Tensor& Q, const at::Tensor& Bt,
                                                         int64_t k);

}  // namespace svdlora::cuda
