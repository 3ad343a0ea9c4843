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

// The optional base of keep mode: a frozen weight W (D, K), or an output (..., D); and a bias (D).
inline void check_base(const std::optional<at::Tensor>& base_weight,
                       const std::optional<at::Tensor>& bias,
                       const std::optional<at::Tensor>& base_out, const at::Tensor& x, int64_t D,
                       int64_t K, const at::Tensor& U) {
  if (base_weight.has_value()) {
    TORCH_CHECK(base_weight->dim() == 2 && base_weight->size(0) == D && base_weight->size(1) == K,
                "svdlora adapter: base_weight must have shape (", D, ", ", K, "), got ",
                base_weight->sizes());
    TORCH_CHECK(base_weight->device() == U.device(), "svdlora adapter: base_weight must be on ",
                U.device());
    TORCH_CHECK(!base_out.has_value(), "svdlora adapter: give base_weight or base_out, not both");
  }
  if (base_out.has_value()) {
    check_activation(*base_out, D, U, "base_out");
    TORCH_CHECK(base_out->sizes().slice(0, base_out->dim() - 1) == x.sizes().slice(0, x.dim() - 1),
                "svdlora adapter: base_out must have shape (..., D) matching x");
  }
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == D, "svdlora adapter: bias must have shape (",
                D, ",), got ", bias->sizes());
    TORCH_CHECK(bias->device() == U.device(), "svdlora adapter: bias must be on ", U.device());
  }
}

}  // namespace svdlora
