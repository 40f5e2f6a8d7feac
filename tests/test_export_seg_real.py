"""A real segmentation model (semfpn_litv2_nano: HiLo, deformable token merging, FPN) exported to ONNX with dynamic
batch, height and width, checked in onnxruntime against eager PyTorch at sizes the export did not verify."""

import pytest
import torch

from hilovit import create_model
from hilovit.export import export_onnx

ort = pytest.importorskip("onnxruntime")


def test_semfpn_litv2_nano_onnx_matches_eager(tmp_path):
    torch.manual_seed(0)
    net = create_model("semfpn_litv2_nano", num_classes=5).eval()
    out = tmp_path / "nano.onnx"
    res = export_onnx(net, out, sizes=((32, 32), (48, 80)))  # traced at a size every stage divides
    assert res.path == out and out.stat().st_size > 100_000 and res.max_abs_diff < 1e-4
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "input" and inp.shape[1] == 1 and isinstance(inp.shape[2], str)  # symbolic height
    gen = torch.Generator().manual_seed(1)
    # sizes and batches the export did not see, multiples of neither 32 nor the windows: every padding path
    # (patch embedding, HiLo windows, odd token merging, FPN resizes) must have been traced, not frozen
    for b, h, w in ((2, 72, 40), (1, 100, 70), (1, 77, 129), (1, 33, 33)):
        x = torch.randn(b, 1, h, w, generator=gen)
        with torch.no_grad():
            ref = net(x)
        got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
        assert got.shape == (b, 5, h, w)
        assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4), float((got - ref).abs().max())
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
