"""Registering SVD-LoRA with PEFT: the ``PeftType`` member PEFT's registry requires, and the
one call to ``peft.utils.register_peft_method``."""
from __future__ import annotations

import enum

from peft.utils import register_peft_method
from peft.utils.peft_types import PeftType

__all__ = ["METHOD_NAME", "PREFIX", "peft_type", "register"]

#: The method's name in PEFT (``adapter_config.json`` stores ``"peft_type": "SVDLORA"``).
METHOD_NAME = "svdlora"
#: Prefix of every adapter attribute on a tuner layer (PEFT trains exactly these).
PREFIX = "svdlora_"


def peft_type() -> PeftType:
    """The ``PeftType.SVDLORA`` member, added to PEFT's enum on first use.

    ``register_peft_method`` only accepts names that are members of ``PeftType``, and the
    enum is closed, so the member is added the way ``enum`` builds its own: an instance of
    the (str-mixin) enum class entered in its member tables.
    """
    name = METHOD_NAME.upper()
    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    type.__setattr__(PeftType, name, member)  # bypass EnumType's guard on member names
    assert isinstance(PeftType(name), enum.Enum)
    return member


_registered = False


def register(config_cls, model_cls) -> None:
    """Register the method once per process (importing :mod:`svdlora.peft` does this)."""
    global _registered
    if _registered:
        return
    peft_type()
    register_peft_method(name=METHOD_NAME, config_cls=config_cls, model_cls=model_cls,
                         prefix=PREFIX)
    _registered = True
