"""scikit-learn estimators over rsvd and pca: ``TruncatedSVD`` and ``PCA`` (fit, transform,
inverse_transform, the fitted attributes scikit-learn users expect).  Needs scikit-learn."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

try:
    import scipy.sparse as _scipy_sparse
    from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.sparsefuncs import mean_variance_axis
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised where scikit-learn is absent
    raise ImportError("svdlora.TruncatedSVD and svdlora.PCA need scikit-learn: "
                      "pip install 'svdlora[sklearn]'") from exc

from .._checks import check_choice, check_int, check_optional_int, is_dask_array, is_torch_tensor
from .._extension import torch
from .plan import DEFAULT_OVERSAMPLE, METHODS
from .truncated_svd import pca, rsvd

_ACCEPTED = ("csr", "csc", "coo")
_FLOATS = [np.float64, np.float32]


def _seed(random_state: Any) -> int:
    """An rsvd seed from scikit-learn's ``random_state`` (None, an int or a RandomState):
    an int is used as it is, so a fixed ``random_state`` reproduces the same factors."""
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool) \
            and 0 <= random_state < 2**63:
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


class _RandomizedDecomposition(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Shared parameters, validation and transforms of the two estimators."""

    _center = False

    def __init__(self, n_components: int = 2, *, n_oversamples: int = DEFAULT_OVERSAMPLE,
                 n_iter: Optional[int] = None, method: str = "auto",
                 random_state: Any = None) -> None:
        self.n_components = n_components
        self.n_oversamples = n_oversamples
        self.n_iter = n_iter
        self.method = method
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _validate(self, X: Any, *, reset: bool) -> Any:
        if is_dask_array(X):
            return self._validate_dask(X, reset=reset)
        if is_torch_tensor(X) and X.layout == torch.strided:
            # as numpy in its own float dtype (scikit-learn would see an unknown dtype and
            # widen float32 to float64); half precisions are widened to float32
            X = X.detach().to("cpu")
            X = (X.float() if X.dtype in (torch.float16, torch.bfloat16) else X).numpy()
        return validate_data(self, X, accept_sparse=_ACCEPTED, dtype=_FLOATS, reset=reset)

    def _validate_dask(self, X: Any, *, reset: bool) -> Any:
        """A dask array is checked from its metadata: ``validate_data`` would gather it onto
        the client.  Its dtype is rsvd's to check (integer and boolean data compute in
        float64, as scikit-learn's do)."""
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D dask array (n_samples, n_features), got shape "
                             f"{X.shape}")
        if reset:
            self.n_features_in_ = int(X.shape[1])
            self.__dict__.pop("feature_names_in_", None)
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input")
        return X

    def fit(self, X: Any, y: Any = None) -> "_RandomizedDecomposition":
        """Fit the model on ``X`` (n_samples × n_features; numpy, scipy.sparse, a 2-D dask
        array, or anything array-like, such as a CPU torch tensor)."""
        self.fit_transform(X)
        return self

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit on ``X`` and return its projection onto the components (``U · diag(S)``; a
        dask array for dask input)."""
        X = self._validate(X, reset=True)
        short = min(X.shape)
        k = check_int(self.n_components, "n_components", minimum=1, maximum=short)
        oversample = check_int(self.n_oversamples, "n_oversamples", minimum=0)
        n_iter = check_optional_int(self.n_iter, "n_iter", minimum=0)
        method = check_choice(self.method, "method", METHODS)
        seed = _seed(self.random_state)
        if self._center:
            U, S, Vh, mean = pca(X, k, oversample=oversample, n_iter=n_iter, seed=seed,
                                 method=method)
            self.mean_ = mean
        else:
            U, S, Vh = rsvd(X, k, oversample=oversample, n_iter=n_iter, seed=seed, method=method)
        self.components_ = Vh
        self.singular_values_ = S
        self.n_components_ = k
        self._n_features_out = k
        projected = U * S
        self._set_variances(X, projected, S)
        if is_dask_array(X):  # dask in, dask out (rows chunked like X's)
            import dask.array as da
            return da.from_array(projected, chunks=(X.chunks[0], -1))
        return projected

    def transform(self, X: Any) -> np.ndarray:
        """Project ``X`` onto the fitted components (lazily, as a dask array, for dask
        input)."""
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        projected = X @ self.components_.T
        if self._center:  # (X - mean) C^T without a centred copy of X
            projected = projected - self.mean_ @ self.components_.T
        return projected if is_dask_array(projected) else np.asarray(projected)

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Map projected data back to the feature space (the rank-``k`` reconstruction)."""
        check_is_fitted(self)
        dtype = self.components_.dtype
        X = X.astype(dtype) if is_dask_array(X) else np.asarray(X, dtype=dtype)
        if X.ndim != 2 or X.shape[1] != self.n_components_:
            raise ValueError(f"X must have shape (n_samples, {self.n_components_}), "
                             f"got {X.shape}")
        restored = X @ self.components_
        return restored + self.mean_ if self._center else restored

    def _column_variances(self, X: Any, ddof: int) -> np.ndarray:
        if is_dask_array(X):
            return np.asarray(X.astype(np.float64).var(axis=0, ddof=ddof).compute())
        if _scipy_sparse.issparse(X):
            _, variances = mean_variance_axis(_scipy_sparse.csr_matrix(X), axis=0)
            return variances * (X.shape[0] / max(X.shape[0] - ddof, 1))
        return np.var(X, axis=0, ddof=ddof)


