// Argument checks shared by the kernels of every device.  The Python wrappers validate first
// and give friendlier messages; these guard direct calls of torch.ops.svdlora.* so that a bad
// call raises instead of crashing.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <optional>

namespace svdlora {

inline bool is_low_precision(const at::Tensor& t) {
  return t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
}

// fp16/bf16 inputs are read in their own dtype and computed in fp32.
inline at::ScalarType compute_dtype(const at::Tensor& A) {
  return is_low_precision(A) ? at::kFloat : A.scalar_type();
}

inline void check_rsvd_inputs(const at::Tensor& A, const at::Tensor& omega,
                              const std::optional<at::Tensor>& col_mean, int64_t n_iter) {
  TORCH_CHECK(A.dim() >= 2, "svdlora: A must have at least 2 dims (..., m, n), got ", A.dim());
  TORCH_CHECK(A.numel() > 0, "svdlora: A must not be empty, got shape ", A.sizes());
  auto st = A.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "svdlora: A must be float16, bfloat16, float32 or float64, got ", st);
  TORCH_CHECK(!A.is_sparse(), "svdlora: A must be a dense tensor");
  const int64_t short_side = std::min(A.size(-2), A.size(-1));
  TORCH_CHECK(omega.dim() == 2 && omega.size(0) == short_side && omega.size(1) >= 1 &&
                  omega.size(1) <= short_side,
              "svdlora: omega must have shape (min(m, n)=", short_side, ", l) with 1 <= l <= ",
              short_side, ", got ", omega.sizes());
  TORCH_CHECK(omega.scalar_type() == compute_dtype(A), "svdlora: omega must have dtype ",
              compute_dtype(A), ", got ", omega.scalar_type());
  TORCH_CHECK(omega.device() == A.device(), "svdlora: omega must be on ", A.device());
  TORCH_CHECK(n_iter >= 0, "svdlora: n_iter must be >= 0, got ", n_iter);
  if (col_mean.has_value()) {
    const auto& mu = *col_mean;
    TORCH_CHECK(mu.dim() == A.dim() - 1 && mu.size(-1) == A.size(-1) &&
                    mu.sizes().slice(0, mu.dim() - 1) == A.sizes().slice(0, A.dim() - 2),
                "svdlora: col_mean must have shape (..., n) matching A ", A.sizes(), ", got ",
                mu.sizes());
    TORCH_CHECK(mu.device() == A.device(), "svdlora: col_mean must be on ", A.device());
  }
}

inline void check_rank(int64_t rank, const at::Tensor& omega) {
  TORCH_CHECK(rank >= 1 && rank <= omega.size(1), "svdlora.rsvd: rank must be in [1, l=",
              omega.size(1), "], got ", rank);
}

inline void check_adaptive_inputs(const at::Tensor& A, const at::Tensor& omega, double tol,
                                  int64_t block_size, int64_t max_rank) {
  TORCH_CHECK(A.dim() == 2, "svdlora.rsvd_adaptive: A must be 2-D, got ", A.dim(), " dims");
  TORCH_CHECK(tol > 0 && tol < 1, "svdlora.rsvd_adaptive: tol must be in (0, 1), got ", tol);
  TORCH_CHECK(block_size >= 1, "svdlora.rsvd_adaptive: block_size must be >= 1");
  TORCH_CHECK(max_rank >= 1 && max_rank <= omega.size(1), "svdlora.rsvd_adaptive: max_rank must "
              "be in [1, ", omega.size(1), "], got ", max_rank);
}

// The bases after max_passes passes (ceil(P/2) U blocks and floor(P/2) + 1 V blocks of width
// b) must fit in the short side and hold at least `rank` columns.
inline void check_krylov_inputs(const at::Tensor& A, const at::Tensor& omega, int64_t rank,
                                int64_t settle_passes, int64_t max_passes, double stop_tol,
                                double gain_tol) {
  const int64_t short_side = std::min(A.size(-2), A.size(-1));
  const int64_t b = omega.size(1);
  TORCH_CHECK(max_passes >= 1 && settle_passes >= 0, "svdlora.rsvd_krylov: need max_passes >= 1"
              " and settle_passes >= 0, got ", max_passes, " and ", settle_passes);
  TORCH_CHECK((max_passes / 2 + 1) * b <= short_side,
              "svdlora.rsvd_krylov: max_passes=", max_passes, " blocks of width ", b,
              " outgrow min(m, n)=", short_side);
  const int64_t least = 2 * ((rank + b - 1) / b) - 1;
  TORCH_CHECK(rank >= 1 && least <= max_passes, "svdlora.rsvd_krylov: rank must be in [1, ",
              (max_passes + 1) / 2 * b, "] (the basis after max_passes), got ", rank);
  TORCH_CHECK(stop_tol >= 0 && gain_tol >= 0, "svdlora.rsvd_krylov: stop_tol and gain_tol must "
              "be >= 0, got ", stop_tol, " and ", gain_tol);
}

}  // namespace svdlora
