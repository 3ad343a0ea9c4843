// Shifted CholeskyQR3 in float64 with a full-rank nudge (see orth_cuda.h).
#include "cuda/orth_cuda.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/eye.h>
#include <ATen/ops/frac.h>
#include <ATen/ops/linalg_cholesky_ex.h>
#include <ATen/ops/linalg_solve_triangular.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/sin.h>
#include <ATen/ops/where.h>

#include <cmath>
#include <limits>

namespace svdlora::cuda {
namespace {

// A fixed, well-spread pseudo-random m x l matrix with entries in (-1, 1), computed on the
// device from the index alone: deterministic, sync-free and CUDA-graph capturable (a torch
// generator would need registering with the graph).
at::Tensor pseudo_noise(int64_t m, int64_t l, const at::TensorOptions& options) {
  at::Tensor index = at::arange(m * l, options).view({m, l});
  return at::frac(at::sin(index * 12.9898 + 78.233) * 43758.5453);
}

}  // namespace

at::Tensor orth(const at::Tensor& Y, at::ScalarType precision) {
  const int64_t m = Y.size(-2), l = Y.size(-1);
  const bool double_precision = precision == at::kDouble;
  at::Tensor Z = Y.to(at::kDouble);
  at::Tensor norm = Z.square().sum({-2, -1}, /*keepdim=*/true).sqrt();
  Z = Z / at::where(norm > 0, norm, at::ones_like(norm));
  const double unit = double_precision ? std::numeric_limits<double>::epsilon()
                                       : std::numeric_limits<float>::epsilon();
  Z = Z + (4.0 * unit / std::sqrt(static_cast<double>(m * l))) * pseudo_noise(m, l, Z.options());

  // Fukaya et al.'s shift s = 11 (m l + l (l + 1)) u ||Z||^2 (with ||Z||_F^2, the trace of the
  // Gram matrix, as the bound) makes Gram + s I safely positive definite in double.  Each
  // shifted sweep improves cond(Z) to about sqrt(s) / sigma_min; the nudge keeps sigma_min above
  // ~eps(precision), so float32 needs one shifted sweep and float64 three before CholeskyQR2
  // (which needs cond < 1/sqrt(eps_double)) finishes the job.
  const double shift = 11.0 * (static_cast<double>(m) * l + static_cast<double>(l) * (l + 1)) *
                       std::numeric_limits<double>::epsilon();
  const int shifted_sweeps = double_precision ? 3 : 1;
  at::Tensor eye = at::eye(l, Z.options());
  for (int sweep = 0; sweep < shifted_sweeps + 2; ++sweep) {
    at::Tensor gram = at::matmul(Z.mT(), Z);
    if (sweep < shifted_sweeps) {
      at::Tensor trace = gram.diagonal(0, -2, -1).sum(-1, /*keepdim=*/true).unsqueeze(-1);
      gram = gram + (shift * trace) * eye;
    }
    at::Tensor R = std::get<0>(at::linalg_cholesky_ex(gram, /*upper=*/true,
                                                      /*check_errors=*/false));
    Z = at::linalg_solve_triangular(R, Z, /*upper=*/true, /*left=*/false);
  }
  return Z.to(precision);
}

}  // namespace svdlora::cuda
