// The SVD-LoRA adapter forward and backward (DESIGN.md section 1) as a composition of ATen
// GEMMs, shared by the CPU (MKL/OpenBLAS) and CUDA (cuBLAS) registrations.
//
// The r x r core C is built once per call on the device in float32 (float64 for float64
// activations) and folded into the thin factor on the cheap side (U C for the forward, C Vh
// for dx), so each direction is two GEMMs over the activations.  Keep mode accumulates the
// low-rank term into x W^T (and dx into dy W) inside the GEMM (beta = 1) instead of writing it
// and adding it; a bias rides along as an extra column.  bf16/fp16 GEMMs accumulate in fp32
// (cuBLAS and oneDNN do for these dtypes); the parameter gradients, reductions over all N
// tokens, are formed in fp32.  Nothing here reads device data on the host.
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/diag.h>
#include <ATen/ops/diagonal.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/ones.h>

#include <vector>

#include "common/adapter_checks.h"

namespace svdlora::adapter {

inline at::ScalarType accum_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// C = diag(S) + scale * X Y in the accumulation dtype.
inline at::Tensor core_matrix(const at::Tensor& S, const at::Tensor& X, const at::Tensor& Y,
                              double scale, at::ScalarType acc) {
  return at::addmm(at::diag(S.to(acc)), X.to(acc), Y.to(acc), /*beta=*/1, /*alpha=*/scale);
}

inline std::vector<int64_t> with_last(const at::Tensor& t, int64_t last) {
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  shape.back() = last;
  return shape;
}

inline std::tuple<at::Tensor, at::Tensor> forward(
    const at::Tensor& x, const at::Tensor& U, const at::Tensor& S, const at::Tensor& Vh,
    const at::Tensor& X, const at::Tensor& Y, double scale,
    const std::optional<at::Tensor>& base_weight, const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& base_out) {
  check_adapter_factors(U, S, Vh, X, Y);
  const int64_t D = U.size(0), K = Vh.size(1), r = S.size(0);
  check_activation(x, K, U, "x");
  check_base(base_weight, bias, base_out, x, D, K, U);
  const auto dt = x.scalar_type();
  const auto acc = accum_dtype(x);
  at::Tensor x2 = x.reshape({-1, K});  // copies only if x's strides cannot be flattened
  at::Tensor UC = at::mm(U.to(acc), core_matrix(S, X, Y, scale, acc)).to(dt);  // (D, r)
  at::Tensor h = at::mm(x2, Vh.to(dt).t());                                      // (N, r)
  // A bias rides along as one more column of the low-rank GEMM ([h, 1] [UC, b]^T), which
  // saves a separate read-modify-write pass over the N x D output.
  at::Tensor lhs = h, rhs = UC;
  if (bias.has_value()) {
    lhs = at::cat({h, at::ones({h.size(0), 1}, h.options())}, 1);
    rhs = at::cat({UC, bias->to(dt).unsqueeze(1)}, 1);
  }
  at::Tensor y;
  if (base_weight.has_value()) {
    y = at::mm(x2, base_weight->to(dt).t());
    y.addmm_(lhs, rhs.t());  // accumulate into x W^T in place (beta = 1)
  } else if (base_out.has_value()) {
    y = at::addmm(base_out->reshape({-1, D}).to(dt), lhs, rhs.t());
  } else {
    y = at::mm(lhs, rhs.t());
  }
  return {y.view(with_last(x, D)), h.view(with_last(x, r))};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& dy, const at::Tensor& h, const at::Tensor& U, const at::Tensor& S,
    const at::Tensor& Vh, const at::Tensor& X, const at::Tensor& Y, double scale,
    const std::optional<at::Tensor>& base_weight, bool need_dx) {
  check_adapter_factors(U, S, Vh, X, Y);
  const int64_t D = U.size(0), K = Vh.size(1), r = S.size(0);
  check_activation(dy, D, U, "dy");
  check_activation(h, r, U, "h");
  check_base(base_weight, std::nullopt, std::nullopt, dy, D, K, U);
  const auto dt = dy.scalar_type();
  const auto acc = accum_dtype(dy);
  at::Tensor dy2 = dy.reshape({-1, D});
  at::Tensor h2 = h.reshape({-1, r}).to(dt);
  at::Tensor g = at::mm(dy2, U.to(dt));                       // (N, r)
  // Parameter gradients reduce over all N tokens: accumulate them in acc precision.
  at::Tensor dC = at::mm(g.t().to(acc), h2.to(acc));          // (r, r)
  at::Tensor Xa = X.to(acc), Ya = Y.to(acc);
  at::Tensor dS = at::diagonal(dC).to(S.scalar_type()).contiguous();
  at::Tensor dX = (at::mm(dC, Ya.t()) * scale).to(X.scalar_type());
  at::Tensor dY = (at::mm(Xa.t(), dC) * scale).to(Y.scalar_type());
  at::Tensor dx;
  if (need_dx) {
    at::Tensor CVh = at::mm(core_matrix(S, X, Y, scale, acc), Vh.to(acc)).to(dt);  // (r, K)
    if (base_weight.has_value()) {
      dx = at::mm(dy2, base_weight->to(dt));
      dx.addmm_(g, CVh);  // one dx for base and low-rank paths, no separate sum
    } else {
      dx = at::mm(g, CVh);
    }
    dx = dx.view(with_last(dy, K));
  } else {
    dx = at::empty({0}, dy.options());
  }
  return {dx, dS, dX, dY};
}

}  // namespace svdlora::adapter
