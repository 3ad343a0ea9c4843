"""SVDLoRAConfig: every field checked once (TypeError for a wrong type, ValueError for a wrong
value, each naming the field), derived values, per-layer ranks and the dict round trip."""
from __future__ import annotations

import numpy as np
import pytest

from helpers import needs_torch

pytestmark = needs_torch


def config(**kw):
    import svdlora
    return svdlora.SVDLoRAConfig(**kw)


def test_defaults_and_derived_values():
    c = config(rank=16)
    assert (c.inner_rank, c.alpha, c.mode, c.svd, c.seed) == (8, None, "keep", "randomized", 0)
    assert c.residual and c.scale == 1.0
    assert config(rank=16, inner_rank=4, alpha=8).scale == 2.0
    assert config(rank=16, inner_rank=4, alpha=8, rank_stabilized=True).scale == 4.0
    assert not config(rank=4, inner_rank=2, mode="drop").residual


def test_values_are_normalised():
    c = config(rank=np.int64(6), inner_rank=np.int32(2), alpha=3, seed=np.uint16(7),
               energy=np.float32(0.5), rank_stabilized=np.bool_(True), target_modules=["q", "v"])
    assert type(c.rank) is int and type(c.alpha) is float and type(c.energy) is float
    assert c.rank_stabilized is True and c.target_modules == ("q", "v")


@pytest.mark.parametrize("kw, exc, match", [
    ({"rank": 0}, ValueError, "rank"),
    ({"rank": 2.0}, TypeError, "rank"),
    ({"rank": True}, TypeError, "rank"),
    ({"rank": 4, "inner_rank": 0}, ValueError, "inner_rank"),
    ({"rank": 4, "inner_rank": 5}, ValueError, "inner_rank"),
    ({"rank": 4, "inner_rank": 2, "alpha": "1"}, TypeError, "alpha"),
    ({"rank": 4, "inner_rank": 2, "alpha": float("nan")}, ValueError, "alpha"),
    ({"rank": 4, "inner_rank": 2, "rank_stabilized": 1}, TypeError, "rank_stabilized"),
    ({"rank": 4, "inner_rank": 2, "mode": "residual"}, ValueError, "mode"),
    ({"rank": 4, "inner_rank": 2, "svd": "lapack"}, ValueError, "svd"),
    ({"rank": 4, "inner_rank": 2, "seed": -1}, ValueError, "seed"),
    ({"energy": 0.0}, ValueError, "energy"),
    ({"energy": 1.01}, ValueError, "energy"),
    ({"energy": "0.5"}, TypeError, "energy"),
    ({}, ValueError, "rank=, energy="),
    ({"rank": 4, "inner_rank": 2, "target_modules": [1]}, TypeError, "target_modules"),
    ({"rank": 4, "inner_rank": 2, "target_modules": []}, ValueError, "target_modules"),
    ({"rank": 4, "inner_rank": 2, "target_modules": "(unclosed"}, ValueError, "regex"),
])
def test_bad_fields(kw, exc, match):
    with pytest.raises(exc, match=match):
        config(**kw)


def test_energy_clips_inner_rank_per_layer():
    c = config(energy=0.9, inner_rank=8)
    assert c.layer_ranks(30, 20) == (20, 8)       # the cap is min(D, K) without rank
    assert c.layer_ranks(30, 20, rank=3) == (3, 3)
    with pytest.raises(ValueError, match="rank must satisfy"):
        config(rank=25, inner_rank=2).layer_ranks(30, 20)


def test_dict_round_trip_and_strictness():
    import svdlora
    c = config(rank=12, inner_rank=3, alpha=6.0, mode="drop", target_modules=r".*\.q")
    assert svdlora.SVDLoRAConfig.from_dict(c.to_dict()) == c
    assert svdlora.SVDLoRAConfig.from_dict({"rank": 4, "inner_rank": 2}) == config(rank=4, inner_rank=2)
    with pytest.raises(ValueError, match="unknown SVDLoRAConfig field"):
        svdlora.SVDLoRAConfig.from_dict({"rank": 4, "inner_rnak": 2})
    with pytest.raises(TypeError, match="dict"):
        svdlora.SVDLoRAConfig.from_dict([("rank", 4)])
    assert c.replace(mode="keep").residual and not c.residual
