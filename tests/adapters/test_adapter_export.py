"""Exporting adapted models: torch.export and both ONNX exporters see the adapter as plain
MatMul/Add (checked with onnxruntime against the eager outputs), and merged models export as
ordinary linear layers."""
from __future__ import annotations

import pytest

from helpers import mlp, move_off_init, needs_compiled, torch

pytestmark = needs_compiled
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import svdlora  # noqa: E402

FLOAT32_TOL = dict(rtol=1e-5, atol=1e-6)  # ~100 u of float32 on outputs of size ~1


def adapted(residual=True):
    model = svdlora.convert(mlp(seed=5, dtype=torch.float32), rank=4, inner_rank=2,
                            residual=residual, progress=False)
    move_off_init(model, s_factor=1.1)
    return model.eval()


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    return torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def op_types(path):
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("residual", [True, False], ids=["keep", "drop"])
def test_unmerged_model_exports_to_onnx_as_matmuls(tmp_path, dynamo, residual):
    model = adapted(residual)
    x = torch.randn(7, 20, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(x)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=dynamo)
    assert not any("svdlora" in t for t in op_types(path))
    torch.testing.assert_close(run_onnx(path, x), expected, **FLOAT32_TOL)


def test_merged_model_exports_to_onnx(tmp_path):
    model = adapted()
    x = torch.randn(7, 20, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = model(x)
    merged = svdlora.merge(model)
    path = tmp_path / "merged.onnx"
    torch.onnx.export(merged, (x,), str(path))
    torch.testing.assert_close(run_onnx(path, x), expected, **FLOAT32_TOL)


def test_torch_export_holds_no_custom_op():
    model = adapted()
    x = torch.randn(7, 20, generator=torch.Generator().manual_seed(7))
    program = torch.export.export(model, (x,))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("svdlora" in t for t in targets)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), **FLOAT32_TOL)
