"""``SVDLoRAConfig``: every setting of an SVD-LoRA adapter, checked once, and its JSON form."""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from .._checks import (check_bool, check_choice, check_int, check_optional_int,
                       check_optional_real)

__all__ = ["SVDLoRAConfig", "MODES", "SVD_METHODS", "Targets", "ALL_LINEAR"]

MODES = ("keep", "drop")
SVD_METHODS = ("randomized", "exact")
Targets = Union[None, str, Sequence[str]]
#: ``target_modules`` value selecting every linear layer except the output layer (PEFT's).
ALL_LINEAR = "all-linear"


@dataclass(frozen=True)
class SVDLoRAConfig:
    """Settings of an SVD-LoRA adapter (one per model, or per layer with its own ranks).

    A layer with weight ``W`` (D×K) and truncated SVD ``W ≈ U diag(S0) Vh`` (rank ``r``)
    applies ``W_eff = U (diag(S) + scale·X Y) Vh`` (drop mode) or
    ``W + U (diag(S) - diag(S0) + scale·X Y) Vh`` (keep mode), with ``X`` (r×r') and
    ``Y`` (r'×r).  Only ``S``, ``X`` and ``Y`` train.

    Parameters
    ----------
    rank : int or None
        Truncation rank ``r`` of every layer; with ``energy``, the cap.  Needed unless
        ``energy`` is given.
    inner_rank : int, default 8
        Rank ``r'`` of the trainable core ``X Y``, ``1 <= r' <= r``.  With ``energy`` it is
        clipped to each layer's chosen rank.
    alpha : float or None
        Scale numerator; ``scale = alpha / r'`` (``alpha / sqrt(r')`` with
        ``rank_stabilized``).  Defaults to ``r'`` (scale 1).
    rank_stabilized : bool, default False
        The rsLoRA convention ``alpha / sqrt(r')``.
    mode : {"keep", "drop"}, default "keep"
        ``"keep"`` keeps the original layer frozen and adds the low-rank update (exact at
        initialisation); ``"drop"`` discards the dense weight and keeps only the rank-r
        factors (compression plus fine-tuning).
    svd : {"randomized", "exact"}, default "randomized"
        :func:`svdlora.rsvd` or a full LAPACK SVD for the factors.
    seed : int, default 0
        Seed of the randomized SVD and of ``X``'s initialisation.
    energy : float in (0, 1] or None
        Per layer, the smallest rank whose share of ``sum(sigma^2)`` reaches ``energy``
        (capped by ``rank``); ``1.0`` keeps the numerically non-zero spectrum.  With
        ``svd="randomized"`` the rank comes from the adaptive rsvd's error estimate (it may
        exceed the exact one by a rank or two), with ``svd="exact"`` from the full spectrum.
    target_modules : None, str or sequence of str
        Which layers: None (every ``nn.Linear`` and transformers ``Conv1D``),
        ``"all-linear"`` (all of them but the output layer, as in PEFT), a regex matched
        against full module names (PEFT's convention), or names that a module name equals or
        ends with (``".name"``).

    Raises
    ------
    TypeError, ValueError
        A field of the wrong type or out of range; the message names the field.
    """

    rank: Optional[int] = None
    inner_rank: int = 8
    alpha: Optional[float] = None
    rank_stabilized: bool = False
    mode: str = "keep"
    svd: str = "randomized"
    seed: int = 0
    energy: Optional[float] = None
    target_modules: Targets = field(default=None)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the validated values in place
        set_(self, "rank", check_optional_int(self.rank, "rank", minimum=1))
        set_(self, "inner_rank", check_int(self.inner_rank, "inner_rank", minimum=1))
        set_(self, "alpha", check_optional_real(self.alpha, "alpha"))
        set_(self, "rank_stabilized", check_bool(self.rank_stabilized, "rank_stabilized"))
        set_(self, "mode", check_choice(self.mode, "mode", MODES))
        set_(self, "svd", check_choice(self.svd, "svd", SVD_METHODS))
        set_(self, "seed", check_int(self.seed, "seed", minimum=0))
        set_(self, "energy", check_optional_real(self.energy, "energy", low=0.0, high=1.0,
                                                 low_open=True))
        set_(self, "target_modules", _check_targets(self.target_modules))
        if self.rank is None and self.energy is None:
            raise ValueError("give rank=, energy= or both (energy picks ranks, rank caps them)")
        if self.energy is None and self.inner_rank > self.rank:
            raise ValueError(f"inner_rank must satisfy 1 <= inner_rank <= rank = {self.rank}, "
                             f"got {self.inner_rank}")

    # ------------------------------------------------------------------ derived values

    @property
    def residual(self) -> bool:
        """Keep mode: the original layer is kept and the update added to it."""
        return self.mode == "keep"

    @property
    def scale(self) -> float:
        """``alpha / r'`` or ``alpha / sqrt(r')`` for this config's ``inner_rank`` (a layer
        whose ``r'`` was clipped by ``energy`` has its own, in ``layer.scale``)."""
        return adapter_scale(self.inner_rank, self.alpha, self.rank_stabilized)

    def layer_ranks(self, in_features: int, out_features: int,
                    rank: Optional[int] = None) -> Tuple[int, int]:
        """``(r, r')`` of a ``in_features -> out_features`` layer.

        ``rank`` is the layer's own rank (chosen by ``energy``); default this config's
        ``rank`` (or ``min(D, K)`` when only ``energy`` is set).  ``r'`` is ``inner_rank``,
        clipped to ``r`` when ``energy`` chooses ranks.

        Raises
        ------
        ValueError
            ``r > min(in_features, out_features)``, or ``inner_rank > r``.
        """
        short = min(in_features, out_features)
        if rank is None:
            rank = self.rank if self.rank is not None else short
        if not 1 <= rank <= short:
            raise ValueError(f"rank must satisfy 1 <= rank <= min(in_features, out_features) = "
                             f"{short}, got {rank}")
        inner = min(self.inner_rank, rank) if self.energy is not None else self.inner_rank
        if inner > rank:
            raise ValueError(f"inner_rank must satisfy 1 <= inner_rank <= rank = {rank}, "
                             f"got {inner}")
        return rank, inner

    def replace(self, **changes: Any) -> "SVDLoRAConfig":
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> Dict[str, Any]:
        """The fields as JSON-ready values (``target_modules`` as a string or list)."""
        data = dataclasses.asdict(self)
        if isinstance(self.target_modules, tuple):
            data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "SVDLoRAConfig":
        """The inverse of :meth:`to_dict`; unknown keys are an error (a typo must not pass
        silently), missing keys take their defaults.

        Raises
        ------
        TypeError, ValueError
            ``data`` is not a dict, has unknown keys, or a field is invalid.
        """
        if not isinstance(data, dict):
            raise TypeError(f"an SVDLoRAConfig dict is expected, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SVDLoRAConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


def adapter_scale(inner_rank: int, alpha: Optional[float], rank_stabilized: bool) -> float:
    """``alpha / r'`` (LoRA) or ``alpha / sqrt(r')`` (rsLoRA); alpha defaults to ``r'``."""
    alpha = float(inner_rank) if alpha is None else float(alpha)
    return alpha / (math.sqrt(inner_rank) if rank_stabilized else inner_rank)


def _check_targets(target_modules: Any) -> Union[None, str, Tuple[str, ...]]:
    if target_modules is None:
        return None
    if isinstance(target_modules, str):
        try:
            re.compile(target_modules)
        except re.error as exc:
            raise ValueError(f"target_modules: invalid regex {target_modules!r} ({exc})") from None
        return target_modules
    if isinstance(target_modules, (list, tuple, set, frozenset)) and \
            all(isinstance(t, str) for t in target_modules):
        if not target_modules:
            raise ValueError("target_modules must not be an empty list (None selects every layer)")
        return tuple(sorted(target_modules)) if isinstance(target_modules, (set, frozenset)) \
            else tuple(target_modules)
    raise TypeError("target_modules must be None, a regex string or a list of module names, got "
                    f"{type(target_modules).__name__}")


def select_modules(name: str, target_modules: Targets) -> bool:
    """Whether the module called ``name`` is selected by ``target_modules``."""
    if target_modules is None:
        return True
    if isinstance(target_modules, str):  # a regex, matched against the full name (PEFT rule)
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)

