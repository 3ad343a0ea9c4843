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
#include <map>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "common/centering.h"

namespace svdlora {

// What one block Krylov run may do.  With stop_tol == gain_tol == 0 it makes exactly
// max_passes passes.  Otherwise, after a pass p it may take the top-k Ritz energy
// E_p = sum_{i<=k} s_i(B_p)^2 and an estimate of the optimum's squared error
//     e_p = max(||A||_F^2 - E_p, sum_{i>k} s_i(B_p)^2)
// (the first term is the exact squared error of the current answer, an upper bound of the
// optimum's and tight once converged; the second a lower bound -- Ritz values interlace below
// the singular values -- for where rounding leaves the difference meaningless).  The Ritz
// values cost an SVD of B, so they are taken after every pass while the basis is at most
// kEveryPassWidth wide, and after A passes (odd p) only beyond.  It stops at the first such p
// at which, for every matrix of the batch, either
//   * the gain since the previous evaluated pass q is small:
//     E_p - E_q <= gain_tol * (p - q) * e_p   (evaluated from the first pass whose basis holds
//     `rank` columns; gains are summed over the values that moved by more than their
//     rounding, see KrylovStop), or
//   * the predicted remaining gain is small: with the gain over two passes D_p = E_p - E_{p-2}
//     (A and A^T passes alternate and their gains zig-zag) and its rate r = D_p / D_{p-2},
//     the geometric tail R = D_p r / (1 - r) satisfies R <= stop_tol * (e_p - R); only once
//     p - 4 >= settle_passes (the first pass whose basis holds l = rank + oversample
//     columns), since the rate of the first passes, while the top of the spectrum converges,
//     is too optimistic for the rest.
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

// Basis width up to which the Ritz values are taken after every pass (an SVD of a 400 x 450 B
// costs a few ms, a fraction of one pass over a matrix large enough for block Krylov).
constexpr int64_t kEveryPassWidth = 400;

// The stopping rule above, fed after each evaluated pass p >= the first pass whose basis
// holds `rank` columns.  Gains are summed value by value, counting only the changes larger
// than the rounding of each Ritz value (~eps s_1 s_i): in float32 the converged top values
// jitter by more than the whole remaining gain of a steep spectrum's weak end, and a plain
// E_p - E_q would either hide that gain or fake one.
class KrylovStop {
 public:
  KrylovStop(const KrylovSettings& run, int64_t rank_pass, double eps)
      : run_(run), rank_pass_(rank_pass), eps_(eps) {}

  bool evaluates(int64_t p, int64_t u) const {
    return p >= rank_pass_ && (p % 2 == 1 || u <= kEveryPassWidth);
  }

  // top: the top-k squared Ritz values (..., k); optimum2: e_p (...).  True: stop now.
  bool after_pass(int64_t p, const at::Tensor& top, const at::Tensor& optimum2) {
    const bool have_previous = !history_.empty();
    const int64_t q = have_previous ? history_.rbegin()->first : 0;
    const at::Tensor previous = have_previous ? history_.rbegin()->second : at::Tensor();
    history_[p] = top;
    if (!have_previous) return false;
    const double gain_scale = run_.gain_tol * static_cast<double>(p - q);
    if (run_.gain_tol > 0 &&
        gain(top, previous).le(optimum2 * gain_scale).all().template item<bool>()) {
      return true;
    }
    auto two = history_.find(p - 2), four = history_.find(p - 4);
    if (run_.stop_tol <= 0 || p - 4 < run_.settle_passes || two == history_.end() ||
        four == history_.end()) {
      return false;
    }
    at::Tensor recent = gain(top, two->second);
    at::Tensor before = gain(two->second, four->second);
    // r in [0, inf]; no gain (converged to rounding) predicts nothing more to come.
    at::Tensor rate = at::where(recent.le(0), at::zeros_like(recent),
                                at::where(before.le(0), at::full_like(recent, INFINITY),
                                          recent / before));
    at::Tensor rest = at::where(rate.lt(1), recent * rate / (1 - rate),
                                at::full_like(recent, INFINITY));
    return rest.le((optimum2 - rest) * run_.stop_tol).all().template item<bool>();
  }

 private:
  // sum_i (new_i - old_i) over the values whose change exceeds their rounding.
  at::Tensor gain(const at::Tensor& newer, const at::Tensor& older) const {
    at::Tensor change = newer - older;
    at::Tensor noise = (newer.narrow(-1, 0, 1) * newer).sqrt() * (16 * eps_);
    return at::where(change.abs().gt(noise), change, at::zeros_like(change)).sum(-1);
  }

  KrylovSettings run_;
  int64_t rank_pass_;
  double eps_;
  std::map<int64_t, at::Tensor> history_;
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

// The top-k squared Ritz values of B (..., k), descending, and the stopping rule's estimate
// of the optimum's squared error (...), in float64; frob2 is ||A||_F^2 per matrix and eps the
// unit roundoff of the compute dtype.  ||A||_F^2 - E is used only where it exceeds the
// rounding of E (~eps ||A||_F^2): below that the difference is noise, and the Ritz energy
// beyond k (a lower bound) stands in.
inline std::pair<at::Tensor, at::Tensor> ritz_values(const at::Tensor& B, int64_t k,
                                                     const at::Tensor& frob2, double eps) {
  at::Tensor s2 = at::linalg_svdvals(B).to(at::kDouble).square();
  const int64_t w = s2.size(-1);
  at::Tensor top = s2.narrow(-1, 0, k);
  at::Tensor rest = w > k ? s2.narrow(-1, k, w - k).sum(-1) : at::zeros_like(frob2);
  at::Tensor error2 = frob2 - top.sum(-1);
  at::Tensor resolved = error2.gt(frob2 * (64 * eps));
  return {top, at::where(resolved, at::maximum(error2, rest), rest)};
}

// Tall A (rows >= cols).  omega (cols, b) is the start block; the result's rank is
// settings.rank.  Returns the factors (before finalize_factors) and the passes made.
//
// The recurrence: V_1 = orth(Omega); an A pass turns the newest V block into the next U block
// (U_j = the new part of A V_j), an A^T pass the newest U block into the next V block.  The
// projected matrix B = U^T A V is filled as it goes and is block upper bidiagonal: an A pass
// gives the column block U^T (A V_j) (U_{j-1}^T A V_j from Gram–Schmidt, plus U_j^T A V_j), an
// A^T pass the row block (A^T U_j)^T V; the entries off the two diagonals are rounding (the
// bases are kept orthonormal to working precision) and are left at zero.  Because A V_j lies
// in span(U) and A^T U_j in span(V) (to rounding), U_k S_k V_k^T from the SVD of B is the best
// rank-k approximation of A in those spaces, with error ||A||_F^2 - sum_{i<=k} s_i^2.  Every
// pass is `precise` since B is made of them.
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
  const double eps = W.scalar_type() == at::kDouble ? std::numeric_limits<double>::epsilon()
                                                   : std::numeric_limits<float>::epsilon();
  // Evaluated from the first pass whose U basis holds `rank` columns.
  KrylovStop stop(run, 2 * ((k + b - 1) / b) - 1, eps);
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
    if (run.adaptive() && stop.evaluates(passes, u)) {
      auto [top, optimum2] = ritz_values(B.narrow(-2, 0, u).narrow(-1, 0, v), k, frob2, eps);
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
