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

#include <algorithm>
#include <cmath>
#include <limits>

namespace svdlora::cuda {
namespace {

// A fixed, well-spread pseudo-random m x l matrix with entries in (-1, 1), computed on the
// device from the index alone: deterministic, sync-free and CUDA-graph capturable (a torch
// generator would need registering with the graph).
// Built in place: one m x l temporary, not one per elementwise step.
at::Tensor pseudo_noise(int64_t m, int64_t l, const at::TensorOptions& options) {
  at::Tensor noise = at::arange(m * l, options).view({m, l});
  return noise.mul_(12.9898).add_(78.233).sin_().mul_(43758.5453).frac_();
}

// Shifted sweeps needed, from the shapes alone (no data is read).  The nudge c N, with N's
// entries in (-1, 1) and c = 4 u / sqrt(m l), keeps the smallest singular value of the
// normalised panel above about c * sigma_min(N), and sigma_min(N) is about
// 0.5 (sqrt(m) - sqrt(l)) for a tall N (no less than ~0.5 / sqrt(m) when square).  Each shifted
// sweep maps sigma to sigma / sqrt(sigma^2 + s); plain CholeskyQR2 in double is safe once
// cond <= 1e6 (it needs eps_double * cond^2 << 1).
int shifted_sweeps(int64_t m, int64_t l, double unit, double shift) {
  const double rm = std::sqrt(static_cast<double>(m)), rl = std::sqrt(static_cast<double>(l));
  double sigma = 4.0 * unit / (rm * rl) * std::max(0.5 * (rm - rl), 0.5 / rm);
  int sweeps = 0;
  while (sweeps < 8 && std::sqrt(sigma * sigma + shift) / sigma > 1e6) {
    sigma = sigma / std::sqrt(sigma * sigma + shift);
    ++sweeps;
  }
  return std::max(sweeps, 1);
}

}  // namespace

at::Tensor orth(const at::Tensor& Y, at::ScalarType precision) {
  const int64_t m = Y.size(-2), l = Y.size(-1);
  at::Tensor Z = Y.to(at::kDouble);
  at::Tensor norm = Z.square().sum({-2, -1}, /*keepdim=*/true).sqrt();
  Z = Z / at::where(norm > 0, norm, at::ones_like(norm));
  const double unit = precision == at::kDouble ? std::numeric_limits<double>::epsilon()
                                               : std::numeric_limits<float>::epsilon();
  Z.add_(pseudo_noise(m, l, Z.options()).mul_(4.0 * unit / std::sqrt(static_cast<double>(m * l))));

  // Fukaya et al.'s shift s = 11 (m l + l (l + 1)) u ||Z||_2^2 makes Gram + s I safely positive
  // definite in double.  ||Z||_2 <= ||Z||_F = 1 after the normalisation, and every shifted sweep
  // keeps it below 1, so the shift is a constant.  Each shifted sweep improves cond(Z) to about
  // sqrt(s) / sigma_min; then plain CholeskyQR2 finishes the job.
  const double shift = 11.0 * (static_cast<double>(m) * l + static_cast<double>(l) * (l + 1)) *
                       std::numeric_limits<double>::epsilon();
  const int shifted = shifted_sweeps(m, l, unit, shift);
  at::Tensor shift_eye = at::eye(l, Z.options()).mul_(shift);
  for (int sweep = 0; sweep < shifted + 2; ++sweep) {
    at::Tensor gram = at::matmul(Z.mT(), Z);
    if (sweep < shifted) gram.add_(shift_eye);
    at::Tensor R = std::get<0>(at::linalg_cholesky_ex(gram, /*upper=*/true,
                                                      /*check_errors=*/false));
    Z = at::linalg_solve_triangular(R, Z, /*upper=*/true, /*left=*/false);
  }
  return Z.to(precision);
}

}  // namespace svdlora::cuda
