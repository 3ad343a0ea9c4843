// cuBLAS/cuSOLVER handles bound to torch's current stream, and status checks.
#pragma once

#include <cublas_v2.h>
#include <cusolverDn.h>

namespace svdlora::cuda {

// torch's cuBLAS handle for the current device and thread: its stream is the current stream
// and its workspace comes from torch (needed for CUDA-graph capture).
cublasHandle_t blas_handle();

// One cuSOLVER handle per device and thread (ours: the torch accessor lives in
// libtorch_cuda_linalg, which is not linked), with its stream set to the current stream.
cusolverDnHandle_t solver_handle();

// Default cusolverDnParams_t for the 64-bit API, one per device and thread.
cusolverDnParams_t solver_params();

void check(cublasStatus_t status, const char* what);
void check(cusolverStatus_t status, const char* what);

// Runs cuBLAS in plain FP32 math (no TF32), restoring the handle's math mode afterwards:
// torch may have enabled TF32 for its own matmuls, which would break the float32 accuracy bar.
class PedanticMath {
 public:
  explicit PedanticMath(cublasHandle_t handle);
  ~PedanticMath();
  PedanticMath(const PedanticMath&) = delete;
  PedanticMath& operator=(const PedanticMath&) = delete;

 private:
  cublasHandle_t handle_;
  cublasMath_t saved_;
};

}  // namespace svdlora::cuda
