"""What an install without torch (or without the compiled core) does: numpy still works and
torch-only features raise MissingExtensionError naming the fix."""
from __future__ import annotations

import numpy as np
import pytest

import svdlora
from conftest import HAS_COMPILED, orthonormality_defect, reconstruction_error, torch


def test_numpy_rsvd_works_in_every_install():
    A = np.random.default_rng(0).standard_normal((50, 30)) @ np.diag(0.5 ** np.arange(30))
    U, S, Vh = svdlora.rsvd(A, 5, seed=0, backend="numpy")
    s = np.linalg.svd(A, compute_uv=False)
    assert reconstruction_error(A, U, S, Vh) <= 1.01 * np.sqrt(np.sum(s[5:] ** 2))
    assert orthonormality_defect(U) < 1e-12


def test_build_info_is_consistent():
    info = svdlora.build_info()
    assert isinstance(info["compiled"], bool) and isinstance(info["cuda"], bool)
    if torch is None:
        assert info["torch_version"] is None and info["compiled"] is False
        assert "torch" in info["reason"]
    if not info["compiled"]:
        assert info["backends"] == ["numpy"] and info["reason"]


@pytest.mark.skipif(HAS_COMPILED, reason="only meaningful without the compiled core")
def test_compiled_features_name_the_fix():
    with pytest.raises(svdlora.MissingExtensionError, match="pip install"):
        svdlora.rsvd(np.ones((4, 3)), 1, backend="compiled")
