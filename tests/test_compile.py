"""``torch.compile`` works for every registered model: output within 1e-4 of eager.

Every distinct registered graph (``DISTINCT`` and the ``*_nano`` models) is compiled whole
(``fullgraph=True``: a graph break anywhere fails) with the
``aot_eager`` backend, which runs TorchDynamo's capture and AOTAutograd's functionalisation and
decompositions (the stages that model code can break) but generates no code. The compiled model is
called first, on fresh caches (window plans, masks), the way a user calls it.
The registered configs are shrunk (fewer blocks and channels: compilation does not depend on the
sizes) and run on small images. Inductor, the default backend, which generates C++ on CPU, runs on
one small member per family (LITv2-S, Swin-T).

Cost on two cores: the ``*_nano`` models take a few seconds each and always run; the other names
and inductor (tens of seconds per model on a cold compile cache) are marked ``slow``: ``make test``
runs them, ``pytest -m 'not slow'`` leaves them out.
"""

from __future__ import annotations

import pytest
import torch

from hilovit import create_model, list_models

# per family: fewer blocks and channels; every registered name keeps its other settings
# (windows, image size, alpha, local_ws, ...)
SMALL = {
    "litv2": dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], num_classes=10),
    "swin": dict(embed_dim=16, depths=[2, 2], num_heads=[1, 2], num_classes=10),  # W-MSA + SW-MSA per stage
}


def _small(name: str) -> torch.nn.Module:
    overrides = {} if name.endswith("_nano") else SMALL[name.split("_")[0]]
    return create_model(name, **overrides).eval()


def _image(model: torch.nn.Module, batch: int = 2) -> torch.Tensor:
    C, H, W = model.pretrained_cfg["input_size"]
    side = min(H, 64)  # the 224 / 384 configs at 64 x 72 (windows padded, shifted windows masked)
    return torch.randn(batch, C, side, side + 8, generator=torch.Generator().manual_seed(0))


def _compare(model: torch.nn.Module, backend: str, fullgraph: bool = False) -> None:
    torch._dynamo.reset()
    x = _image(model)
    with torch.no_grad():
        out = torch.compile(model, backend=backend, fullgraph=fullgraph)(x)  # first call: fresh caches
        eager = model(x)
    assert out.shape == eager.shape
    assert (out - eager).abs().max().item() <= 1e-4


# Shrunk, the registered classifiers reduce to these distinct graphs: LITv2 (m, b and b_384 differ
# from s only in widths, depths and image size, which SMALL and the small test image replace), Swin
# with windows of 7 and 12.
DISTINCT = ("litv2_s", "swin_t", "swin_b_384")


def _names():
    seg = [pytest.param("semfpn_litv2_nano", marks=pytest.mark.slow)]  # the segmenter: one, slow (tens of s)
    names = [n for n in list_models() if not n.startswith(("semfpn_", "retinanet_", "mask_rcnn_"))]  # dense: own tests
    assert set(DISTINCT) <= set(names)
    return [n if n.endswith("_nano") else pytest.param(n, marks=pytest.mark.slow)
            for n in names if n.endswith("_nano") or n in DISTINCT] + seg


@pytest.mark.parametrize("name", _names())
def test_every_registered_model_compiles(name):
    _compare(_small(name), backend="aot_eager", fullgraph=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["litv2_s", "swin_t"])
def test_inductor_matches_eager(name):
    _compare(_small(name), backend="inductor", fullgraph=True)


def test_models_benchmark_compile_option(monkeypatch):
    """``bench models --compile --train``: compiled inference and training rows beside the eager ones,
    compile times, and the speed-up notes. The compiler runs with the ``aot_eager`` backend (capture,
    AOTAutograd's forward and backward graphs, no code generation: seconds instead of inductor's
    minutes on a cold cache); inductor itself is checked by ``test_inductor_matches_eager``."""
    from hilovit.bench.models import run_models_benchmark

    torch._dynamo.reset()
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: real(m, backend="aot_eager", **kw))
    result = run_models_benchmark(models=["swin_nano"], batch=2, img_size=28, dtypes=["float32"], repeats=1, warmup=0,
                                  output=None, quiet=True, compile=True, train=True, matmul_n=128)
    modes = {r["mode"]: r for r in result["rows"]}
    assert set(modes) == {"inference", "compiled", "train", "train compiled"}
    for mode in ("compiled", "train compiled"):
        assert modes[mode]["images_per_s"] > 0 and modes[mode]["compile_seconds"] > 0
    assert "compile_seconds" not in modes["inference"] and "compile_seconds" not in modes["train"]
    for what in ("inference", "training"):
        assert any(n.startswith(f"torch.compile (inductor) speed-up over eager {what}") and "swin_nano float32" in n
                   and "compiled in" in n for n in result["notes"])
