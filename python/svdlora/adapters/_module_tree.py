"""Replacing a submodule by its dotted name (shared by conversion, merging and loading)."""
from __future__ import annotations

from torch import nn


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """``model.<name> = new`` for a dotted ``name`` (the root itself cannot be replaced)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
