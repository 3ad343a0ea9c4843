// cuBLAS strided-batched GEMMs over A in its own dtype (see passes_cuda.h).
#include "cuda/passes_cuda.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include "cuda/handles.h"

namespace svdlora::cuda {
namespace {

cudaDataType cuda_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return CUDA_R_32F;
    case at::kDouble: return CUDA_R_64F;
    case at::kHalf: return CUDA_R_16F;
    case at::kBFloat16: return CUDA_R_16BF;
    default: TORCH_CHECK(false, "svdlora: unsupported dtype on CUDA: ", t);
  }
}

// The last two dims of a batch of matrices as cuBLAS sees them.
struct StridedMatrices {
  at::Tensor owner;          // keeps the storage alive (a copy only for exotic strides)
  int64_t batch = 1, batch_stride = 0, ld = 0;
  bool row_major = true;
};

StridedMatrices describe(const at::Tensor& A) {
  const int64_t M = A.size(-2), N = A.size(-1);
  at::Tensor A3 = A.dim() == 2 ? A.unsqueeze(0) : A.reshape({-1, M, N});
  auto usable = [&](const at::Tensor& t, bool& row_major, int64_t& ld) {
    const int64_t sm = t.stride(1), sn = t.stride(2);
    if ((sn == 1 || N == 1) && sm >= std::max<int64_t>(N, 1)) {
      row_major = true;
      ld = std::max<int64_t>(sm, 1);
      return true;
    }
    if ((sm == 1 || M == 1) && sn >= std::max<int64_t>(M, 1)) {
      row_major = false;
      ld = std::max<int64_t>(sn, 1);
      return true;
    }
    return false;
  };
  StridedMatrices out;
  if (!usable(A3, out.row_major, out.ld)) {
    A3 = A3.contiguous();  // in A's own dtype; only for strides cuBLAS cannot express
    usable(A3, out.row_major, out.ld);
  }
  out.owner = A3;
  out.batch = A3.size(0);
  out.batch_stride = out.batch > 1 ? A3.stride(0) : 0;
  return out;
}

void gemm(const StridedMatrices& a, bool transpose, const at::Tensor& piece, int64_t x_stride,
          at::Tensor& out, int64_t rows, int64_t inner, int64_t l, double alpha, double beta) {
  // Column-major view: out^T (l x rows) = piece^T (l x inner) * op(A)^T (inner x rows).
  // A row-major A buffer is A^T to cuBLAS and a column-major one is A, hence the XOR.
  const cublasOperation_t op_a = (a.row_major != transpose) ? CUBLAS_OP_N : CUBLAS_OP_T;
  const bool fp64 = out.scalar_type() == at::kDouble;
  cublasHandle_t handle = blas_handle();
  PedanticMath math(handle);
  const float alpha32 = static_cast<float>(alpha), beta32 = static_cast<float>(beta);
  const void* alpha_ptr = fp64 ? static_cast<const void*>(&alpha) : &alpha32;
  const void* beta_ptr = fp64 ? static_cast<const void*>(&beta) : &beta32;
  check(cublasGemmStridedBatchedEx(
            handle, CUBLAS_OP_N, op_a, static_cast<int>(l), static_cast<int>(rows),
            static_cast<int>(inner), alpha_ptr, piece.data_ptr(), cuda_type(piece.scalar_type()),
            static_cast<int>(l), x_stride, a.owner.data_ptr(), cuda_type(a.owner.scalar_type()),
            static_cast<int>(a.ld), a.batch_stride, beta_ptr, out.data_ptr(),
            cuda_type(out.scalar_type()), static_cast<int>(l), rows * l,
            static_cast<int>(a.batch), fp64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F,
            CUBLAS_GEMM_DEFAULT),
        "cublasGemmStridedBatchedEx");
}

}  // namespace

at::Tensor multiply(const at::Tensor& A, bool transpose, const at::Tensor& X, int terms) {
  const int64_t M = A.size(-2), N = A.size(-1);
  const int64_t rows = transpose ? N : M, inner = transpose ? M : N;
  TORCH_CHECK(X.size(-2) == inner, "svdlora: panel has ", X.size(-2), " rows, expected ", inner);
  const int64_t l = X.size(-1);
  StridedMatrices a = describe(A);
  TORCH_CHECK(X.dim() == 2 || X.numel() == a.batch * inner * l,
              "svdlora: panel batch does not match A's batch");
  at::Tensor panel = X.contiguous();
  const int64_t x_stride = X.dim() == 2 ? 0 : inner * l;

  std::vector<int64_t> out_sizes(A.sizes().begin(), A.sizes().end() - 2);
  out_sizes.push_back(rows);
  out_sizes.push_back(l);
  at::Tensor out = at::empty(out_sizes, panel.options());
  if (out.numel() == 0) return out;

  const at::ScalarType a_type = A.scalar_type();
  if (a_type == at::kFloat || a_type == at::kDouble) {
    TORCH_CHECK(panel.scalar_type() == a_type, "svdlora: panel dtype must match A");
    gemm(a, transpose, panel, x_stride, out, rows, inner, l, 1.0, 0.0);
    return out;
  }
  // fp16 has a narrow exponent range: scale the panel (entries are O(1)) by a power of two so
  // the low-order pieces stay normal numbers; the scale is exact and undone through alpha.
  const double scale = a_type == at::kHalf ? 4096.0 : 1.0;
  at::Tensor rest = panel.to(at::kFloat) * scale;
  for (int t = 0; t < terms; ++t) {
    at::Tensor piece = rest.to(a_type);
    gemm(a, transpose, piece, x_stride, out, rows, inner, l, 1.0 / scale, t == 0 ? 0.0 : 1.0);
    if (t + 1 < terms) rest = rest - piece.to(at::kFloat);
  }
  return out;
}

}  // namespace svdlora::cuda
