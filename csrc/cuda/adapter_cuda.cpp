// CUDA registration of svdlora::adapter_forward / adapter_backward: the shared composition
// (common/adapter_impl.h) on cuBLAS, on the current stream, under a device guard.  cuBLAS with
// beta = 1 accumulation does the keep-mode fusion, so no hand-written kernel is used.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "common/adapter_impl.h"

namespace svdlora::cuda {
namespace {

std::tuple<at::Tensor, at::Tensor> adapter_forward_cuda(
    const at::Tensor& x, const at::Tensor& U, const at::Tensor& S, const at::Tensor& Vh,
    const at::Tensor& X, const at::Tensor& Y, double scale,
    const std::optional<at::Tensor>& base_weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& base_out) {
  c10::cuda::CUDAGuard guard(x.device());
  return adapter::forward(x, U, S, Vh, X, Y, scale, base_weight, bias, base_out);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> adapter_backward_cuda(
    const at::Tensor& dy, const at::Tensor& h, const at::Tensor& U, const at::Tensor& S,
    const at::Tensor& Vh, const at::Tensor& X, const at::Tensor& Y, double scale,
    const std::optional<at::Tensor>& base_weight, bool need_dx) {
  c10::cuda::CUDAGuard guard(dy.device());
  return adapter::backward(dy, h, U, S, Vh, X, Y, scale, base_weight, need_dx);
}

}  // namespace

TORCH_LIBRARY_IMPL(svdlora, CUDA, m) {
  m.impl("adapter_forward", &adapter_forward_cuda);
  m.impl("adapter_backward", &adapter_backward_cuda);
}

}  // namespace svdlora::cuda
