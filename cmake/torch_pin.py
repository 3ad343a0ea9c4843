"""scikit-build-core metadata provider: the wheel's dependencies, pinning the torch release the
compiled core is built against.

A torch extension's C++ ABI is tied to one torch release, so a wheel built with torch X
requires ``torch==X`` (its public version: local tags such as ``+cpu`` or ``+cu130`` name
builds of the same release).  Without torch at build time there is no compiled core and no
pin: the numpy-only wheel depends on numpy alone.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

BASE = ["numpy>=1.22"]


def dynamic_metadata(field: str, settings: Optional[Dict[str, Any]] = None) -> List[str]:
    if field != "dependencies":
        raise ValueError(f"torch_pin only provides 'dependencies', not {field!r}")
    try:
        import torch
    except Exception:  # noqa: BLE001 - no importable torch: the numpy-only build
        return list(BASE)
    return [*BASE, f"torch=={torch.__version__.split('+', 1)[0]}"]
