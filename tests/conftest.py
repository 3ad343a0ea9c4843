"""Fixtures shared by the test-suite: the device, the rsvd backend, the adapter reference
oracle.  Plain helpers (matrices, errors, factories) are in helpers.py."""
from __future__ import annotations

import pytest

from helpers import DEVICES, HAS_COMPILED

try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # hypothesis is a test dependency; its tests skip without it
    _hypothesis_settings = None
else:
    # Property tests draw the same examples on every machine and in every run (derived from
    # each test's own definition), so CI cannot turn red on a draw no one can reproduce;
    # counterexamples found while exploring become explicit regression tests.
    _hypothesis_settings.register_profile("svdlora", derandomize=True, database=None)
    _hypothesis_settings.load_profile("svdlora")


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
