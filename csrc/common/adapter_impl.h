// The SVD-LoRA adapter forward and backward (docs/design.md, "The adapter") as a composition
// of ATen GEMMs, shared by the CPU (MKL/OpenBLAS) and CUDA (cuBLAS) registrations.
//
// Each direction is two GEMMs over the activations (x Vh^T, then times U^T; dy U, then times
// Vh).  The r x r core C = diag(S) + scale X Y sits between them and is applied in the
// cheapest of three ways (Core below): through its structure -- a column scaling plus a
// rank-r' product, 2 N r r' multiply-adds -- when that saves enough work to pay for the extra
// small products; otherwise formed once per call and folded into the thin factor (U C, C Vh)
// when that has fewer rows than there are tokens, or applied to the N x r activations.  The
// second GEMM of each direction accumulates (beta = 1) into an output that already holds the
// rest of the result: x W^T or dy W in keep mode, the bias.  The large outputs come from
// empty_output, which recycles big CPU blocks (common/output_buffers.h).  bf16/fp16 GEMMs
// accumulate in fp32 (cuBLAS and oneDNN do for these dtypes); the core and the parameter
// gradients, reductions over all N tokens, are formed in fp32.  Nothing here reads device data
// on the host.
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/ops/add.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/diag.h>
#include <ATen/ops/diagonal.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>

#include <vector>

#include "common/adapter_checks.h"
#include "common/output_buffers.h"

namespace svdlora::adapter {

inline at::ScalarType accum_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Whether Core applies C through its structure for N tokens, rank r and inner rank r'.  The
// structure saves N r (r - 2 r') multiply-adds per direction but costs four more small
// products and two elementwise passes; on the CPU each of those has a fixed cost of the order
// of 0.1 ms (threading, packing), the time of ~2^24 multiply-adds in a GEMM.
inline bool use_structured_core(int64_t tokens, int64_t r, int64_t inner_rank) {
  return tokens * r * (r - 2 * inner_rank) >= (int64_t{1} << 24);
}

// The core C = diag(S) + scale X Y, its factors held in the accumulation dtype.
class Core {
 public:
  Core(const at::Tensor& S, const at::Tensor& X, const at::Tensor& Y, double scale,
       at::ScalarType acc, int64_t tokens)
      : S_(S.to(acc)), X_(X.to(acc)), Y_(Y.to(acc)), scale_(scale) {
    structured_ = use_structured_core(tokens, S.size(0), X.size(1));
    if (!structured_) C_ = at::addmm(at::diag(S_), X_, Y_, /*beta=*/1, /*alpha=*/scale);
  }

  bool structured() const { return structured_; }
  const at::Tensor& matrix() const { return C_; }  // defined only when !structured()

  // a C^T for a (N, r) in acc.
  at::Tensor apply_transposed(const at::Tensor& a) const {
    if (!structured_) return at::mm(a, C_.t());
    return at::addmm(a * S_, at::mm(a, Y_.t()), X_.t(), /*beta=*/1, /*alpha=*/scale_);
  }

  // a C for a (N, r) in acc.
  at::Tensor apply(const at::Tensor& a) const {
    if (!structured_) return at::mm(a, C_);
    return at::addmm(a * S_, at::mm(a, X_), Y_, /*beta=*/1, /*alpha=*/scale_);
  }

  // dS = diag(dC), dX = scale dC Y^T, dY = scale X^T dC for dC = g^T h (g, h (N, r) in acc).
  std::tuple<at::Tensor, at::Tensor, at::Tensor> gradients(const at::Tensor& g,
                                                           const at::Tensor& h) const {
    if (!structured_) {
      at::Tensor dC = at::mm(g.t(), h);
      return {at::diagonal(dC).contiguous(), at::mm(dC, Y_.t()) * scale_,
              at::mm(X_.t(), dC) * scale_};
    }
    return {(g * h).sum(0), at::mm(g.t(), at::mm(h, Y_.t())) * scale_,
            at::mm(at::mm(g, X_).t(), h) * scale_};
  }

