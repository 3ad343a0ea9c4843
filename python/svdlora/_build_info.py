"""``svdlora.build_info()``: the one place that says what this install can do."""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from ._checks import has_kernels
from ._extension import compiled, torch, unavailable_reason


def _adapter_ops() -> Optional[Dict[str, str]]:
    """Which implementation of the adapter op runs per device type."""
    if torch is None:
        return None
    kernel = {True: "compiled", False: "reference"}
    return {"cpu": kernel[has_kernels(torch.device("cpu"))],
            "cuda": kernel[has_kernels(torch.device("cuda"))], "other": "reference"}


def build_info() -> Dict[str, Any]:
    """Describe this install.

    Returns
    -------
    dict
        ``compiled`` (bool): the C++ core ``svdlora._C`` is loaded;
        ``cuda`` (bool): it was built with CUDA kernels;
        ``torch_version`` (str or None): the torch in use;
        ``built_with_torch`` (str or None): the torch the core was compiled against;
        ``cuda_version`` (str or None): CUDA version of the compiled kernels;
        ``cuda_available`` (bool): torch sees a GPU now;
        ``numpy_version`` (str); ``backends`` (list of str): rsvd backends usable for dense
        input;
        ``adapter_ops`` (dict or None): per device type ("cpu", "cuda", "other"), whether
        the SVD-LoRA op runs the compiled kernel ("compiled") or the pure-torch fallback
        ("reference"); None without torch;
        ``reason`` (str): why the compiled core is missing ('' when present).
    """
    info: Dict[str, Any] = {
        "compiled": compiled is not None,
        "cuda": False,
        "torch_version": getattr(torch, "__version__", None),
        "built_with_torch": None,
        "cuda_version": None,
        "cuda_available": bool(torch is not None and torch.cuda.is_available()),
        "numpy_version": np.__version__,
        "backends": ["numpy"],
        "adapter_ops": _adapter_ops(),
        "reason": unavailable_reason(),
    }
    if compiled is not None:
        info.update(compiled.build_info())
        info["backends"] = ["compiled", "numpy"]
    return info
