// Gram + batched eigensolver SVD of the small matrix B (see small_svd_cuda.h).
#include "cuda/small_svd_cuda.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/util/Exception.h>

#include <limits>
#include <vector>

#include "cuda/handles.h"
#include "cuda/orth_cuda.h"

namespace svdlora::cuda {
namespace {

// Eigenvectors (as columns, by ascending eigenvalue) of a batch of symmetric float64 matrices
// G (..., l, l).  The eigenvalues are not returned: the singular values are taken from the
// vectors (see small_svd), which is more accurate.
at::Tensor symmetric_eigenvectors(const at::Tensor& G) {
  const int64_t l = G.size(-1);
  // cuSOLVER overwrites its input with the eigenvectors (column-major).
  at::Tensor work = G.reshape({-1, l, l}).clone(at::MemoryFormat::Contiguous);
  const int64_t batch = work.size(0);
  TORCH_CHECK(l * l * batch <= std::numeric_limits<int32_t>::max(),
              "svdlora: batch of ", batch, " sketches of width ", l, " exceeds cuSOLVER's "
              "batched eigensolver limit; split the batch");
  at::Tensor values = at::empty({batch, l}, G.options());
  at::Tensor info = at::empty({batch}, G.options().dtype(at::kInt));
  cusolverDnHandle_t handle = solver_handle();
  cusolverDnParams_t params = solver_params();
  size_t device_bytes = 0, host_bytes = 0;
  check(cusolverDnXsyevBatched_bufferSize(handle, params, CUSOLVER_EIG_MODE_VECTOR,
                                          CUBLAS_FILL_MODE_LOWER, l, CUDA_R_64F, work.data_ptr(),
                                          l, CUDA_R_64F, values.data_ptr(), CUDA_R_64F,
                                          &device_bytes, &host_bytes, batch),
        "cusolverDnXsyevBatched_bufferSize");
  at::Tensor device_work =
      at::empty({static_cast<int64_t>(device_bytes)}, G.options().dtype(at::kByte));
  // cuSOLVER documents a host workspace for some sizes; it must outlive the call, so it is kept
  // per thread rather than on this stack frame.  Host work cannot be captured in a CUDA graph.
  TORCH_CHECK(host_bytes == 0 || c10::cuda::currentStreamCaptureStatusMayInitCtx() ==
                                     c10::cuda::CaptureStatus::None,
              "svdlora: cuSOLVER needs host workspace for this size, which CUDA-graph capture "
              "cannot record");
  thread_local std::vector<char> host_work;
  if (host_work.size() < host_bytes) host_work.resize(host_bytes);
  check(cusolverDnXsyevBatched(handle, params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, l,
                               CUDA_R_64F, work.data_ptr(), l, CUDA_R_64F, values.data_ptr(),
                               CUDA_R_64F, device_work.data_ptr(), device_bytes,
                               host_bytes ? host_work.data() : nullptr, host_bytes,
                               info.data_ptr<int>(), batch),
        "cusolverDnXsyevBatched");
  // Column-major eigenvectors read row-major are the transpose.  `info` (non-convergence of
  // an fp64 symmetric solver) is not read: that would be a host sync (README, "CUDA").
  return work.mT().reshape(G.sizes());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> small_svd(const at::Tensor& Q, const at::Tensor& Bt,
                                                         int64_t k) {
  const at::ScalarType dtype = Q.scalar_type();
  at::Tensor B64 = Bt.to(at::kDouble);                       // (..., N, l)
  at::Tensor gram = at::matmul(B64.mT(), B64);               // B B^T, (..., l, l)
  at::Tensor W = symmetric_eigenvectors(gram);
  at::Tensor Wk = W.flip({-1}).narrow(-1, 0, k);             // top k by eigenvalue
  // sigma_i = ||B^T w_i|| is accurate to eps * sigma_1, where sqrt(eigenvalue) is only good to
  // sqrt(eps) * sigma_1; re-sort by it (on the device: no host read).
  at::Tensor V = at::matmul(B64, Wk);                        // (..., N, k), columns sigma_i v_i
  at::Tensor S = V.square().sum(-2).sqrt();
  at::Tensor order = S.argsort(-1, /*descending=*/true);
  S = S.gather(-1, order);
  Wk = Wk.gather(-1, order.unsqueeze(-2).expand_as(Wk));
  V = V.gather(-1, order.unsqueeze(-2).expand_as(V));
  // Unit columns before orthonormalising, so the full-rank nudge is small relative to each
  // vector rather than to the largest; zero columns stay zero and get completed.
  V = V * at::where(S > 0, S.reciprocal(), at::zeros_like(S)).unsqueeze(-2);
  at::Tensor U = at::matmul(Q.to(at::kDouble), Wk).to(dtype);
  at::Tensor Vh = orth(V, dtype).mT();
  return {U, S.to(dtype), Vh};
}

}  // namespace svdlora::cuda
