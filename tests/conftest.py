"""Fixtures shared by the test-suite: the device, the rsvd backend, the adapter reference
oracle.  Plain helpers (matrices, errors, factories) are in helpers.py."""
from __future__ import annotations

import pytest

from helpers import DEVICES, HAS_COMPILED


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Each device the test runs on: "cpu", and "cuda" (marked `cuda`; skipped without a GPU
    and a CUDA build of svdlora)."""
    return request.param


@pytest.fixture(params=["compiled", "numpy"] if HAS_COMPILED else ["numpy"])
def rsvd_backend(request) -> str:
    """Each CPU backend of svdlora.rsvd available in this install."""
    return request.param


@pytest.fixture
def reference():
    """svdlora's pure-torch adapter map (svdlora.adapters.reference), the test oracle."""
    return pytest.importorskip("svdlora.adapters.reference")
