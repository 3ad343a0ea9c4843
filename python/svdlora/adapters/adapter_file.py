"""Checked, lazy access to an adapter's safetensors file: names and shapes come from the
header, so a file that declares absurd shapes is refused before any tensor is allocated."""
from __future__ import annotations

from typing import Dict, Tuple

import torch

_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


class AdapterTensors:
    """The tensors of one ``adapter.safetensors``, read one at a time on request.

    safetensors itself checks, when the file is opened, that every header entry's shape and
    dtype match its byte range and that the ranges lie inside the file; this class adds the
    checks against what the adapter config expects.
    """

    def __init__(self, path: str) -> None:
        from safetensors import safe_open
        self.path = path
        try:
            self._file = safe_open(path, framework="pt")
            self._shapes: Dict[str, Tuple[int, ...]] = {}
            self._dtypes: Dict[str, str] = {}
            for key in self._file.keys():
                piece = self._file.get_slice(key)
                self._shapes[key] = tuple(piece.get_shape())
                self._dtypes[key] = piece.get_dtype()
        except Exception as exc:  # safetensors raises its own error types on corrupt files
            raise ValueError(f"{path}: unreadable safetensors file ({' '.join(str(exc).split())})") from None
        self._loaded: Dict[str, torch.Tensor] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._shapes

    def check(self, key: str, shape: Tuple[int, ...]) -> None:
        """Raise ``ValueError`` unless ``key`` is present as a floating tensor of ``shape``."""
        if key not in self._shapes:
            raise ValueError(f"adapter file lacks tensor {key!r}")
        if self._shapes[key] != tuple(shape):
            raise ValueError(f"tensor {key!r} has shape {self._shapes[key]}, expected {tuple(shape)}")
        if self._dtypes[key] not in _FLOAT_DTYPES:
            raise ValueError(f"tensor {key!r} must be floating, got dtype {self._dtypes[key]}")

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._loaded:
            try:
                self._loaded[key] = self._file.get_tensor(key)
            except Exception as exc:
                raise ValueError(f"{self.path}: cannot read tensor {key!r} ({exc})") from None
        return self._loaded[key]
