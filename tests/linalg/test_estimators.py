"""svdlora.TruncatedSVD and svdlora.PCA as scikit-learn estimators: scikit-learn's own
estimator checks, agreement with sklearn's exact solvers to the accuracy bar, sparse and torch
input, Pipeline/GridSearchCV, and the error without scikit-learn."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
sp = pytest.importorskip("scipy.sparse")

from sklearn import decomposition  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import svdlora  # noqa: E402
from helpers import case_seed, matrix_with_spectrum, needs_torch, torch  # noqa: E402


@parametrize_with_checks([svdlora.TruncatedSVD(), svdlora.PCA()])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def _data(*params, m=400, n=120, shift=0.0) -> np.ndarray:
    # gapped spectrum: each of the top components is well defined, so vectors are comparable
    s = np.concatenate([np.linspace(40, 10, 8), 0.5 * 0.97 ** np.arange(n - 8)])
    return matrix_with_spectrum(m, n, s, seed=case_seed("estimator", *params)) + shift


def _assert_same_axes(ours: np.ndarray, theirs: np.ndarray, tol: float) -> None:
    cosines = np.abs(np.sum(ours * theirs, axis=1))
    np.testing.assert_allclose(cosines, 1.0, atol=tol)


def _assert_agrees(ours, theirs, X, rtol: float) -> None:
    """Same spectrum, variances and axes (up to sign), and a reconstruction within the bar."""
    for name in ("singular_values_", "explained_variance_", "explained_variance_ratio_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=rtol)
    _assert_same_axes(ours.components_, theirs.components_, rtol)
    error = np.linalg.norm(X - ours.inverse_transform(ours.transform(X)))
    exact = np.linalg.norm(X - theirs.inverse_transform(theirs.transform(X)))
    assert error <= 1.01 * exact


def test_truncated_svd_agrees_with_sklearn_arpack():
    X = _data("tsvd")
    ours = svdlora.TruncatedSVD(8, random_state=0).fit(X)
    _assert_agrees(ours, decomposition.TruncatedSVD(8, algorithm="arpack", random_state=0).fit(X),
                   X, rtol=1e-8)


def test_pca_agrees_with_sklearn_full_solver():
    X = _data("pca", shift=3.0)
    ours = svdlora.PCA(8, random_state=0).fit(X)
    theirs = decomposition.PCA(8, svd_solver="full").fit(X)
    np.testing.assert_allclose(ours.mean_, theirs.mean_, rtol=1e-12)
    _assert_agrees(ours, theirs, X, rtol=1e-8)
    # U S against (X - mean) V^T: equal up to how far span(V) is from the exact top subspace
    # (gap 10 : 0.5 here, so far below the bar, not to rounding)
    projected = ours.fit_transform(X)
    np.testing.assert_allclose(projected, ours.transform(X), atol=1e-6 * np.abs(projected).max())


def test_sparse_counts_are_fitted_as_sparse():
    rng = np.random.default_rng(case_seed("estimator-sparse"))
    counts = sp.csr_matrix(rng.poisson(0.4, (500, 300)))  # an integer count matrix
    dense = counts.toarray().astype(np.float64)
    for Estimator in (svdlora.TruncatedSVD, svdlora.PCA):
        sparse_fit = Estimator(10, random_state=3).fit(counts)
        dense_fit = Estimator(10, random_state=3).fit(dense)
        np.testing.assert_allclose(sparse_fit.singular_values_, dense_fit.singular_values_,
                                   rtol=1e-10)
        np.testing.assert_allclose(sparse_fit.transform(counts), dense_fit.transform(dense),
                                   rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(sparse_fit.explained_variance_ratio_,
                                   dense_fit.explained_variance_ratio_, rtol=1e-10)
    theirs = decomposition.PCA(10, svd_solver="full").fit(dense)
    ours = svdlora.PCA(10, random_state=3).fit(counts)
    s = np.linalg.svd(dense - dense.mean(axis=0), compute_uv=False)
    optimum = np.sqrt(np.sum(s[10:] ** 2))
    assert np.linalg.norm(dense - ours.inverse_transform(ours.transform(counts))) <= 1.01 * optimum
    # captured variance = total - error^2: at most the exact solver's, and at least what an
    # error within the 1.01 bar leaves (pure Poisson noise: a flat spectrum, the hard case)
    total = np.sum((dense - dense.mean(axis=0)) ** 2)
    captured = ours.explained_variance_ratio_.sum()
    assert captured <= theirs.explained_variance_ratio_.sum() * (1 + 1e-10)
    assert captured >= (total - 1.01**2 * optimum**2) / total


@needs_torch
def test_torch_input_gives_the_numpy_result():
    X = _data("torch").astype(np.float32)
    ours = svdlora.PCA(5, random_state=1).fit(torch.from_numpy(X))
    reference = svdlora.PCA(5, random_state=1).fit(X)
    np.testing.assert_array_equal(ours.components_, reference.components_)
    assert ours.components_.dtype == np.float32


@pytest.mark.parametrize("Estimator", [svdlora.TruncatedSVD, svdlora.PCA])
def test_dask_input_is_fitted_where_it_lives(Estimator, monkeypatch):
    da = pytest.importorskip("dask.array")
    X = _data("dask", Estimator.__name__, shift=2.0)
    D = da.from_array(X, chunks=(100, 60))
    # gathering X onto the client (np.asarray on the dask array) would be a failure
    monkeypatch.setattr(da.Array, "__array__", lambda *a, **k: pytest.fail("X was gathered"))
    ours = Estimator(6, random_state=2)
    projected = ours.fit_transform(D)
    lazy = ours.transform(D)
    monkeypatch.undo()
    reference = Estimator(6, random_state=2)
    expected = reference.fit_transform(X)
    assert isinstance(projected, da.Array) and projected.chunks[0] == D.chunks[0]
    assert isinstance(lazy, da.Array)
    # the in-memory fit may run the compiled backend: the same plan, so the two differ by
    # rounding plus how far each span is from the exact top subspace (gap 10 : 0.5), far
    # below these bounds
    np.testing.assert_allclose(ours.singular_values_, reference.singular_values_, rtol=1e-8)
    np.testing.assert_allclose(ours.explained_variance_ratio_,
                               reference.explained_variance_ratio_, rtol=1e-8)
    tol, scale = 1e-6, np.abs(expected).max()
    np.testing.assert_allclose(projected.compute(), expected, rtol=0, atol=tol * scale)
    np.testing.assert_allclose(lazy.compute(), reference.transform(X), rtol=0, atol=tol * scale)
    np.testing.assert_allclose(ours.inverse_transform(lazy).compute(),
                               reference.inverse_transform(expected), rtol=0, atol=tol * scale)
    assert ours.n_features_in_ == X.shape[1] and not hasattr(ours, "feature_names_in_")
    with pytest.raises(ValueError, match="X has 59 features, but .* is expecting 120"):
        ours.transform(D[:, :59])


def test_feature_names_params_and_bad_values():
    X = _data("names", m=50, n=12)
    est = svdlora.TruncatedSVD(3, random_state=0).fit(X)
    assert list(est.get_feature_names_out()) == ["truncatedsvd0", "truncatedsvd1", "truncatedsvd2"]
    assert est.get_params()["n_components"] == 3
    assert est.set_params(n_components=4).fit(X).components_.shape == (4, 12)
    with pytest.raises(ValueError, match="n_components must be in \\[1, 12\\]"):
        svdlora.PCA(13).fit(X)
    with pytest.raises(TypeError, match="n_components must be an int"):
        svdlora.PCA(2.5).fit(X)
    with pytest.raises(ValueError, match="method must be one of"):
        svdlora.TruncatedSVD(2, method="lanczos").fit(X)
    with pytest.raises(ValueError, match="X must have shape \\(n_samples, 4\\)"):
        est.inverse_transform(np.ones((2, 3)))


def test_inside_a_pipeline_with_grid_search():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    pipe = Pipeline([("scale", StandardScaler()), ("pca", svdlora.PCA(random_state=0)),
                     ("clf", LogisticRegression(max_iter=2000))])
    search = GridSearchCV(pipe, {"pca__n_components": [2, 30]}, cv=3).fit(X, y)
    assert search.best_params_ == {"pca__n_components": 30}  # 2 components lose the digits
    assert search.best_score_ > 0.85
    assert search.cv_results_["mean_test_score"][0] < 0.7


def test_without_scikit_learn_the_error_names_the_extra():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import svdlora\n"
            "svdlora.rsvd  # the rest of the package works\n"
            "try:\n    svdlora.PCA\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'svdlora[sklearn]'" in out.stdout
