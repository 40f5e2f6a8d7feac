"""Semantic FPN: the official fixture and manifests, plain-math references for the neck, head,
final resize, sliding windows and the Swin segmentation backbone, config errors, mmseg checkpoints."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import hilovit
from hilovit import CheckpointError, build_segmentor, create_model, load_checkpoint
from hilovit.models.heads.fpn import FPN
from hilovit.models.segmentation import EncoderDecoder, SwinSegBackbone
from references import randomize, region_ids

FIXTURE = "semfpn_litv2_e16_70x102_a0.9_ws0042"


def fixture_model(fixtures_dir):
    meta = json.loads((fixtures_dir / f"{FIXTURE}.json").read_text())
    model = build_segmentor(meta["constructor"]).eval()
    load_checkpoint(model, fixtures_dir / f"{FIXTURE}.state_dict.safetensors")
    return model, load_file(str(fixtures_dir / f"{FIXTURE}.io.safetensors")), meta


def tiny_cfg(**head):
    return dict(
        type="EncoderDecoder",
        backbone=dict(type="LITv2", embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], alpha=0.5,
                      local_ws=[0, 0, 2, 1]),
        neck=dict(type="FPN", in_channels=[8, 16, 32, 64], out_channels=16, num_outs=4),
        decode_head=dict(dict(type="FPNHead", in_channels=[16] * 4, in_index=[0, 1, 2, 3],
                              feature_strides=[4, 8, 16, 32], channels=8, num_classes=3,
                              norm_cfg=dict(type="SyncBN", requires_grad=True)), **head),
        test_cfg=dict(mode="whole"),
    )


def run(model, x):
    """One forward pass; the backbone, neck and head outputs captured by hooks."""
    got = {}

    def keep(name):
        def hook(module, inputs, out):
            got.update({f"{name}.out{k}": t for k, t in enumerate(out)} if name != "logits" else {name: out})
        return hook
    hooks = [getattr(model, part).register_forward_hook(keep(name))
             for part, name in (("backbone", "backbone"), ("neck", "neck"), ("decode_head", "logits"))]
    with torch.no_grad():
        got["seg_logits"] = model(x)
    for h in hooks:
        h.remove()
    return got


def tiny_model(seed=0, **head):
    torch.manual_seed(seed)
    return randomize(build_segmentor(tiny_cfg(**head)), seed).eval()


# --------------------------------------------------------------------------- official fixture


def test_fixture_every_stage_matches_the_official_model(fixtures_dir):
    model, io, meta = fixture_model(fixtures_dir)
    assert model.param_count_by_part() == meta["param_count_by_part"]
    assert len(model.state_dict()) == meta["state_dict_num_keys"]
    x = io["input"]
    got = run(model, x)
    seg_logits = got["seg_logits"]
    pred = model.predict(x)
    for name, t in got.items():
        assert t.shape == io[name].shape, name
        torch.testing.assert_close(t, io[name], atol=1e-4, rtol=1e-4, msg=name)
    # pred is exact where the logits agree far below the smallest top-2 gap (2.1e-4)
    assert (seg_logits - io["seg_logits"]).abs().max() < 5e-5
    assert pred.dtype == torch.int64 and torch.equal(pred, io["pred"])


def test_fixture_in_float64_agrees_with_the_official_float64_run(fixtures_dir):
    model, io, _ = fixture_model(fixtures_dir)
    got = run(model.double(), io["input"].double())
    for name, t in got.items():  # observed <= 4e-14: the float32 differences are rounding only
        torch.testing.assert_close(t, io[f"{name}_float64"], atol=1e-10, rtol=0, msg=name)


def test_fixture_stage0_is_normalised_and_the_final_resize_stretches_the_padded_grid(fixtures_dir):
    model, io, _ = fixture_model(fixtures_dir)
    x = io["input"]
    with torch.no_grad():
        logits = model.decode(x)
        assert logits.shape[2:] == (18, 26)  # the padded 72 x 104 image at stride 4
        stretched = F.interpolate(logits, size=(70, 102), mode="bilinear", align_corners=False)
        cropped = F.interpolate(logits, size=(72, 104), mode="bilinear", align_corners=False)[:, :, :70, :102]
        out = model(x)
        raw0 = hilovit.LITv2Backbone.forward(model.backbone, x)[0]  # the detection backbone: no norm0
        norm0 = model.backbone.norm0
        normed = F.layer_norm(raw0.permute(0, 2, 3, 1), (16,), norm0.weight, norm0.bias).permute(0, 3, 1, 2)
    assert torch.equal(out, stretched)
    assert (out - cropped).abs().max() > 1e-2
    torch.testing.assert_close(normed, io["backbone.out0"], atol=1e-5, rtol=1e-5)
    assert (raw0 - io["backbone.out0"]).abs().max() > 0.5


def test_official_mmseg_checkpoint_loads_strictly(fixtures_dir, tmp_path):
    model, io, meta = fixture_model(fixtures_dir)
    path = tmp_path / "iter_80000.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {"iter": 80000, "CLASSES": ["a"] * 5}}, path)
    fresh = build_segmentor(meta["constructor"]).eval()
    load_checkpoint(fresh, path)
    with torch.no_grad():
        torch.testing.assert_close(fresh(io["input"]), io["seg_logits"], atol=1e-4, rtol=1e-4)
    sd = model.state_dict()
    del sd["decode_head.scale_heads.3.4.bn.running_var"]
    sd["neck.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"scale_heads\.3\.4\.bn\.running_var[\s\S]*neck\.extra\.weight"):
        load_checkpoint(fresh, {"state_dict": sd, "meta": {}})


def test_checkpoint_with_another_number_of_classes_keeps_all_but_the_classifier(fixtures_dir):
    model, io, meta = fixture_model(fixtures_dir)
    cfg = copy.deepcopy(meta["constructor"])
    cfg["decode_head"]["num_classes"] = 3
    fresh = build_segmentor(cfg).eval()
    with pytest.warns(UserWarning, match="decode_head.conv_seg.bias, decode_head.conv_seg.weight"):
        result = load_checkpoint(fresh, fixtures_dir / f"{FIXTURE}.state_dict.safetensors")
    assert sorted(result.reinitialised) == ["decode_head.conv_seg.bias", "decode_head.conv_seg.weight"]
    assert torch.equal(fresh.neck.fpn_convs[0].conv.weight, model.neck.fpn_convs[0].conv.weight)
    assert fresh(io["input"][:1]).shape == (1, 3, 70, 102)


# --------------------------------------------------------------------------- full-size manifests


@pytest.mark.parametrize("size", ["s", "m", "b"])
def test_ade20k_models_equal_the_official_manifests(fixtures_dir, size):
    manifest = json.loads((fixtures_dir / "manifests" / f"semfpn_litv2_{size}_ade20k.json").read_text())
    with torch.device("meta"):
        model = create_model(f"semfpn_litv2_{size}")
    sd = model.state_dict()
    assert {k: list(v.shape) for k, v in sd.items()} == manifest["state_dict_shapes"]
    assert {k: str(v.dtype).replace("torch.", "") for k, v in sd.items() if v.dtype != torch.float32} == \
        manifest["non_float32_keys"]
    assert sorted(k for k, _ in model.named_buffers() if k in sd) == sorted(manifest["buffer_keys"])
    assert model.param_count_by_part() == manifest["param_count_by_part"]
    assert sum(p.numel() for p in model.parameters()) == manifest["param_count"]
    assert model.config == manifest["config"]  # the official config dict, as merged by mmcv
    # the official tools/get_flops.py number at 512 x 512, part by part
    assert model.flops(512, breakdown=True) == dict(manifest["flops_breakdown"], total=manifest["flops"])
    assert model.flops((512, 512)) == manifest["flops"]
    cfg = model.pretrained_cfg
    assert cfg["url"] == f"https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_{size}_fpn_r50_512x512_80k_ade20k.pth"
    assert cfg["num_classes"] == 150 and cfg["classifier"] == "decode_head.conv_seg"


def test_swin_models_have_the_official_segmentation_backbone_keys():
    with torch.device("meta"):
        model = create_model("semfpn_swin_t")
    keys = [k[len("backbone."):] for k in model.state_dict() if k.startswith("backbone.")]
    expected = ["patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.norm.weight", "patch_embed.norm.bias"]
    block = ["norm1.weight", "norm1.bias", "attn.relative_position_bias_table", "attn.relative_position_index",
             "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
             "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]
    for s, depth in enumerate([2, 2, 6, 2]):
        expected += [f"layers.{s}.blocks.{b}.{k}" for b in range(depth) for k in block]
        if s < 3:
            expected += [f"layers.{s}.downsample.{k}" for k in ("reduction.weight", "norm.weight", "norm.bias")]
    expected += [f"norm{i}.{k}" for i in range(4) for k in ("weight", "bias")]
    assert sorted(keys) == sorted(expected)  # no attn_mask: the official backbone computes it
    # the Swin-T classifier (manifest: 28,288,354) less its norm and head, plus norm0..norm3
    norms = 2 * (96 + 192 + 384 + 768)
    assert model.param_count_by_part()["backbone"] == 28_288_354 - 768 * 2 - (768 * 1000 + 1000) + norms
    assert all(blk.window_size == 7 and blk.shift_size == 3 * (b % 2)
               for layer in model.backbone.layers for b, blk in enumerate(layer.blocks))
    with pytest.raises(ValueError, match="defined for LITv2 backbones"):
        model.flops()


# --------------------------------------------------------------------------- plain-math references


def nearest_rows(n_in, n_out):
    return [math.floor(i * n_in / n_out) for i in range(n_out)]


def test_legacy_nearest_top_down_rows():
    assert nearest_rows(4, 9) == [0, 0, 0, 1, 1, 2, 2, 3, 3]
    fpn = FPN([1, 1], 1, 2)
    with torch.no_grad():
        for conv in fpn.lateral_convs:
            conv.conv.weight.fill_(1.0)
            conv.conv.bias.zero_()
        for conv in fpn.fpn_convs:
            conv.conv.weight.zero_()
            conv.conv.weight[0, 0, 1, 1] = 1.0
            conv.conv.bias.zero_()
        coarse = torch.arange(4.0).view(1, 1, 4, 1).expand(1, 1, 4, 6) + 10 * torch.arange(6.0)
        out = fpn([torch.zeros(1, 1, 9, 13), coarse])[0]
    assert out[0, 0, :, 0].tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3]
    assert (out[0, 0, 0] / 10).tolist() == nearest_rows(6, 13) == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def ref_conv_module(m, x):
    x = F.conv2d(x, m.conv.weight, m.conv.bias, padding=m.conv.padding)
    bn = m.bn
    return F.relu(F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))


def ref_up2(x):
    """Bilinear x2, align_corners=False, written out: source ``(i + 0.5) / 2 - 0.5`` clamped at 0."""
    return ref_bilinear(x, 2 * x.shape[2], 2 * x.shape[3])


def ref_bilinear(x, h, w):
    def axis(n_in, n_out):
        src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * n_in / n_out - 0.5).clamp(min=0)
        i0 = src.floor().long().clamp(max=n_in - 1)
        i1 = (i0 + 1).clamp(max=n_in - 1)
        return i0, i1, (src - i0).to(x.dtype)
    r0, r1, fr = axis(x.shape[2], h)
    c0, c1, fc = axis(x.shape[3], w)
    rows = x[:, :, r0] * (1 - fr)[:, None] + x[:, :, r1] * fr[:, None]
    return rows[..., c0] * (1 - fc) + rows[..., c1] * fc


def ref_neck_head_resize(model, feats, size):
    """FPN (explicit floor-index nearest), FPN head (explicit bilinear) and the final resize."""
    neck, head = model.neck, model.decode_head
    lat = [F.conv2d(f, c.conv.weight, c.conv.bias) for f, c in zip(feats, neck.lateral_convs)]
    for i in range(3, 0, -1):
        h, w = lat[i - 1].shape[2:]
        rows, cols = nearest_rows(lat[i].shape[2], h), nearest_rows(lat[i].shape[3], w)
        lat[i - 1] = lat[i - 1] + lat[i][:, :, rows][:, :, :, cols]
    outs = [F.conv2d(t, c.conv.weight, c.conv.bias, padding=1) for t, c in zip(lat, neck.fpn_convs)]
    total = None
    for level, x in enumerate(outs):
        for j, m in enumerate(head.scale_heads[level]):
            x = ref_conv_module(m, x) if j % 2 == 0 else ref_up2(x)
        total = x if total is None else total + ref_bilinear(x, *total.shape[2:])
    logits = F.conv2d(total, head.conv_seg.weight, head.conv_seg.bias)
    return outs, logits, ref_bilinear(logits, *size)


@pytest.mark.parametrize("size", [(37, 53), (70, 29), (45, 97)])
def test_neck_head_and_resize_match_plain_math_at_odd_and_non_square_sizes(size):
    model = tiny_model().double()
    x = torch.randn(1, 3, *size, dtype=torch.float64)
    got = run(model, x)
    feats = [got[f"backbone.out{i}"] for i in range(4)]
    with torch.no_grad():
        ref_outs, ref_logits, ref_seg = ref_neck_head_resize(model, feats, size)
    assert got["logits"].shape[2:] == (math.ceil(size[0] / 4), math.ceil(size[1] / 4))
    assert got["seg_logits"].shape == (1, 3, *size)
    for i, r in enumerate(ref_outs):
        torch.testing.assert_close(got[f"neck.out{i}"], r, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(got["logits"], ref_logits, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(got["seg_logits"], ref_seg, atol=1e-10, rtol=1e-10)


def ref_slide(model, x, crop, stride):
    """Windows at 0, s, 2s, ... while they fit, plus one ending at the border; sum / count."""
    H, W = x.shape[2:]

    def starts(n, c, s):
        if n <= c:
            return [0]
        out = list(range(0, n - c + 1, s))
        return out if out[-1] == n - c else out + [n - c]
    total = torch.zeros(x.shape[0], model.num_classes, H, W, dtype=x.dtype)
    count = torch.zeros(H, W, dtype=x.dtype)
    for y in starts(H, crop[0], stride[0]):
        for x0 in starts(W, crop[1], stride[1]):
            tile = x[:, :, y:y + crop[0], x0:x0 + crop[1]]
            total[:, :, y:y + tile.shape[2], x0:x0 + tile.shape[3]] += model.encode_decode(tile)
            count[y:y + tile.shape[2], x0:x0 + tile.shape[3]] += 1
    return total / count


@pytest.mark.parametrize("size, crop, stride", [((60, 75), (40, 48), (24, 30)), ((40, 90), (64, 33), (17, 30))])
def test_slide_inference_matches_a_plain_loop_over_crops(size, crop, stride):
    model = tiny_model()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        got = model.inference(x, mode="slide", crop_size=crop, stride=stride)
        ref = ref_slide(model, x, crop, stride)
        whole = model.inference(x, mode="whole")
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert (got - whole).abs().max() > 1e-3  # really windowed (crops see other context)


def test_slide_equals_whole_when_one_crop_covers_the_image_and_test_cfg_is_honoured():
    model = tiny_model()
    x = torch.randn(1, 3, 45, 40)
    with torch.no_grad():
        whole = model(x)
        assert torch.equal(model.inference(x, mode="slide", crop_size=(64, 64), stride=(32, 32)), whole)
        assert torch.equal(model.inference(x, mode="slide", crop_size=(45, 40), stride=5), whole)
        slid = build_segmentor({**tiny_cfg(), "test_cfg": dict(mode="slide", crop_size=32, stride=24)})
        slid.load_state_dict(model.state_dict())
        slid.eval()
        out = slid(x)
        torch.testing.assert_close(out, ref_slide(model, x, (32, 32), (24, 24)), atol=1e-5, rtol=1e-5)
        slid.train()  # training is whole-image (same dropout draws)
        x2 = torch.randn(2, 3, 45, 40)
        torch.manual_seed(1)
        trained = slid(x2)
        torch.manual_seed(1)
        assert torch.equal(trained, slid.encode_decode(x2))


# --------------------------------------------------------------------------- Swin segmentation backbone


def ref_swin_block(blk, x):
    """The official segmentation Swin block, (B, H, W, C): pad after norm1, roll, windows, mask."""
    B, H, W, C = x.shape
    ws, shift, nh = blk.window_size, blk.shift_size, blk.num_heads
    attn = blk.attn
    h = F.layer_norm(x, (C,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
    Hp, Wp = ws * math.ceil(H / ws), ws * math.ceil(W / ws)
    hp = F.pad(h, (0, 0, 0, Wp - W, 0, Hp - H))
    if shift:
        hp = torch.roll(hp, (-shift, -shift), (1, 2))
    gh, gw, N = Hp // ws, Wp // ws, ws * ws
    win = hp.view(B, gh, ws, gw, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, gh * gw, N, C)
    qkv = F.linear(win, attn.qkv.weight, attn.qkv.bias).view(B, gh * gw, N, 3, nh, C // nh)
    q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)
    coords = [(a, b) for a in range(ws) for b in range(ws)]
    index = torch.tensor([[(qa - ka + ws - 1) * (2 * ws - 1) + qb - kb + ws - 1 for ka, kb in coords]
                          for qa, qb in coords])
    a = (q * (C // nh) ** -0.5) @ k.transpose(-2, -1)
    a = a + attn.relative_position_bias_table[index].permute(2, 0, 1)
    if shift:
        r = region_ids(Hp, Wp, ws, shift).view(gh, ws, gw, ws).permute(0, 2, 1, 3).reshape(gh * gw, N)
        a = a + torch.where(r[:, None, :, None] == r[:, None, None, :], 0.0, -100.0).to(a.dtype)
    o = (a.softmax(-1) @ v).permute(0, 1, 3, 2, 4).reshape(B, gh, gw, ws, ws, C)
    out = F.linear(o.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C), attn.proj.weight, attn.proj.bias)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    x = x + out[:, :H, :W]
    h = F.layer_norm(x, (C,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
    return x + F.linear(F.gelu(F.linear(h, blk.mlp.fc1.weight, blk.mlp.fc1.bias)), blk.mlp.fc2.weight, blk.mlp.fc2.bias)


def ref_swin_backbone(bb, img):
    p = bb.patch_size
    H, W = img.shape[2:]
    img = F.pad(img, (0, (p - W % p) % p, 0, (p - H % p) % p))
    pe = bb.patch_embed
    x = F.layer_norm(F.conv2d(img, pe.proj.weight, pe.proj.bias, stride=p).permute(0, 2, 3, 1), (bb.embed_dim,),
                     pe.norm.weight, pe.norm.bias)
    outs = []
    for i, layer in enumerate(bb.layers):
        for blk in layer.blocks:
            x = ref_swin_block(blk, x)
        n = getattr(bb, f"norm{i}")
        outs.append(F.layer_norm(x, x.shape[-1:], n.weight, n.bias).permute(0, 3, 1, 2))
        if layer.downsample is not None:
            m = layer.downsample
            xp = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
            x = torch.cat([xp[:, 0::2, 0::2], xp[:, 1::2, 0::2], xp[:, 0::2, 1::2], xp[:, 1::2, 1::2]], -1)
            x = F.linear(F.layer_norm(x, x.shape[-1:], m.norm.weight, m.norm.bias), m.reduction.weight)
    return outs


@pytest.mark.parametrize("size", [(40, 52), (64, 64), (29, 35)])
def test_swin_backbone_keeps_window_and_shift_on_maps_smaller_than_the_window(size):
    torch.manual_seed(0)
    bb = SwinSegBackbone(embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=4)
    randomize(bb).double().eval()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        got, ref = bb(x), ref_swin_backbone(bb, x)
    assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in ref]
    assert min(got[-1].shape[2:]) < 4  # the last stages are smaller than the window, still shifted
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, atol=1e-8, rtol=1e-8)


def test_swin_backbone_frozen_stages_follow_the_official_rule():
    # mmseg's Swin: >= 0 freezes the patch embedding, >= 2 also stages 0 .. frozen_stages - 2
    bb = SwinSegBackbone(embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=4, frozen_stages=3)
    bb.train()
    frozen = [bb.patch_embed, bb.layers[0], bb.layers[1]]
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    assert not any(m.training for f in frozen for m in f.modules())
    assert all(p.requires_grad for p in bb.layers[2].parameters()) and bb.layers[2].training
    none = SwinSegBackbone(embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=4)
    assert all(p.requires_grad for p in none.parameters())
    with pytest.raises(ValueError, match=r"frozen_stages=-2: expected an integer >= -1"):
        SwinSegBackbone(embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=4, frozen_stages=-2)


def test_swin_segmentor_runs_and_loads_its_own_checkpoint(tmp_path):
    cfg = dict(tiny_cfg(), backbone=dict(type="SwinTransformer", embed_dim=8, depths=[2, 2, 2, 2],
                                         num_heads=[1, 2, 2, 4], window_size=4))
    model = randomize(build_segmentor(cfg)).eval()
    path = tmp_path / "swin_fpn.pth"
    torch.save({"state_dict": model.state_dict(), "meta": {}}, path)
    fresh = build_segmentor(cfg).eval()
    load_checkpoint(fresh, path)
    x = torch.randn(1, 3, 50, 66)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    assert fresh(x).shape == (1, 3, 50, 66)


# --------------------------------------------------------------------------- registry, API, errors


def test_nano_model_for_the_demo_and_overrides():
    model = create_model("semfpn_litv2_nano").eval()
    assert model.pretrained_cfg["input_size"] == (1, 128, 128) and model.num_classes == 11
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert [tuple(f.shape) for f in feats] == [(2, 64, 32, 32), (2, 64, 16, 16), (2, 64, 8, 8), (2, 64, 4, 4)]
        assert model(x).shape == (2, 11, 128, 128)
    rgb = create_model("semfpn_litv2_nano", in_chans=3, num_classes=4, drop_path_rate=0.0)
    assert rgb.pretrained_cfg["input_size"] == (3, 128, 128) and len(rgb.pretrained_cfg["mean"]) == 3
    assert rgb.decode_head.conv_seg.out_channels == 4
    with pytest.raises(TypeError, match="window"):
        create_model("semfpn_litv2_nano", window=3)


def test_training_loss_ignores_the_ignore_index_and_backpropagates():
    model = tiny_model().train()
    x = torch.randn(2, 3, 40, 36)
    labels = torch.randint(0, 3, (2, 40, 36))
    labels[:, :10] = 255
    torch.manual_seed(3)  # the same dropout draws in both passes
    loss = model.losses(x, labels)
    torch.manual_seed(3)
    logits = F.interpolate(model.decode(x), size=(40, 36), mode="bilinear", align_corners=False)
    keep = labels != 255
    ref = -torch.log_softmax(logits, 1).gather(1, labels.clamp(max=2)[:, None])[:, 0][keep].mean()
    torch.testing.assert_close(loss, ref)
    loss.backward()
    assert model.backbone.patch_embed.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(type="CascadeEncoderDecoder"), ValueError, "model type 'CascadeEncoderDecoder'"),
        (dict(backbone=dict(type="ResNetV1c", depth=50)), ValueError, "backbone type 'ResNetV1c'"),
        (dict(backbone=dict(type="LITv2", embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], widht=3)),
         TypeError, r"unknown argument\(s\) \['widht'\]"),
        (dict(neck=dict(type="FPN", in_channels=[8, 16, 32, 32], out_channels=16, num_outs=4)), ValueError,
         r"neck in_channels \[8, 16, 32, 32\] do not match the backbone's output channels \[8, 16, 32, 64\]"),
        (dict(neck=dict(type="FPN", in_channels=[8, 16, 32, 64], out_channels=16, num_outs=4,
                        norm_cfg=dict(type="BN"))), ValueError, "FPN norm_cfg"),
        (dict(neck=dict(type="PAFPN", in_channels=[8]), ), ValueError, "neck type 'PAFPN'"),
        (dict(decode_head=dict(type="UPerHead")), ValueError, "decode_head type 'UPerHead'"),
        (dict(auxiliary_head=dict(type="FCNHead")), ValueError, "auxiliary_head"),
        (dict(test_cfg=dict(mode="slide", crop_size=64)), ValueError, "crop_size and stride"),
        (dict(test_cfg=dict(mode="tiles")), ValueError, "mode must be 'whole' or 'slide'"),
        (dict(data_preprocessor=dict()), ValueError, r"unknown keys \['data_preprocessor'\]"),
    ],
)
def test_bad_configs_raise_errors_naming_the_problem(change, error, match):
    cfg = tiny_cfg()
    cfg.update(change)
    with pytest.raises(error, match=match):
        build_segmentor(cfg)


@pytest.mark.parametrize(
    "head, match",
    [
        (dict(in_channels=[16] * 3), "one entry per in_channels"),
        (dict(channels=0), "FPNHead channels=0: expected a positive integer"),
        (dict(norm_cfg=dict(type="LN")), "norm_cfg type 'LN'"),
        (dict(feature_strides=[4, 8, 12, 32]), "powers of two"),
        (dict(in_channels=[16, 16, 16, 8]), "level 3 reads neck output 3 with 8 channels"),
        (dict(loss_decode=dict(type="FocalLoss")), "loss_decode type 'FocalLoss'"),
        (dict(dropout_ratio=1.5), r"FPNHead dropout_ratio=1\.5: expected a fraction in \[0, 1\)"),
    ],
)
def test_bad_head_arguments(head, match):
    with pytest.raises(ValueError, match=match):
        build_segmentor(tiny_cfg(**head))


def test_bad_inputs():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"in_chans=3"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(TypeError, match="floating point"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="crop_size must be a positive int"):
        model.inference(torch.randn(1, 3, 32, 32), mode="slide", crop_size=0, stride=8)
    with pytest.raises(ValueError, match="needs crop_size and stride"):
        model.predict(torch.randn(1, 3, 32, 32), mode="slide")
    with pytest.raises(ValueError, match=r"stride \(17, 40\) must not exceed crop_size \(64, 33\)"):
        model.inference(torch.randn(1, 3, 40, 90), mode="slide", crop_size=(64, 33), stride=(17, 40))


def test_config_is_not_mutated_and_gn_and_no_norm_heads_build():
    cfg = tiny_cfg(norm_cfg=dict(type="GN", num_groups=2, requires_grad=True))
    frozen = copy.deepcopy(cfg)
    model = build_segmentor(cfg)
    assert cfg == frozen and isinstance(model, EncoderDecoder)
    assert "decode_head.scale_heads.0.0.gn.weight" in model.state_dict()
    plain = build_segmentor(tiny_cfg(norm_cfg=None))
    assert "decode_head.scale_heads.0.0.conv.bias" in plain.state_dict()  # mmcv: bias only without norm
