"""``SVDLoRAPeftConfig``: the SVD-LoRA settings as a ``peft.PeftConfig``, checked by the
native :class:`svdlora.SVDLoRAConfig`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Union

from peft.config import PeftConfig

from ..adapters.config import SVDLoRAConfig
from ._registry import peft_type

__all__ = ["SVDLoRAPeftConfig"]


@dataclass
class SVDLoRAPeftConfig(PeftConfig):
    """SVD-LoRA as a PEFT method: ``W + U (diag(S) - diag(S0) + scale·X Y) Vh`` (keep mode).

    The SVD-LoRA fields have the names, defaults and checks of :class:`svdlora.SVDLoRAConfig`
    (see there); the others are PEFT's own.

    Parameters
    ----------
    rank, inner_rank, alpha, rank_stabilized, svd, seed, energy
        As in :class:`svdlora.SVDLoRAConfig`.
    mode : {"keep"}
        Only keep mode runs through PEFT: PEFT's ``disable_adapter``, ``unmerge`` and
        ``merge_and_unload`` need the original layer.  The compressing drop mode is
        :func:`svdlora.convert` (``mode="drop"``); asking for it here raises ValueError.
    target_modules : list of str, str or None
        PEFT's rules: names a module name equals or ends with, a regex matched against the
        full name, ``"all-linear"``, or None (PEFT's default targets for known
        architectures).  ``nn.Linear`` and transformers' ``Conv1D`` layers can be targeted.
    exclude_modules, layers_to_transform, layers_pattern, modules_to_save
        PEFT's fields, with PEFT's meaning.
    rank_pattern : dict
        Per-layer ranks by module name or regex, overriding ``rank`` (and ``energy``).  With
        ``energy``, the ranks it chose are written here after injection, so that a saved
        adapter reloads with the same shapes on any machine.

    Raises
    ------
    TypeError, ValueError
        A field of the wrong type or out of range (the message names it), or ``mode="drop"``.
    """

    rank: Optional[int] = field(default=None, metadata={"help": "Truncation rank r of every layer."})
    inner_rank: int = field(default=8, metadata={"help": "Rank r' of the trainable core X Y."})
    alpha: Optional[float] = field(default=None, metadata={"help": "Scale numerator (default r')."})
    rank_stabilized: bool = field(default=False, metadata={"help": "scale = alpha / sqrt(r')."})
    mode: str = field(default="keep", metadata={"help": "'keep' (drop mode: svdlora.convert)."})
    svd: str = field(default="randomized", metadata={"help": "'randomized' or 'exact'."})
    seed: int = field(default=0, metadata={"help": "Seed of the rsvd and of X's init."})
    energy: Optional[float] = field(default=None, metadata={"help": "Per-layer rank by energy share."})
    target_modules: Optional[Union[list, str]] = field(default=None, metadata={"help": "Layers to adapt."})
    exclude_modules: Optional[Union[list, str]] = field(default=None, metadata={"help": "Layers to skip."})
    layers_to_transform: Optional[Union[list, int]] = field(default=None, metadata={"help": "Layer indices."})
    layers_pattern: Optional[Union[list, str]] = field(default=None, metadata={"help": "Layer list name."})
    rank_pattern: Dict[str, int] = field(default_factory=dict, metadata={"help": "Per-layer ranks."})
    modules_to_save: Optional[list] = field(default=None, metadata={"help": "Extra trainable modules."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = peft_type()
        # PEFT reads this attribute of every config that targets modules
        self.target_parameters = None
        native = self.svdlora_config()
        for name in ("rank", "inner_rank", "alpha", "rank_stabilized", "mode", "svd", "seed",
                     "energy"):
            setattr(self, name, getattr(native, name))  # normalised (ints, floats)
        if self.mode == "drop":
            raise ValueError("mode='drop' is not available through PEFT: PEFT's disable_adapter, "
                             "unmerge and merge_and_unload need the original layer, which drop mode "
                             "discards. Use svdlora.convert(model, config=svdlora.SVDLoRAConfig("
                             "mode='drop', ...)) for the compressing mode")
        if isinstance(self.target_modules, (list, tuple)):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, (list, tuple)):
            self.exclude_modules = set(self.exclude_modules)
        if isinstance(self.target_modules, str) and self.layers_to_transform is not None:
            raise ValueError("layers_to_transform cannot be used when target_modules is a regex string")
        if self.layers_pattern and self.layers_to_transform is None:
            raise ValueError("layers_pattern needs layers_to_transform")
        if not isinstance(self.rank_pattern, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
                for k, v in self.rank_pattern.items()):
            raise ValueError("rank_pattern must map module names (str) to positive int ranks")

    def svdlora_config(self, rank: Optional[int] = None) -> SVDLoRAConfig:
        """The native config of these settings (``rank`` overrides; target selection is
        PEFT's, so its ``target_modules`` is None)."""
        energy = None if rank is not None else self.energy
        return SVDLoRAConfig(rank=self.rank if rank is None else rank, inner_rank=self.inner_rank,
                             alpha=self.alpha, rank_stabilized=self.rank_stabilized,
                             mode=self.mode, svd=self.svd, seed=self.seed, energy=energy)
