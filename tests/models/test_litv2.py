"""Tests for hilovit.models.litv2 (LITv2, LITv2Backbone, the litv2_* registry entries).

Exactness: the official fixtures (classification 64x64 and detection backbone 70x102) and the
full-size manifests. Any input size: a reference written here in the official detection style
((B, N, C) tokens, explicit zero padding of the image and of HiLo's maps, NCHW depth-wise conv,
grid_sample deformable conv), run in float64 on odd and non-square sizes.
"""

from __future__ import annotations

import copy
import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hilovit
from hilovit import LITv2, LITv2Backbone, create_model, list_models, load_checkpoint
from hilovit.models.litv2 import param_groups
from hilovit.models.litv2_blocks import HiLoBlock
from references import randomize as _randomize
from references import ref_conv_ffn, ref_dtm

CLS_FIXTURES = ["litv2_e32_img64_a0.9_ws0021", "litv2_e16_img64_a0.5_ws0022"]
DET_FIXTURE = "litv2det_e16_70x102_a0.9_ws0042"
TINY = dict(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], alpha=0.9, local_ws=[0, 0, 4, 2])


def _load(fixtures_dir, name):
    from safetensors.torch import load_file

    meta = json.loads((fixtures_dir / f"{name}.json").read_text())
    sd = load_file(str(fixtures_dir / f"{name}.state_dict.safetensors"))
    io = load_file(str(fixtures_dir / f"{name}.io.safetensors"))
    return meta, sd, io