class TruncatedSVD(_RandomizedDecomposition):
    """Truncated SVD of a data matrix by :func:`svdlora.rsvd`, as a scikit-learn transformer
    (a drop-in for ``sklearn.decomposition.TruncatedSVD``; no centring, so sparse input such
    as a term-document count matrix stays sparse: latent semantic analysis).

    Parameters
    ----------
    n_components : int, default 2
        Number of components ``k``, at most ``min(n_samples, n_features)``.
    n_oversamples : int, default 10
        Extra sketch columns (``oversample`` of :func:`svdlora.rsvd`).
    n_iter : int or None, default None
        None: rsvd decides the passes over ``X`` by its accuracy rule; an int fixes them.
    method : {"auto", "subspace", "krylov"}, default "auto"
        As in :func:`svdlora.rsvd`.
    random_state : None, int or numpy.random.RandomState, default None
        Seed of the sketch; an int makes fits reproducible.

    Attributes
    ----------
    components_ : ndarray (n_components, n_features)
        Right singular vectors (rows), in rsvd's sign convention.
    singular_values_ : ndarray (n_components,)
    explained_variance_ : ndarray (n_components,)
        Variance of each column of the projected training data.
    explained_variance_ratio_ : ndarray (n_components,)
        ``explained_variance_`` over the total variance of the training data.
    n_components_, n_features_in_, feature_names_in_
        As in scikit-learn.
    """

    def _set_variances(self, X: Any, projected: np.ndarray, S: np.ndarray) -> None:
        self.explained_variance_ = np.var(projected, axis=0)
        total = self._column_variances(X, ddof=0).sum()
        self.explained_variance_ratio_ = self.explained_variance_ / total if total > 0 else \
            np.zeros_like(self.explained_variance_)


class PCA(_RandomizedDecomposition):
    """Principal component analysis by :func:`svdlora.pca`, as a scikit-learn transformer.

    Centring is implicit (``X v − 1 (μᵀ v)``), so unlike ``sklearn.decomposition.PCA`` it
    accepts sparse input without densifying it.  Parameters as in :class:`TruncatedSVD`.

    Attributes
    ----------
    components_ : ndarray (n_components, n_features)
        Principal axes (rows), in rsvd's sign convention.
    mean_ : ndarray (n_features,)
        Column means of the training data.
    singular_values_ : ndarray (n_components,)
    explained_variance_ : ndarray (n_components,)
        ``singular_values_**2 / (n_samples - 1)``.
    explained_variance_ratio_ : ndarray (n_components,)
        Over the total variance (``ddof=1``) of the training data.
    n_components_, n_features_in_, feature_names_in_
        As in scikit-learn.
    """

    _center = True

    def _set_variances(self, X: Any, projected: np.ndarray, S: np.ndarray) -> None:
        self.explained_variance_ = S.astype(np.float64) ** 2 / max(X.shape[0] - 1, 1)
        total = self._column_variances(X, ddof=1).sum()
        ratio = self.explained_variance_ / total if total > 0 else \
            np.zeros_like(self.explained_variance_)
        self.explained_variance_ = self.explained_variance_.astype(S.dtype)
        self.explained_variance_ratio_ = ratio.astype(S.dtype)
