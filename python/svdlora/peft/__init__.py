"""SVD-LoRA as a Hugging Face PEFT method; ``import svdlora.peft`` registers it.

>>> import peft, svdlora.peft
>>> model = peft.get_peft_model(base, svdlora.peft.SVDLoRAPeftConfig(
...     rank=64, inner_rank=8, target_modules=["q_proj", "v_proj"]))

After the import, everything PEFT does with a method works: ``save_pretrained`` /
``PeftModel.from_pretrained``, ``merge_and_unload``, ``disable_adapter``, several named
adapters, and transformers' ``model.add_adapter`` / ``load_adapter``.  :func:`init_pissa`
computes PEFT's PiSSA initialisation with svdlora's randomized SVD.  Needs the ``peft``
package (``pip install 'svdlora[peft]'``).
"""
from .._extension import require_torch

require_torch("svdlora.peft")

try:
    import peft as _peft  # noqa: F401
except ImportError as _exc:
    raise ImportError("svdlora.peft needs the 'peft' package: pip install 'svdlora[peft]' "
                      "(or pip install peft)") from _exc

from ._registry import METHOD_NAME, register  # noqa: E402
from .config import SVDLoRAPeftConfig  # noqa: E402
from .layer import SVDLoRAPeftLayer  # noqa: E402
from .model import SVDLoRAPeftModel  # noqa: E402
from .pissa import init_pissa  # noqa: E402

register(SVDLoRAPeftConfig, SVDLoRAPeftModel)

__all__ = ["SVDLoRAPeftConfig", "SVDLoRAPeftLayer", "SVDLoRAPeftModel", "init_pissa",
           "METHOD_NAME"]
