"""Linear algebra: randomized truncated SVD (:func:`rsvd`), PCA (:func:`pca`) and batches of
matrices (:func:`rsvd_many`), on numpy, torch (CPU/CUDA, bf16 read in place), sparse and
operator inputs."""
from .many import rsvd_many
from .pass_counter import PassLog, PassRecord, count_passes
from .plan import DEFAULT_OVERSAMPLE, METHODS, RSVDPlan, default_n_iter, make_plan
from .results import PCAResult, SVDResult
from .truncated_svd import ToleranceWarning, pca, rsvd

__all__ = ["rsvd", "pca", "rsvd_many", "SVDResult", "PCAResult", "ToleranceWarning",
           "RSVDPlan", "make_plan", "METHODS", "count_passes", "PassLog", "PassRecord", "default_n_iter", "DEFAULT_OVERSAMPLE"]
