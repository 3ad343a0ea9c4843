// The single place where every svdlora operator schema is declared.
// Kernels are registered per device in csrc/cpu/ and csrc/cuda/.  Fake (meta) kernels and the
// autograd formula are registered from Python: python/svdlora/linalg/backends/compiled.py
// (rsvd ops) and python/svdlora/adapters/ops.py (adapter ops); a pure-torch implementation of
// the adapter ops with the same signatures is python/svdlora/adapters/reference.py.
#include <torch/library.h>

TORCH_LIBRARY(svdlora, m) {
  // Randomized truncated SVD (Halko, Martinsson & Tropp 2011) of A (..., m, n).
  // omega is the Gaussian test matrix, shape (min(m, n), l) with rank <= l <= min(m, n); it is
  // drawn by the caller so the op itself is deterministic.  col_mean (..., n), when given,
  // makes the op factorise A - 1 col_mean^T without forming it (implicit PCA centring).
  // Returns U (..., m, rank), S (..., rank) descending, Vh (..., rank, n).
  m.def("rsvd(Tensor A, Tensor omega, Tensor? col_mean, int rank, int n_iter)"
        " -> (Tensor U, Tensor S, Tensor Vh)");
  // Randomized block Krylov variant (block Lanczos bidiagonalisation with full
  // reorthogonalisation, Rayleigh–Ritz on the recurrence) with the start block omega
  // (min(m, n), b).  With stop_tol == gain_tol == 0 it makes exactly max_passes passes over A;
  // otherwise it stops once the top-rank Ritz energy has converged (the rule, and the meaning
  // of settle_passes, are in common/block_krylov.h).  Returns the factors as rsvd does and the
  // passes made (an int64 scalar).
  m.def("rsvd_krylov(Tensor A, Tensor omega, Tensor? col_mean, int rank, int settle_passes,"
        " int max_passes, float stop_tol, float gain_tol)"
        " -> (Tensor U, Tensor S, Tensor Vh, Tensor passes)");
  // Adaptive-rank variant (blocked randQB_EI, Yu, Gu & Li 2018) for a 2-D A.  omega has
  // (min(m, n), L) columns consumed block_size at a time until the relative Frobenius error is
  // <= tol; returns the smallest rank <= max_rank reaching tol (or max_rank) and the error
  // estimate rel_err as a float64 scalar tensor.
  m.def("rsvd_adaptive(Tensor A, Tensor omega, Tensor? col_mean, float tol, int block_size,"
        " int max_rank, int n_iter) -> (Tensor U, Tensor S, Tensor Vh, Tensor rel_err)");
  // Benchmark peer (CUDA only): cuSOLVER's randomized SVD cusolverDnXgesvdr of a 2-D float32/
  // float64 A with its own random sketch; returns U (m, rank), S (rank), Vh (rank, n).
  m.def("cusolver_gesvdr(Tensor A, int rank, int oversample, int n_iter)"
        " -> (Tensor U, Tensor S, Tensor Vh)");

  // SVD-LoRA linear map y = x W^T + base_out + bias + x (U C Vh)^T with the r x r core
  // C = diag(S) + scale * X @ Y (X: r x r', Y: r' x r); x (..., K), U (D, r), Vh (r, K).
  // Keep mode passes the frozen base weight W (D, K) -- the low-rank term is then accumulated
  // into x W^T in place -- or, for a base layer that is not a plain linear map (quantized,
  // custom), its output base_out (..., D); drop mode passes neither.  The non-low-rank part
  // (x W^T or base_out, and the bias) is written first and the low-rank GEMM accumulates into
  // it.  h = x Vh^T (..., r) is the only activation autograd saves.
  m.def("adapter_forward(Tensor x, Tensor U, Tensor S, Tensor Vh, Tensor X, Tensor Y,"
        " float scale, Tensor? base_weight, Tensor? bias, Tensor? base_out) -> (Tensor y, Tensor h)");
  // Gradients of adapter_forward from dy and the saved h: dx (empty when need_dx is false;
  // includes dy W when base_weight is given), dS = diag(dC), dX = scale dC Y^T,
  // dY = scale X^T dC with dC = (dy U)^T h.
  m.def("adapter_backward(Tensor dy, Tensor h, Tensor U, Tensor S, Tensor Vh, Tensor X,"
        " Tensor Y, float scale, Tensor? base_weight, bool need_dx)"
        " -> (Tensor dx, Tensor dS, Tensor dX, Tensor dY)");
}
