// Randomized block Krylov SVD (block Golub–Kahan–Lanczos bidiagonalisation with full
// reorthogonalisation and Rayleigh–Ritz on the recurrence), written once for every device over
// the CenteredOperator of common/centering.h, with an optional adaptive stopping rule.
//
// Subspace iteration keeps only the last block of the Krylov sequence
// Omega, A^T A Omega, (A^T A)^2 Omega, ...; block Krylov keeps all of it, so for the same
// number of passes over A its basis holds a polynomial of the same degree with the freedom to
// choose its coefficients -- the reason it needs fewer passes for the same accuracy (Musco &
// Musco 2015).  The price is the orthogonalisation against a growing basis, kept at GEMM speed
// here (block Gram–Schmidt twice, CholeskyQR per block).
#pragma once

#include <ATen/TensorOperators.h>
#include <ATen/ops/linalg_svd.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/ops/linalg_svdvals.h>
#include <ATen/ops/linalg_vector_norm.h>
#include <ATen/ops/maximum.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "common/centering.h"

namespace svdlora {

// What one block Krylov run may do.  With stop_tol == gain_tol == 0 it makes exactly
// max_passes passes.  Otherwise, after every A pass p (odd p: the Ritz values cost an SVD of
// the projected matrix, so they are taken every other pass), it takes the top-k Ritz energy
// E_p = sum_{i<=k} s_i(B_p)^2 and an estimate of the optimum's squared error
//     e_p = max(||A||_F^2 - E_p, sum_{i>k} s_i(B_p)^2)
// (the first term is the exact squared error of the current answer, an upper bound of the
// optimum's and tight once converged; the second a lower bound -- Ritz values interlace below
// the singular values -- for where rounding leaves the difference meaningless), and stops at
// the first p at which, for every matrix of the batch, with the two-pass gain
// D_p = E_p - E_{p-2}, either
//   * D_p <= gain_tol * e_p  (p >= the first pass whose basis holds `rank` columns), or
//   * the predicted remaining gain is small: with the rate r = D_p / D_{p-2}, the geometric
//     tail R = D_p r / (1 - r) satisfies R <= stop_tol * (e_p - R); only once
//     p - 4 >= settle_passes (the first pass whose basis holds l = rank + oversample columns),
//     since the rate of the first passes, while the top of the spectrum converges, is too
//     optimistic for the rest.
// The 1.01 bar allows 2.01% excess in the squared error; stop_tol = 0.01 keeps half of it in
// reserve.  Chosen on recorded convergence histories of the accuracy-test spectra; see
// docs/rsvd-methods.md.
struct KrylovSettings {
  int64_t rank;
  int64_t settle_passes;
  int64_t max_passes;
  double stop_tol;
  double gain_tol;

  bool adaptive() const { return stop_tol > 0 || gain_tol > 0; }
};

// The stopping rule above, fed after every A pass (p = 1, 3, 5, ...).
class KrylovStop {
 public:
  KrylovStop(const KrylovSettings& run, int64_t rank_pass) : run_(run), rank_pass_(rank_pass) {}

  // top: E_p, optimum2: e_p (float64, one entry per matrix).  True: stop after this pass.
  bool after_pass(int64_t p, const at::Tensor& top, const at::Tensor& optimum2) {
    history_.push_back(top);
    const size_t n = history_.size();  // history_[n - 1] is pass p, [n - 2] pass p - 2
    if (p < rank_pass_ || n < 2) return false;
    at::Tensor gain = top - history_[n - 2];
    if (run_.gain_tol > 0 && gain.le(optimum2 * run_.gain_tol).all().template item<bool>()) {
      return true;
    }
    if (run_.stop_tol <= 0 || p - 4 < run_.settle_passes || n < 3) return false;
    at::Tensor before = history_[n - 2] - history_[n - 3];
    // r in [0, inf]; no gain (converged to rounding) predicts nothing more to come.
    at::Tensor rate = at::where(gain.le(0), at::zeros_like(gain),
                                at::where(before.le(0), at::full_like(gain, INFINITY),
                                          gain / before));
    at::Tensor rest = at::where(rate.lt(1), gain * rate / (1 - rate),
                                at::full_like(gain, INFINITY));
    return rest.le((optimum2 - rest) * run_.stop_tol).all().template item<bool>();
  }

