"""Print what CMake needs to know about the installed torch, as CMake `set()` lines.

Exit status 1 (and a reason on stderr) when torch cannot be imported, so the build
can fall back to a pure-Python (numpy-only) install.
"""
import os
import sys

try:
    import torch
except Exception as exc:  # noqa: BLE001 - any import failure means "no torch"
    sys.stderr.write(f"torch is not importable: {exc}\n")
    sys.exit(1)

root = os.path.dirname(torch.__file__)
info = {
    "SVDLORA_TORCH_VERSION": torch.__version__,
    "SVDLORA_TORCH_INCLUDE": os.path.join(root, "include"),
    "SVDLORA_TORCH_LIBDIR": os.path.join(root, "lib"),
    "SVDLORA_TORCH_CXX11_ABI": "1" if torch.compiled_with_cxx11_abi() else "0",
    "SVDLORA_TORCH_CUDA_VERSION": torch.version.cuda or "",
}
for key, value in info.items():
    print(f'set({key} "{value}")')