# ------------------------------------------------------------------------------ reference (official style)
def _ref_hilo(attn, t, H, W):
    """Official detection HiLo on (B, N, C): pad to the window, Hi-Fi windows + Lo-Fi pooled keys, crop."""
    B, N, C = t.shape
    s, hd = attn.ws, attn.head_dim
    x = t.reshape(B, H, W, C)
    x = F.pad(x, (0, 0, 0, (-W) % s, 0, (-H) % s))
    Hp, Wp = x.shape[1], x.shape[2]
    outs = []
    if attn.h_heads:
        nh = attn.h_heads
        w = x.reshape(B, Hp // s, s, Wp // s, s, C).transpose(2, 3).reshape(B, -1, s * s, C)
        qkv = F.linear(w, attn.h_qkv.weight, attn.h_qkv.bias).reshape(B, w.shape[1], s * s, 3, nh, hd)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)
        a = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(-1)
        o = (a @ v).transpose(2, 3).reshape(B, Hp // s, Wp // s, s, s, attn.h_dim)
        o = o.transpose(2, 3).reshape(B, Hp, Wp, attn.h_dim)
        outs.append(F.linear(o, attn.h_proj.weight, attn.h_proj.bias)[:, :H, :W])
    if attn.l_heads:
        nh = attn.l_heads
        q = F.linear(x, attn.l_q.weight, attn.l_q.bias).reshape(B, Hp * Wp, nh, hd).transpose(1, 2)
        src = F.avg_pool2d(x.permute(0, 3, 1, 2), s, s).flatten(2).transpose(1, 2) if s > 1 else x.flatten(1, 2)
        kv = F.linear(src, attn.l_kv.weight, attn.l_kv.bias).reshape(B, -1, 2, nh, hd).permute(2, 0, 3, 1, 4)
        a = ((q @ kv[0].transpose(-2, -1)) * attn.scale).softmax(-1)
        o = (a @ kv[1]).transpose(1, 2).reshape(B, Hp, Wp, attn.l_dim)
        outs.append(F.linear(o, attn.l_proj.weight, attn.l_proj.bias)[:, :H, :W])
    return torch.cat(outs, -1).reshape(B, N, C)


def _ln(m, t):
    return F.layer_norm(t, m.normalized_shape, m.weight, m.bias, m.eps)


def ref_stages(model: LITv2, img: torch.Tensor):
    """Stage outputs [(B, N_i, C_i), H_i, W_i] of the official detection backbone's semantics."""
    p = model.patch_size
    H, W = img.shape[-2:]
    x = F.pad(img, (0, (-W) % p, 0, (-H) % p))
    x = F.conv2d(x, model.patch_embed.proj.weight, model.patch_embed.proj.bias, stride=p)
    H, W = x.shape[-2:]
    t = _ln(model.patch_embed.norm, x.flatten(2).transpose(1, 2))
    outs = []
    for stage in model.layers:
        for blk in stage.blocks:
            if isinstance(blk, HiLoBlock):
                t = t + _ref_hilo(blk.attn, _ln(blk.norm1, t), H, W)
            t = t + ref_conv_ffn(blk.mlp, _ln(blk.norm2, t), H, W)
        outs.append((t, H, W))
        if stage.downsample is not None:
            t, H, W = ref_dtm(stage.downsample, t, H, W)
    return outs


# ------------------------------------------------------------------------------ official fixtures
@pytest.mark.parametrize("name", CLS_FIXTURES)
def test_classification_fixture(fixtures_dir, name):
    meta, sd, io = _load(fixtures_dir, name)
    model = LITv2(**meta["constructor"]).eval()
    model.load_state_dict(sd, strict=True)
    assert sum(p.numel() for p in model.parameters()) == meta["param_count"]
    with torch.no_grad():
        feats = model.forward_features(io["input"])
        assert feats.shape == (2, 2, 2, model.num_features)  # unpooled (B, H, W, C)
        pooled = model.forward_head(feats, pre_logits=True)
        logits = model(io["input"])
        _, inter = model.forward_intermediates(io["input"], output_fmt="NHWC")
    torch.testing.assert_close(pooled, io["features"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits, io["logits"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.patch_embed(io["input"]).flatten(1, 2), io["patch_embed_out"], rtol=0, atol=1e-5)
    for i, out in enumerate(inter):
        torch.testing.assert_close(out.flatten(1, 2), io[f"stage{i}.blocks_out"], rtol=1e-4, atol=1e-4)
    # float64: the same function as the official one up to rounding
    model.double()
    with torch.no_grad():
        torch.testing.assert_close(model(io["input"].double()), io["logits_float64"], rtol=0, atol=1e-10)


def test_detection_backbone_fixture(fixtures_dir):
    meta, sd, io = _load(fixtures_dir, DET_FIXTURE)
    ctor = dict(meta["constructor"])
    bb = LITv2Backbone(**ctor).eval()
    assert set(bb.state_dict()) == set(sd) and sum(p.numel() for p in bb.parameters()) == meta["param_count"]
    load_checkpoint(bb, {f"backbone.{k}": v for k, v in sd.items()} | {"neck.lateral.weight": torch.zeros(1)})
    # the same maps from LITv2(features_only=True)
    fo = LITv2(features_only=True, **{k: ctor[k] for k in ("embed_dim", "depths", "num_heads", "alpha", "local_ws")})
    fo.eval().load_state_dict(sd, strict=True)
    with torch.no_grad():
        outs, outs2 = bb(io["input"]), fo(io["input"])
    assert isinstance(outs, tuple) and len(outs) == 4
    for i in range(4):
        assert tuple(outs[i].shape) == tuple(meta["output_shapes"][i])
        torch.testing.assert_close(outs[i], io[f"out{i}"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(outs2[i], io[f"out{i}"], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ any input size
@pytest.mark.parametrize("size", [(61, 47), (70, 102), (33, 96), (45, 45)])
def test_odd_and_non_square_sizes_match_padded_reference(size):
    torch.manual_seed(0)
    model = _randomize(LITv2(num_classes=5, **TINY), offset_std=2.0).double().eval()
    img = torch.randn(2, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        final, inter = model.forward_intermediates(img, output_fmt="NHWC")
        ref = ref_stages(model, img)
        logits = model(img)
    sizes = model.feature_sizes(*size)
    for out, (t, H, W), hw in zip(inter, ref, sizes):
        assert out.shape[1:3] == (H, W) == hw
        torch.testing.assert_close(out.flatten(1, 2), t, rtol=0, atol=1e-9)
    ref_logits = model.head(_ln(model.norm, ref[-1][0]).mean(1))
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-9)


def test_divisible_size_equals_classification_semantics_and_image_padding():
    # an image that is not a multiple of the patch gives the stage maps of its zero-padded version
    model = _randomize(LITv2(num_classes=3, **TINY)).eval()
    img = torch.randn(1, 3, 62, 63)
    with torch.no_grad():
        a = model.forward_intermediates(img, intermediates_only=True)
        b = model.forward_intermediates(F.pad(img, (0, 1, 0, 2)), intermediates_only=True)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


# ------------------------------------------------------------------------------ manifests / registry
@pytest.mark.parametrize("name", ["litv2_s", "litv2_m", "litv2_b"])
def test_manifest_keys_params_flops(fixtures_dir, name):
    man = json.loads((fixtures_dir / "manifests" / f"{name}.json").read_text())
    with torch.device("meta"):
        model = create_model(name)
    sd = model.state_dict()
    assert {k: list(v.shape) for k, v in sd.items()} == man["state_dict_shapes"]
    assert sum(p.numel() for p in model.parameters()) == man["param_count"]
    assert {k for k, _ in model.named_buffers()} == set(man["buffer_keys"])
    assert {k: str(v.dtype).replace("torch.", "") for k, v in sd.items() if v.dtype != torch.float32} == man[
        "non_float32_keys"
    ]
    assert model.flops(official=True) == man["flops"]  # the official formula reproduced
    assert abs(model.flops() / man["flops"] - 1) < 0.005  # what runs: 8 offset channels, no norms
    for k, v in man["config"].items():
        if k in ("img_size", "depths", "num_heads", "alpha", "local_ws", "embed_dim", "num_classes"):
            got = getattr(model, k)
            assert (list(got) if isinstance(got, (list, tuple)) and k != "img_size" else got) == (
                (v, v) if k == "img_size" else v
            )
    assert model.layers[-1].blocks[-1].drop_path.drop_prob == pytest.approx(man["config"]["drop_path_rate"])


def test_registry_configs_and_overrides():
    assert {"litv2_s", "litv2_m", "litv2_b", "litv2_b_384", "litv2_nano"} <= set(list_models("litv2*"))
    with torch.device("meta"):
        b384 = create_model("litv2_b_384")
        s0 = create_model("litv2_s", alpha=0.0, local_ws=[0, 0, 4, 1])
    assert b384.img_size == (384, 384) and b384.pretrained_cfg["input_size"] == (3, 384, 384)
    assert b384.pretrained_cfg["crop_pct"] == 1.0 and b384.pretrained_cfg["url"].endswith("litv2_b_384.pth")
    attn = s0.layers[2].blocks[0].attn
    assert (attn.ws, attn.l_heads, attn.h_heads) == (4, 0, 12)
    cfg = create_model("litv2_nano", in_chans=1).pretrained_cfg
    assert cfg["input_size"] == (1, 28, 28) and cfg["mean"] == (0.5,) and cfg["classifier"] == "head"


@pytest.mark.parametrize("name", ["litv2_nano", "litv2_s", "litv2_m", "litv2_b", "litv2_b_384"])
def test_registered_forward_backward_small(name):
    # m / b keep their widths, heads and windows but one block per stage (construction time)
    kwargs = {} if name in ("litv2_nano", "litv2_s") else {"depths": [1, 1, 1, 1]}
    model = create_model(name, num_classes=7, **kwargs)
    size = 28 if name == "litv2_nano" else 32
    x = torch.randn(2, 3, size, size + 4)
    y = model(x)
    assert y.shape == (2, 7) and torch.isfinite(y).all()
    y.logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_nano_grey_images():
    model = create_model("litv2_nano", in_chans=1).eval()
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert [tuple(s) for s in model.feature_sizes(28)] == [(14, 14), (7, 7), (3, 3), (1, 1)]
    assert model.layers[2].blocks[0].attn.ws == 3


# ------------------------------------------------------------------------------ FLOPs
@pytest.mark.parametrize("name,size,tol", [("litv2_nano", 28, 1e-3), ("litv2_nano", (30, 45), 0.01),
                                           ("litv2_nano", (33, 17), 0.03), ("litv2_s", (300, 200), 0.005)])
def test_flops_agree_with_counted(name, size, tol):
    # The analytic count takes HiLo's official formula at the padded size; what HiLo executes may
    # differ slightly (padded queries, banded Hi-Fi windows). Maps are tiny at (33, 17): stage 2 is
    # 4x2 padded to 6x3 for its window of 3.
    from hilovit.flops import count_flops

    model = create_model(name).eval()
    H, W = (size, size) if isinstance(size, int) else size
    counted = count_flops(model, torch.randn(1, 3, H, W))
    assert abs(model.flops(size) / counted - 1) < tol


def test_flops_litv2_s(fixtures_dir):
    from hilovit.flops import count_flops

    model = create_model("litv2_s").eval()
    official = json.loads((fixtures_dir / "manifests" / "litv2_s.json").read_text())["flops"]
    assert model.flops(official=True) == official == 3_734_401_596
    assert model.flops() == 3_723_626_496  # 8 offset channels, no norms / biases / pooling
    assert abs(model.flops() / official - 1) < 0.005
    counted = count_flops(model, torch.randn(1, 3, 224, 224))
    assert abs(model.flops() / counted - 1) < 0.005


# ------------------------------------------------------------------------------ features / timm API
def test_features_only_shapes_and_info():
    model = LITv2(features_only=True, out_indices=(1, 3), **TINY).eval()
    assert set(k.split(".")[0] for k in model.state_dict()) == {"patch_embed", "layers", "norm1", "norm3"}
    maps = model(torch.randn(2, 3, 97, 64))
    assert [tuple(m.shape) for m in maps] == [(2, 32, 12, 8), (2, 128, 3, 2)]
    assert [f["num_chs"] for f in model.feature_info] == [32, 128]
    assert [f["reduction"] for f in model.feature_info] == [8, 32]
    with pytest.raises(ValueError, match="out_indices"):
        LITv2(features_only=True, out_indices=(4,), **TINY)


def test_timm_api():
    model = LITv2(num_classes=4, **TINY).eval()
    x = torch.randn(2, 3, 64, 80)
    f = model.forward_features(x)
    assert f.shape == (2, 2, 2, 128)
    assert model.forward_head(f, pre_logits=True).shape == (2, 128)
    inter = model.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [tuple(t.shape) for t in inter] == [(2, 64, 4, 5), (2, 128, 2, 2)]
    model.reset_classifier(11)
    assert model(x).shape == (2, 11) and model.pretrained_cfg["classifier"] == "head"
    model.reset_classifier(0)
    assert model(x).shape == (2, 128)
    assert model.no_weight_decay() == set()
    assert [i["module"] for i in model.feature_info] == [f"layers.{i}" for i in range(4)]


def test_grad_checkpointing_same_result():
    torch.manual_seed(0)
    model = _randomize(LITv2(num_classes=3, **TINY))
    x = torch.randn(2, 3, 40, 36)
    model.train()
    torch.manual_seed(1)
    y1 = model(x)
    y1.sum().backward()
    g1 = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    assert all(s.grad_checkpointing for s in model.layers)
    torch.manual_seed(1)
    y2 = model(x)
    y2.sum().backward()
    torch.testing.assert_close(y1, y2)
    for a, b in zip(g1, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_param_groups_offset_lr():
    model = LITv2(num_classes=3, **TINY)
    groups = param_groups(model, lr=1e-3, weight_decay=0.05)
    by_name = {g["name"]: g for g in groups}
    names = {id(p): n for n, p in model.named_parameters()}
    offset = [names[id(p)] for p in by_name["offset"]["params"]]
    assert offset == [f"layers.{i}.downsample.dconv.conv_offset.weight" for i in range(3)]
    assert by_name["offset"]["lr"] == pytest.approx(1e-5) and by_name["offset"]["weight_decay"] == 0.05
    no_decay = {names[id(p)] for p in by_name["no_decay"]["params"]}
    assert "layers.0.downsample.dconv.conv_offset.bias" in no_decay and "norm.weight" in no_decay
    assert all(p.ndim > 1 for p in by_name["decay"]["params"])
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters()) and len(set(seen)) == len(seen)
    groups = model.param_groups(lr=1.0, offset_lr_scale=0.1, scale_offset_bias=True)
    assert {g["name"]: len(g["params"]) for g in groups}["offset_no_decay"] == 3
    torch.optim.AdamW(groups)


def test_bfloat16_autocast_close():
    """bfloat16 autocast against the float64 official-style reference (:func:`ref_stages`). Each block's
    branch holds about 8 bfloat16 roundings in series (its attention or convolution, as the layer tests
    count; the token mergings' sampling positions are rounded too), and the roundings of the 5 blocks,
    3 token mergings and the norms add up along the residual stream: twice one branch's budget, 16 *
    BF16_EPS (6%) of the scale, bounds the pooled features. The classifier adds up 128 of them with
    weights of both signs, so its logits are held to the same 16 * BF16_EPS of the size of its terms
    (:func:`linear_term_scale`)."""
    from references import BF16_EPS, linear_term_scale

    model = _randomize(LITv2(num_classes=3, **TINY)).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
            pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        model64 = copy.deepcopy(model).double()
        pooled64 = _ln(model64.norm, ref_stages(model64, x.double())[-1][0]).mean(1)
        ref = model64.head(pooled64)
    assert y.dtype in (torch.bfloat16, torch.float32) and y.shape == ref.shape
    err = float((pooled.double() - pooled64).abs().max() / pooled64.abs().max())
    assert err < 16 * BF16_EPS, err
    err = float((y.double() - ref).abs().max() / linear_term_scale(model.head, pooled64))
    assert err < 16 * BF16_EPS, err


# ------------------------------------------------------------------------------ checkpoints
class _CfgNode(dict):
    """Like yacs' CfgNode, which the official training scripts save as ``config``."""


class _HistoryBuffer:
    """Like mmengine's HistoryBuffer, saved in an mmdet checkpoint's ``message_hub``."""

    def __init__(self, values):
        self._log_history = np.asarray(values)


def test_official_checkpoint_files_load(tmp_path):
    src = _randomize(create_model("litv2_nano", num_classes=10)).eval()
    path = tmp_path / "ckpt_epoch_best.pth"
    config = _CfgNode({"MODEL": _CfgNode({"TYPE": "litv2", "OFFSET_LR_MULTI": 0.01})})
    torch.save({"model": src.state_dict(), "epoch": 3, "max_accuracy": 90.0, "config": config}, path)
    dst = create_model("litv2_nano", num_classes=10).eval()
    load_checkpoint(dst, path)
    for k, v in src.state_dict().items():  # BatchNorm statistics included
        assert torch.equal(v, dst.state_dict()[k]), k
    x = torch.randn(2, 3, 28, 28)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    # another classifier size: re-initialised with a warning
    with pytest.warns(UserWarning, match="classifier"):
        res = load_checkpoint(create_model("litv2_nano", num_classes=4), path)
    assert set(res.reinitialised) == {"head.weight", "head.bias"}


def test_backbone_loads_mmdet_and_classification_checkpoints(tmp_path):
    cls = _randomize(LITv2(num_classes=10, **TINY)).eval()
    bb = LITv2Backbone(**TINY).eval()
    with pytest.warns(UserWarning, match="output norms"):
        load_checkpoint(bb, cls.state_dict())
    assert torch.equal(bb.layers[2].downsample.norm_layer.running_var, cls.layers[2].downsample.norm_layer.running_var)
    det_sd = {f"backbone.{k}": v for k, v in _randomize(LITv2Backbone(**TINY), seed=3).state_dict().items()}
    det_sd["rpn_head.rpn_conv.weight"] = torch.zeros(2, 2)
    path = tmp_path / "mask_rcnn.pth"
    hub = {"log_scalars": {"train/loss": _HistoryBuffer([1.0, 0.5])}, "runtime_info": {"iter": np.int64(7)}}
    torch.save({"state_dict": det_sd, "meta": {"epoch": 12, "dataset_meta": {"classes": ("a", "b")}},
                "message_hub": hub}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(bb, path)
    assert torch.equal(bb.norm3.weight, det_sd["backbone.norm3.weight"])
    with pytest.raises(hilovit.CheckpointError, match="missing"):
        load_checkpoint(LITv2(num_classes=10, **TINY), path)  # a classifier needs norm/head


def test_backbone_frozen_stages():
    bb = LITv2Backbone(frozen_stages=2, **TINY)
    bb.train()
    assert not any(p.requires_grad for p in bb.patch_embed.parameters())
    assert not any(p.requires_grad for p in bb.layers[0].parameters())
    assert all(p.requires_grad for p in bb.layers[1].parameters())
    assert not bb.layers[0].downsample.norm_layer.training and bb.layers[1].downsample.norm_layer.training
    with pytest.raises(ValueError, match="frozen_stages"):
        LITv2Backbone(frozen_stages=-2, **TINY)


# ------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(depths=[1, 1, 2], num_heads=[1, 2, 4, 8]), "num_heads must have one entry per stage"),
        (dict(local_ws=[0, 0, 0, 1]), r"local_ws\[2\]"),
        (dict(num_heads=[1, 2, 3, 8]), r"num_heads\[2\] = 3 must divide"),
        (dict(alpha=1.5), "alpha"),
        (dict(in_chans=0), "in_chans"),
        (dict(embed_dim=-4), "embed_dim"),
        (dict(drop_path_rate=1.0), "drop_path_rate"),
        (dict(has_msa=[0, 1]), "has_msa"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    base = dict(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], local_ws=[0, 0, 2, 1])
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        LITv2(**base)
    with pytest.raises(TypeError):
        LITv2(embed_dim=16, not_an_argument=1)


def test_bad_inputs():
    model = LITv2(num_classes=3, **TINY).eval()
    with pytest.raises(ValueError, match=r"in_chans=3"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"in_chans=3"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="too small.*smallest side for patch_size 4 and 4 stages is 29"):
        model(torch.randn(1, 3, 28, 64))
    with pytest.raises(ValueError, match="too small"):
        model(torch.randn(1, 3, 2, 2))  # smaller than the patch
    with pytest.raises(TypeError, match="floating"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    assert model.min_input_size == 29 and model(torch.randn(1, 3, 29, 29)).shape == (1, 3)
    assert math.isfinite(model(torch.randn(1, 3, 29, 30)).sum().item())


def test_ape_warns_and_is_ignored():
    with pytest.warns(UserWarning, match="ape"):
        model = LITv2(ape=True, **TINY)
    assert not any("pos_embed" in k for k in model.state_dict())
    assert isinstance(model.norm, nn.LayerNorm)