 private:
  KrylovSettings run_;
  int64_t rank_pass_;
  std::vector<at::Tensor> history_;
};

// Orthonormal basis Q of the part of W outside span(basis) (basis orthonormal, possibly empty)
// and C = last^T W for the newest `local` columns `last` of the basis.  In exact arithmetic
// the recurrence makes W orthogonal to all older blocks (B is block bidiagonal), so the first
// Gram–Schmidt sweep runs against the newest block only -- it removes the large component --
// and the second, after normalising, against the whole basis: it removes what rounding left
// along every earlier block, amplified by the normalisation, at the cost of one sweep instead
// of two over the growing basis.  The first normalisation must keep every direction of the
// residual, also the weak ones (its Gram matrix squares their weight below float32's
// resolution: measured, a CholeskyQR there left float32 rank-300 errors at 1.012-1.016x the
// optimum where a Householder QR reaches 1.0002x), so it is the device's stable_basis; the
// second acts on an almost orthonormal block, where one CholeskyQR sweep is exact enough.
template <class Op>
std::pair<at::Tensor, at::Tensor> extend_basis(const Op& op, const at::Tensor& basis,
                                               const at::Tensor& W, int64_t local) {
  if (basis.size(-1) == 0) return {op.stable_basis(W), at::Tensor()};
  at::Tensor last = basis.narrow(-1, basis.size(-1) - local, local);
  at::Tensor C = at::matmul(last.mT(), W);
  at::Tensor Q = op.stable_basis(W - at::matmul(last, C));
  // Once the Krylov space exhausts A's numerical rank (or A's exact rank), the residual is
  // rounding noise and its normalised basis may lie mostly inside span(basis); then the
  // second sweep leaves short columns, and those are swept again until what is left is
  // genuinely new (random noise directions always are, since the bases never fill the space).
  for (int sweep = 0; sweep < 4; ++sweep) {
    at::Tensor R = Q - at::matmul(basis, at::matmul(basis.mT(), Q));
    // The share of each column outside span(basis): ~1 when Q was already orthogonal to it.
    const double shortest = at::linalg_vector_norm(R, 2, at::IntArrayRef{-2}, false, std::nullopt)
                                .min().template item<double>();
    if (shortest > 0.5) return {op.range_basis(R), C};
    Q = op.stable_basis(R);
  }
  return {Q, C};
}

// Top-k Ritz energy of B and the estimate of the optimum's squared error of the stopping rule,
// per matrix, in float64; frob2 is ||A||_F^2 per matrix.
inline std::pair<at::Tensor, at::Tensor> ritz_energies(const at::Tensor& B, int64_t k,
                                                       const at::Tensor& frob2) {
  at::Tensor s2 = at::linalg_svdvals(B).to(at::kDouble).square();
  const int64_t w = s2.size(-1);
  at::Tensor top = s2.narrow(-1, 0, std::min(k, w)).sum(-1);
  at::Tensor rest = w > k ? s2.narrow(-1, k, w - k).sum(-1) : at::zeros_like(top);
  return {top, at::maximum(frob2 - top, rest)};
}

// Tall A (rows >= cols).  omega (cols, b) is the start block; the result's rank is
// settings.rank.  Returns the factors (before finalize_factors) and the passes made.
//
// The recurrence: V_1 = orth(Omega); an A pass turns the newest V block into the next U block
// (U_j = the new part of A V_j), an A^T pass the newest U block into the next V block.  The
// projected matrix B = U^T A V is filled as it goes and is block upper bidiagonal: an A pass
// gives the column block U^T (A V_j) (U_{j-1}^T A V_j from Gram–Schmidt, plus U_j^T A V_j), an
// A^T pass the row block (A^T U_j)^T V; the entries off the two diagonals are rounding (the
// bases are kept orthonormal to working precision) and are left at zero.  Because A V_j lies in span(U) and A^T U_j in span(V) (to rounding),
// U_k S_k V_k^T from the SVD of B is the best rank-k approximation of A in those spaces, with
// error ||A||_F^2 - sum_{i<=k} s_i^2.  Every pass is `precise` since B is made of them.
template <class Backend>
std::pair<Factors, int64_t> rsvd_block_krylov(const Backend& op, const at::Tensor& omega,
                                              const KrylovSettings& run) {
  const int64_t N = op.cols(), b = omega.size(1), k = run.rank;
  // Widths after `max_passes` passes: ceil(P/2) U blocks, floor(P/2) + 1 V blocks; the plan
  // keeps them within the short side (checked by the caller).
  const int64_t cap_u = (run.max_passes + 1) / 2 * b;
  const int64_t cap_v = (run.max_passes / 2 + 1) * b;

  at::Tensor V1 = op.stable_basis(omega);
  at::Tensor W = op.apply(V1, /*precise=*/true);
  std::vector<int64_t> shape(W.sizes().begin(), W.sizes().end());  // (..., M, b)
  shape.back() = cap_u;
  at::Tensor U_all = at::empty(shape, W.options());
  shape[shape.size() - 2] = N;
  shape.back() = cap_v;
  at::Tensor V_all = at::empty(shape, W.options());
  shape[shape.size() - 2] = cap_u;
  at::Tensor B = at::zeros(shape, W.options());
  V_all.narrow(-1, 0, b).copy_(V1);

  int64_t u = 0, v = b, passes = 0;
  at::Tensor frob2;
  if (run.adaptive()) frob2 = op.squared_frobenius_per_matrix();
  // The first pass whose U basis holds `rank` columns.
  KrylovStop stop(run, 2 * ((k + b - 1) / b) - 1);
  while (true) {
    if (passes % 2 == 0) {  // W = A V_j (already computed for the first pass)
      if (passes > 0) W = op.apply(V_all.narrow(-1, v - b, b), /*precise=*/true);
      auto [Q, C] = extend_basis(op, U_all.narrow(-1, 0, u), W, b);
      U_all.narrow(-1, u, b).copy_(Q);
      // Column block of B: U^T A V_j, nonzero only in the newest two row blocks.
      at::Tensor column = B.narrow(-1, v - b, b);
      if (u > 0) column.narrow(-2, u - b, b).copy_(C);
      column.narrow(-2, u, b).copy_(at::matmul(Q.mT(), W));
      u += b;
    } else {  // Z = A^T U_j
      at::Tensor Z = op.apply_t(U_all.narrow(-1, u - b, b), /*precise=*/true);
      auto [Q, D] = extend_basis(op, V_all.narrow(-1, 0, v), Z, b);
      V_all.narrow(-1, v, b).copy_(Q);
      // Row block of B: U_j^T A V, nonzero only in the newest two column blocks.
      at::Tensor row = B.narrow(-2, u - b, b);
      row.narrow(-1, v - b, b).copy_(D.mT());
      row.narrow(-1, v, b).copy_(at::matmul(Z.mT(), Q));
      v += b;
    }
    ++passes;
    if (passes >= run.max_passes) break;
    if (run.adaptive() && passes % 2 == 1) {
      auto [top, optimum2] = ritz_energies(B.narrow(-2, 0, u).narrow(-1, 0, v), k, frob2);
      // One or two host reads per pass: the stopping rule depends on the data.
      if (stop.after_pass(passes, top, optimum2)) break;
    }
  }

  // The SVD of B in float64: float32 LAPACK resolves singular values only to ~eps * s_1, and
  // its vectors for the weak end of a rank-300 answer then cost 1.2-1.6% of the optimum
  // (measured on an i^-2 spectrum); B is small, so this is cheap next to the passes.
  at::Tensor B_used = B.narrow(-2, 0, u).narrow(-1, 0, v);
  auto [Ub, S, Vbh] = at::linalg_svd(B_used.to(at::kDouble), /*full_matrices=*/false);
  const auto dtype = B.scalar_type();
  at::Tensor U = at::matmul(U_all.narrow(-1, 0, u), Ub.narrow(-1, 0, k).to(dtype));
  at::Tensor Vh = at::matmul(Vbh.narrow(-2, 0, k).to(dtype), V_all.narrow(-1, 0, v).mT());
  return {Factors{U, S.narrow(-1, 0, k).to(dtype), Vh}, passes};
}

}  // namespace svdlora
