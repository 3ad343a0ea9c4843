// Per-device, per-thread cuSOLVER handles; torch's cuBLAS handle; status checks.
#include "cuda/handles.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <unordered_map>

namespace svdlora::cuda {
namespace {

struct SolverState {
  cusolverDnHandle_t handle = nullptr;
  cusolverDnParams_t params = nullptr;
};

// Handles are deliberately never destroyed: at thread or process exit the CUDA context may
// already be gone, and destroying a handle then crashes (torch leaks its pools for the same
// reason).
SolverState& solver_state() {
  thread_local std::unordered_map<int, SolverState> states;
  const int device = c10::cuda::current_device();
  SolverState& state = states[device];
  if (state.handle == nullptr) {
    check(cusolverDnCreate(&state.handle), "cusolverDnCreate");
    check(cusolverDnCreateParams(&state.params), "cusolverDnCreateParams");
  }
  return state;
}

}  // namespace

cublasHandle_t blas_handle() { return at::cuda::getCurrentCUDABlasHandle(); }

cusolverDnHandle_t solver_handle() {
  cusolverDnHandle_t handle = solver_state().handle;
  check(cusolverDnSetStream(handle, c10::cuda::getCurrentCUDAStream().stream()),
        "cusolverDnSetStream");
  return handle;
}

cusolverDnParams_t solver_params() { return solver_state().params; }

void check(cublasStatus_t status, const char* what) {
  TORCH_CHECK(status == CUBLAS_STATUS_SUCCESS, "svdlora: ", what, " failed: ",
              cublasGetStatusString(status));
}

void check(cusolverStatus_t status, const char* what) {
  TORCH_CHECK(status == CUSOLVER_STATUS_SUCCESS, "svdlora: ", what,
              " failed with cusolverStatus_t ", static_cast<int>(status));
}

PedanticMath::PedanticMath(cublasHandle_t handle) : handle_(handle) {
  check(cublasGetMathMode(handle_, &saved_), "cublasGetMathMode");
  check(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
}

PedanticMath::~PedanticMath() { cublasSetMathMode(handle_, saved_); }

}  // namespace svdlora::cuda
