// Benchmark peer: cuSOLVER's own randomized SVD (cusolverDnXgesvdr) behind the op
// svdlora::cusolver_gesvdr, so it can be timed on exactly the inputs svdlora gets.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <vector>

#include "cuda/handles.h"

namespace svdlora::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> cusolver_gesvdr(const at::Tensor& A, int64_t rank,
                                                               int64_t oversample,
                                                               int64_t n_iter) {
  TORCH_CHECK(A.is_cuda() && A.dim() == 2, "svdlora.cusolver_gesvdr: A must be a 2-D CUDA tensor");
  TORCH_CHECK(A.scalar_type() == at::kFloat || A.scalar_type() == at::kDouble,
              "svdlora.cusolver_gesvdr: gesvdr supports float32 and float64 only, got ",
              A.scalar_type());
  const int64_t m = A.size(0), n = A.size(1), short_side = std::min(m, n);
  TORCH_CHECK(rank >= 1 && oversample >= 0 && rank + oversample <= short_side,
              "svdlora.cusolver_gesvdr: needs 1 <= rank and rank + oversample <= min(m, n) = ",
              short_side);
  TORCH_CHECK(n_iter >= 0, "svdlora.cusolver_gesvdr: n_iter must be >= 0");
  c10::cuda::CUDAGuard guard(A.device());
  // cuSOLVER is column-major and gesvdr wants a tall matrix.  A row-major buffer of X is the
  // column-major X^T, so hand it A^T's buffer for a tall A and A's own for a wide one:
  //   tall (m >= n): column-major A (m x n) = U S V^T  -> U = U', Vh = V'^T
  //   wide (m <  n): column-major A^T (n x m) = U' S V'^T, so A = V' S U'^T.
  const bool tall = m >= n;
  const int64_t rows = tall ? m : n, cols = tall ? n : m;
  // gesvdr overwrites its input: always work on a copy.
  at::Tensor work = tall ? A.mT().clone(at::MemoryFormat::Contiguous)
                         : A.clone(at::MemoryFormat::Contiguous);
  const cudaDataType type = A.scalar_type() == at::kFloat ? CUDA_R_32F : CUDA_R_64F;
  at::Tensor S = at::empty({short_side}, A.options());
  // gesvdr's U and V buffers are full size (one of its documented costs).
  at::Tensor Ubuf = at::empty({rows, rows}, A.options());
  at::Tensor Vbuf = at::empty({cols, cols}, A.options());
  at::Tensor info = at::empty({1}, A.options().dtype(at::kInt));
  cusolverDnHandle_t handle = solver_handle();
  cusolverDnParams_t params = solver_params();
  size_t device_bytes = 0, host_bytes = 0;
  check(cusolverDnXgesvdr_bufferSize(handle, params, 'S', 'S', rows, cols, rank, oversample,
                                     n_iter, type, work.data_ptr(), rows, type, S.data_ptr(),
                                     type, Ubuf.data_ptr(), rows, type, Vbuf.data_ptr(), cols,
                                     type, &device_bytes, &host_bytes),
        "cusolverDnXgesvdr_bufferSize");
  at::Tensor device_work = at::empty({static_cast<int64_t>(device_bytes)},
                                     A.options().dtype(at::kByte));
  thread_local std::vector<char> host_work;  // must outlive the call
  if (host_work.size() < host_bytes) host_work.resize(host_bytes);
  check(cusolverDnXgesvdr(handle, params, 'S', 'S', rows, cols, rank, oversample, n_iter, type,
                          work.data_ptr(), rows, type, S.data_ptr(), type, Ubuf.data_ptr(), rows,
                          type, Vbuf.data_ptr(), cols, type, device_work.data_ptr(), device_bytes,
                          host_bytes ? host_work.data() : nullptr, host_bytes,
                          info.data_ptr<int>()),
        "cusolverDnXgesvdr");
  // Row j of a row-major view of a column-major buffer is column j: the singular vectors.
  at::Tensor left_vectors = Ubuf.narrow(0, 0, rank);   // (rank, rows): U'^T
  at::Tensor right_vectors = Vbuf.narrow(0, 0, rank);  // (rank, cols): V'^T
  at::Tensor U = (tall ? left_vectors : right_vectors).mT().contiguous();
  at::Tensor Vh = (tall ? right_vectors : left_vectors).contiguous();
  return {U, S.narrow(0, 0, rank).contiguous(), Vh};
}

}  // namespace

TORCH_LIBRARY_IMPL(svdlora, CUDA, m) { m.impl("cusolver_gesvdr", &cusolver_gesvdr); }

}  // namespace svdlora::cuda