 private:
  at::Tensor S_, X_, Y_, C_;
  double scale_;
  bool structured_;
};

inline std::vector<int64_t> with_last(const at::Tensor& t, int64_t last) {
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  shape.back() = last;
  return shape;
}

// Writes into y (N, D) everything in the forward output that is not low-rank -- x W^T,
// base_out and the bias -- so that the low-rank GEMM can accumulate into it (beta = 1): on
// MKL and cuBLAS that costs no more than writing a fresh output, and it saves a
// read-modify-write pass over the N x D result.  Returns false when there is nothing to write.
inline bool write_non_low_rank(at::Tensor& y, const at::Tensor& x2,
                               const std::optional<at::Tensor>& base_weight,
                               const std::optional<at::Tensor>& bias,
                               const std::optional<at::Tensor>& base_out) {
  const auto dt = x2.scalar_type();
  if (base_weight.has_value()) {
    const at::Tensor Wt = base_weight->to(dt).t();
    if (bias.has_value()) {
      at::addmm_out(y, bias->to(dt), x2, Wt);
    } else {
      at::mm_out(y, x2, Wt);
    }
  } else if (base_out.has_value()) {
    const at::Tensor base2 = base_out->reshape({-1, y.size(1)}).to(dt);
    if (bias.has_value()) {
      at::add_out(y, base2, bias->to(dt));
    } else {
      y.copy_(base2);
    }
  } else if (bias.has_value()) {
    y.copy_(bias->to(dt).expand_as(y));
  } else {
    return false;
  }
  return true;
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
  const int64_t N = x2.size(0);
  const Core core(S, X, Y, scale, acc, N);
  // Outputs are allocated in their final shape and written through 2-D views, so the op
  // returns base tensors: a returned view would make autograd refuse in-place ops on y.
  at::Tensor h = at::empty(with_last(x, r), x2.options());
  at::Tensor h2 = h.view({N, r});
  at::mm_out(h2, x2, Vh.to(dt).t());
  const bool fold = !core.structured() && D <= N;
  at::Tensor lhs = fold ? h2 : core.apply_transposed(h2.to(acc)).to(dt);        // (N, r)
  at::Tensor rhs = fold ? at::mm(U.to(acc), core.matrix()).to(dt) : U.to(dt);  // (D, r)
  at::Tensor y_out = empty_output(with_last(x, D), x.options());
  at::Tensor y = y_out.view({N, D});
  if (write_non_low_rank(y, x2, base_weight, bias, base_out)) {
    y.addmm_(lhs, rhs.t());
  } else {
    at::mm_out(y, lhs, rhs.t());
  }
  return {y_out, h};
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
  const int64_t N = dy2.size(0);
  const Core core(S, X, Y, scale, acc, N);
  at::Tensor g = at::mm(dy2, U.to(dt));  // (N, r)
  // Parameter gradients reduce over all N tokens: accumulate them in acc precision.
  at::Tensor ga = g.to(acc);
  auto [dS, dX, dY] = core.gradients(ga, h.reshape({-1, r}).to(acc));
  at::Tensor dx;
  if (need_dx) {
    const bool fold = !core.structured() && K <= N;
    at::Tensor lhs = fold ? g : core.apply(ga).to(dt);                           // (N, r)
    at::Tensor rhs = fold ? at::mm(core.matrix(), Vh.to(acc)).to(dt) : Vh.to(dt);  // (r, K)
    dx = empty_output(with_last(dy, K), dy.options());
    at::Tensor dx2 = dx.view({N, K});
    if (base_weight.has_value()) {
      at::mm_out(dx2, dy2, base_weight->to(dt));
      dx2.addmm_(lhs, rhs);  // one dx for base and low-rank paths, no separate sum
    } else {
      at::mm_out(dx2, lhs, rhs);
    }
  } else {
    dx = at::empty({0}, dy.options());
  }
  return {dx, dS.to(S.scalar_type()), dX.to(X.scalar_type()), dY.to(Y.scalar_type())};
}

}  // namespace svdlora::adapter
