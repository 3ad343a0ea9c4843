"""Module-tree helpers shared by conversion, merging and loading: replacing a submodule by its
dotted name, and undoing side effects on a model when a multi-step change fails."""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """``model.<name> = new`` for a dotted ``name`` (the root itself cannot be replaced)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@contextlib.contextmanager
def unchanged_on_error(model: nn.Module) -> Iterator[None]:
    """Restore every parameter's ``requires_grad`` if the block raises.

    Building an adapter freezes its base layer, which is still part of ``model``; when a later
    layer of the same conversion or load fails, the model must be as it was.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    except BaseException:
        for p, flag in flags:
            p.requires_grad_(flag)
        raise
