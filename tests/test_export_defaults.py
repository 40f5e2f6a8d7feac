"""``hilovit export`` of a dense model with its default options (no ``--sizes``): the sizes it verifies include some
that are multiples of neither 32 nor the windows, and the graph it writes matches eager PyTorch at such a size in
onnxruntime (a graph traced without the padding path is off there)."""

import pytest
import torch

from hilovit import create_model
from hilovit.export import export_model
from hilovit.models.checkpoint import save_safetensors
from hilovit.tasks import resolve_task

ort = pytest.importorskip("onnxruntime")

NUM_CLASSES = 5


def _not_multiple_of_32(size):
    return any(side % 32 for side in size)


def _eager_outputs(net, x):
    """The outputs the graph carries, in its order: a segmenter's logits, a detector's per-level maps in one list."""
    with torch.no_grad():
        out = net(x)
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for group in out for t in group]


@pytest.mark.filterwarnings("ignore:checkpoint .* records no normalisation")
@pytest.mark.parametrize("name", ["semfpn_litv2_nano", "retinanet_litv2_nano"])
def test_default_export_verifies_and_holds_at_sizes_not_multiples_of_32(name, tmp_path):
    defaults = tuple(resolve_task(None, model=name).export_sizes)
    odd = [s for s in defaults if _not_multiple_of_32(s)]
    assert odd, f"{name}: the default verification sizes {defaults} are all multiples of 32"

    torch.manual_seed(0)
    net = create_model(name, num_classes=NUM_CLASSES).eval()
    ckpt = tmp_path / "model.safetensors"
    save_safetensors(net.state_dict(), ckpt, metadata={"model": name, "num_classes": str(NUM_CLASSES)})
    res = export_model(name, tmp_path / "m.onnx", checkpoint=ckpt)  # every option left at its default
    verified = [tuple(int(v) for v in label.split("x")[1:]) for label in res.diffs]
    assert verified == list(defaults) and res.max_abs_diff < 1e-4

    session = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    h, w = odd[-1]
    x = torch.randn(2, 1, h, w, generator=torch.Generator().manual_seed(1))
    got = session.run(None, {"input": x.numpy()})
    ref = _eager_outputs(net, x)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        g = torch.from_numpy(g)
        assert g.shape == r.shape
        assert torch.allclose(g, r, atol=1e-4, rtol=1e-4), float((g - r).abs().max())
