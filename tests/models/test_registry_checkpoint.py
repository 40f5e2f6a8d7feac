"""Every registered model: builds, runs forward and backward at a small size, round-trips a checkpoint;
full-size configs have exactly the official parameters of their manifests (built on the meta device)."""

import json

import pytest
import torch
import torch.nn.functional as F

import hilovit
from hilovit import CheckpointError, create_model, list_models, load_checkpoint
from hilovit.models.checkpoint import save_safetensors
from hilovit.models.registry import model_entrypoint

# Small overrides per family (keyed by the module that registers the model), so that every model
# runs forward and backward in well under a second; a family not listed runs at its defaults.
SMALL = {
    "hilovit.models.swin": dict(embed_dim=16, num_heads=(1, 2, 2, 4), depths=(2, 1, 1, 1), img_size=64),
    "hilovit.models.litv2": dict(embed_dim=16, num_heads=(1, 2, 4, 8), depths=(1, 1, 2, 1), img_size=64),
}
MANIFESTS = {
    "swin_t": "swin_t_w7_224",
    "swin_s": "swin_s_w7_224",
    "swin_b": "swin_b_w7_224",
    "swin_b_384": "swin_b_w12_384",
    "litv2_s": "litv2_s",
    "litv2_m": "litv2_m",
    "litv2_b": "litv2_b",
}
# Without a manifest here: the Swin paper's Table 1 (parameters in millions, GFLOPs at the config's size).
PAPER = {"swin_l": (197, 34.5), "swin_l_384": (197, 103.9)}


def small_overrides(name):
    if name.endswith("_nano"):  # already small (28 px)
        return {}
    return dict(SMALL.get(model_entrypoint(name).__module__, {}))


def build_small(name, **extra):
    over = {**small_overrides(name), "num_classes": 5, **extra}
    try:
        return create_model(name, **over)
    except TypeError:  # a family without one of the small-size arguments
        over.pop("img_size", None)
        return create_model(name, **over)


def image_size(model):
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    size = cfg.get("input_size", (3, 64, 64))
    return size[0], min(size[1], 64), min(size[2], 64)


# segmentation and detection: tests/models/test_segmentation.py, test_retinanet.py, test_mask_rcnn.py
ALL = [n for n in list_models() if not n.startswith(("semfpn_", "retinanet_", "mask_rcnn_"))]


def test_registry_has_the_swin_family():
    assert {"swin_t", "swin_s", "swin_b", "swin_l", "swin_b_384", "swin_l_384", "swin_nano"} <= set(ALL)
    aliases = set(list_models(include_aliases=True)) - set(ALL)
    assert {"swin_tiny_patch4_window7_224", "swin_large_patch4_window12_384"} <= aliases
    with pytest.raises(ValueError, match="unknown model 'swin_xl'"):
        create_model("swin_xl")


@pytest.mark.parametrize("name", ALL)
def test_builds_and_runs_forward_backward_at_a_small_size(name):
    torch.manual_seed(0)
    model = build_small(name).train()
    c, h, w = image_size(model)
    out = model(torch.randn(2, c, h, w))
    assert out.shape == (2, 5)
    F.cross_entropy(out, torch.tensor([1, 3])).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, c, h, w)).shape == (1, 5)


@pytest.mark.parametrize("name", ALL)
def test_checkpoint_round_trip_through_create_model(name, tmp_path):
    torch.manual_seed(1)
    src = build_small(name).eval()
    path = tmp_path / f"{name}.safetensors"
    save_safetensors(src.state_dict(), path)
    dst = create_model(name, pretrained=str(path), **{**small_overrides(name), "num_classes": 5}).eval()
    c, h, w = image_size(dst)
    x = torch.randn(1, c, h, w)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


@pytest.mark.parametrize("name", [n for n in ALL if n in MANIFESTS or n in PAPER])
def test_full_size_parameters_equal_the_official(name, fixtures_dir):
    with torch.device("meta"):
        model = create_model(name)
    count = sum(p.numel() for p in model.parameters())
    if name in PAPER:
        params_m, gflops = PAPER[name]
        assert round(count / 1e6) == params_m
        assert abs(model.flops() / 1e9 - gflops) / gflops < 0.005
        return
    manifest = json.loads((fixtures_dir / "manifests" / f"{MANIFESTS[name]}.json").read_text())
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == manifest["state_dict_shapes"]
    assert count == manifest["param_count"]
    flops = getattr(model, "flops", None)
    if flops is not None and name.startswith("swin"):
        assert abs(flops() - manifest["flops"]) / manifest["flops"] < 0.005


def test_a_checkpoint_of_another_family_lists_the_offending_keys():
    swin = build_small("swin_t")
    other = [n for n in ALL if not n.startswith("swin")]
    target = build_small(other[0]) if other else build_small("swin_t", depths=(1, 1, 1, 1))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(target, swin.state_dict())
    msg = str(e.value)
    assert "missing keys" in msg or "unexpected keys" in msg or "shape mismatch" in msg
    assert "layers." in msg or "blocks." in msg


def test_checkpoint_files_pth_and_wrapped(tmp_path):
    src = build_small("swin_t").eval()
    sd = src.state_dict()
    torch.save({"model": sd}, tmp_path / "a.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "b.pth")
    for f in ("a.pth", "b.pth"):
        dst = build_small("swin_t").eval()
        load_checkpoint(dst, tmp_path / f)
        for k, v in dst.state_dict().items():
            torch.testing.assert_close(v, sd[k])
    with pytest.raises(FileNotFoundError):
        load_checkpoint(build_small("swin_t"), tmp_path / "missing.pth")
    assert hilovit.SwinTransformer is type(src)


@pytest.mark.parametrize("name", ["swin_nano", "litv2_nano"])
def test_size_caches_built_under_inference_mode_serve_autograd_later(name):
    """Plans, masks and fused weights are cached per size; when the first call of a size comes
    under torch.inference_mode they must still work in a later training step, and for a frozen
    model whose input needs a gradient (saliency)."""
    model = hilovit.create_model(name).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        first = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)
    model.train()
    model(x).square().mean().backward()  # training step at the cached size
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval().requires_grad_(False)
    with torch.inference_mode():
        again = model(x)  # (the training step moved BatchNorm statistics, so not `first`)
    assert again.shape == first.shape
    xi = x.clone().requires_grad_()
    out = model(xi)
    out[:, 0].sum().backward()
    assert xi.grad is not None and xi.grad.abs().sum() > 0
    torch.testing.assert_close(out.detach(), again, atol=1e-5, rtol=1e-5)
