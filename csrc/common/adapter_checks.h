// Shape/dtype checks for the SVD-LoRA adapter ops, shared by every device's kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <optional>

namespace svdlora {

inline void check_adapter_factors(const at::Tensor& U, const at::Tensor& S, const at::Tensor& Vh,
                                  const at::Tensor& X, const at::Tensor& Y) {
  TORCH_CHECK(U.dim() == 2 && Vh.dim() == 2 && S.dim() == 1 && X.dim() == 2 && Y.dim() == 2,
              "svdlora adapter: expected U (D, r), S (r), Vh (r, K), X (r, r'), Y (r', r)");
  const int64_t r = S.size(0);
  TORCH_CHECK(U.size(1) == r && Vh.size(0) == r && X.size(0) == r && Y.size(1) == r &&
                  X.size(1) == Y.size(0),
              "svdlora adapter: inconsistent ranks: U ", U.sizes(), ", S ", S.sizes(), ", Vh ",
              Vh.sizes(), ", X ", X.sizes(), ", Y ", Y.sizes());
  for (const at::Tensor* t : {&U, &S, &Vh, &X, &Y}) {
    TORCH_CHECK(at::isFloatingType(t->scalar_type()), "svdlora adapter: factors must be floating");
    TORCH_CHECK(t->device() == U.device(), "svdlora adapter: all factors must be on ", U.device());
  }
}

inline void check_activation(const at::Tensor& t, int64_t last, const at::Tensor& U,
                             const char* name) {
  TORCH_CHECK(t.dim() >= 1 && t.size(-1) == last, "svdlora adapter: ", name,
              " must have shape (..., ", last, "), got ", t.sizes());
  auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kBFloat16 || st == at::kHalf,
              "svdlora adapter: ", name, " must be float16/bfloat16/float32/float64, got ", st);
  TORCH_CHECK(t.device() == U.device(), "svdlora adapter: ", name, " must be on ", U.device());
}

}  // namespace svdlora
