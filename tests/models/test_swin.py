"""Swin Transformer: the official fixture, any input size against a plain-math reference, the model API."""

import copy
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import hilovit
from hilovit import CheckpointError, SwinTransformer, create_model, load_checkpoint
from hilovit.flops import count_flops
from references import region_ids

FIXTURE = "swin_e24_img64_w4"
SMALL = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4, num_classes=7)


def fixture_model(fixtures_dir):
    meta = json.loads((fixtures_dir / f"{FIXTURE}.json").read_text())
    kwargs = {k: v for k, v in meta["constructor"].items() if k != "fused_window_process"}
    model = SwinTransformer(**kwargs).eval()
    load_checkpoint(model, fixtures_dir / f"{FIXTURE}.state_dict.safetensors")
    return model, load_file(str(fixtures_dir / f"{FIXTURE}.io.safetensors")), meta


def small_model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = SwinTransformer(**{**dict(img_size=64, **SMALL), **overrides})
    with torch.no_grad():  # a visible bias, so that masks and positions matter
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0, 0.5)
    return model


# --------------------------------------------------------------------------- plain-math reference


def ref_block(blk, x):
    """The official detection block on (B, H, W, C): pad after norm1, roll, windows, explicit softmax."""
    B, H, W, C = x.shape
    ws, shift, nh = blk.window_size, blk.shift_size, blk.num_heads
    attn = blk.attn
    h = F.layer_norm(x, (C,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
    Hp, Wp = ws * math.ceil(H / ws), ws * math.ceil(W / ws)
    hp = torch.zeros(B, Hp, Wp, C, dtype=x.dtype)
    hp[:, :H, :W] = h
    if shift:
        hp = torch.roll(hp, (-shift, -shift), (1, 2))
    gh, gw, N = Hp // ws, Wp // ws, ws * ws
    win = hp.view(B, gh, ws, gw, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, gh * gw, N, C)
    qkv = F.linear(win, attn.qkv.weight, attn.qkv.bias).view(B, gh * gw, N, 3, nh, C // nh)
    q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)  # (B, nW, nh, N, d)
    coords = [(a, b) for a in range(ws) for b in range(ws)]
    offsets = torch.tensor([[(qa - ka + ws - 1) * (2 * ws - 1) + qb - kb + ws - 1 for ka, kb in coords]
                            for qa, qb in coords])
    a = (q * attn.scale) @ k.transpose(-2, -1) + attn.relative_position_bias_table[offsets].permute(2, 0, 1)
    if shift:
        r = region_ids(Hp, Wp, ws, shift).view(gh, ws, gw, ws).permute(0, 2, 1, 3).reshape(gh * gw, N)
        a = a + torch.where(r[:, None, :, None] == r[:, None, None, :], 0.0, -100.0).to(a.dtype)
    o = (a.softmax(-1) @ v).permute(0, 1, 3, 2, 4).reshape(B, gh, gw, ws, ws, C)
    out = F.linear(o.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C), attn.proj.weight, attn.proj.bias)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    x = x + out[:, :H, :W]
    h = F.layer_norm(x, (C,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
    return x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(h)))


def ref_merge(m, x):
    B, H, W, C = x.shape
    xp = torch.zeros(B, H + H % 2, W + W % 2, C, dtype=x.dtype)
    xp[:, :H, :W] = x
    x = torch.cat([xp[:, 0::2, 0::2], xp[:, 1::2, 0::2], xp[:, 0::2, 1::2], xp[:, 1::2, 1::2]], -1)
    return F.linear(F.layer_norm(x, (4 * C,), m.norm.weight, m.norm.bias, m.norm.eps), m.reduction.weight)


def ref_swin(model, img):
    """Logits and stage maps of the official detection-style Swin with explicit padding, float64."""
    model = copy.deepcopy(model).double().eval()
    img = img.double()
    p = model.patch_size
    H, W = img.shape[2:]
    img = F.pad(img, (0, (p - W % p) % p, 0, (p - H % p) % p))
    pe = model.patch_embed
    x = F.conv2d(img, pe.proj.weight, pe.proj.bias, stride=p).permute(0, 2, 3, 1)
    if pe.norm is not None:
        x = pe.norm(x)
    if model.ape:  # the detection backbone's bicubic resize of the embedding to the map
        h0, w0 = model.patches_resolution
        pos = model.absolute_pos_embed.reshape(1, h0, w0, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=x.shape[1:3], mode="bicubic", align_corners=False)
        x = x + pos.permute(0, 2, 3, 1)
    feats = []
    with torch.no_grad():
        for layer in model.layers:
            for blk in layer.blocks:
                x = ref_block(blk, x)
            feats.append(x.permute(0, 3, 1, 2))
            if layer.downsample is not None:
                x = ref_merge(layer.downsample, x)
        logits = model.head(model.norm(x).mean(dim=(1, 2)))
    return logits, feats


# --------------------------------------------------------------------------- official fixture


def test_fixture_logits_features_and_stages(fixtures_dir):
    model, io, meta = fixture_model(fixtures_dir)
    assert sum(p.numel() for p in model.parameters()) == meta["param_count"]
    assert len(model.state_dict()) == meta["state_dict_num_keys"]
    x = io["input"]
    with torch.no_grad():
        feats = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), io["features"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model(x), io["logits"], atol=1e-4, rtol=1e-4)
        stages = model.forward_intermediates(x, intermediates_only=True)
        for i, s in enumerate(stages):
            torch.testing.assert_close(s.flatten(2).transpose(1, 2), io[f"stage{i}.blocks_out"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.patch_embed(x).flatten(1, 2), io["patch_embed_out"], atol=1e-5, rtol=1e-5)
        with torch.enable_grad():  # the autograd path (no chunked inference) gives the same
            torch.testing.assert_close(model(x), io["logits"], atol=1e-4, rtol=1e-4)
        logits64 = copy.deepcopy(model).double()(x.double())
    torch.testing.assert_close(logits64, io["logits_float64"], atol=1e-10, rtol=1e-10)
    blocks = [b for layer in model.layers for b in layer.blocks]
    got = [(b.window_size, b.shift_size, b.attn_mask is not None) for b in blocks]
    want = [(k["effective_window_size"], k["effective_shift_size"], k["has_attn_mask"])
            for s in meta["stages"] for k in s["blocks"]]
    assert got == want


def test_fixture_loads_from_pth_and_bare_state_dict(fixtures_dir, tmp_path):
    sd = load_file(str(fixtures_dir / f"{FIXTURE}.state_dict.safetensors"))
    io = load_file(str(fixtures_dir / f"{FIXTURE}.io.safetensors"))
    model, _, _ = fixture_model(fixtures_dir)
    torch.save({"model": sd, "epoch": 3}, tmp_path / "ckpt.pth")
    for source in (tmp_path / "ckpt.pth", sd):
        fresh = SwinTransformer(img_size=64, num_classes=10, embed_dim=24, depths=(2, 2, 2, 2),
                                num_heads=(1, 2, 4, 8), window_size=4).eval()
        load_checkpoint(fresh, source)
        with torch.no_grad():
            torch.testing.assert_close(fresh(io["input"]), io["logits"], atol=1e-4, rtol=1e-4)


def test_timm_layout_loads(fixtures_dir):
    sd = load_file(str(fixtures_dir / f"{FIXTURE}.state_dict.safetensors"))
    io = load_file(str(fixtures_dir / f"{FIXTURE}.io.safetensors"))
    timm_sd = {}
    for k, v in sd.items():
        if k.endswith(("attn_mask", "relative_position_index")):
            continue  # non-persistent in timm
        if k.startswith("layers.") and ".downsample." in k:
            stage = int(k.split(".")[1])
            k = k.replace(f"layers.{stage}.downsample.", f"layers.{stage + 1}.downsample.")
        timm_sd[k.replace("head.", "head.fc.")] = v
    model = SwinTransformer(img_size=64, num_classes=10, embed_dim=24, depths=(2, 2, 2, 2),
                            num_heads=(1, 2, 4, 8), window_size=4).eval()
    load_checkpoint(model, timm_sd)
    with torch.no_grad():
        torch.testing.assert_close(model(io["input"]), io["logits"], atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- any input size


@pytest.mark.parametrize("size", [(100, 150), (64, 64), (37, 45), (70, 29)])
def test_any_size_matches_explicitly_padded_reference(size):
    model = small_model(ape=True).eval()
    for layer in model.layers:  # several pieces of windows per attention in the inference path
        for blk in layer.blocks:
            blk.attn.chunk_rows = 3 * blk.attn.window_tokens
    img = torch.randn(2, 3, *size)
    ref_logits, ref_feats = ref_swin(model, img)
    with torch.no_grad():
        logits = model(img)  # chunked inference path
        feats = model.forward_intermediates(img, intermediates_only=True)
    with torch.enable_grad():
        logits_ag = model(img)  # autograd path
    torch.testing.assert_close(logits.double(), ref_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits_ag.double(), ref_logits, atol=1e-4, rtol=1e-4)
    for f, r in zip(feats, ref_feats):
        assert f.shape == r.shape
        torch.testing.assert_close(f.double(), r, atol=1e-4, rtol=1e-4)


def test_stage_maps_strides_and_feature_info():
    model = small_model().eval()
    backbone = small_model(features_only=True).eval()
    backbone.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(("head.", "norm."))})
    img = torch.randn(1, 3, 100, 150)
    with torch.no_grad():
        maps = backbone(img)
        final, inter = model.forward_intermediates(img)
    assert [tuple(m.shape[1:]) for m in maps] == [(16, 25, 38), (32, 13, 19), (64, 7, 10), (128, 4, 5)]
    assert [(f["num_chs"], f["reduction"]) for f in backbone.feature_info] == [(16, 4), (32, 8), (64, 16), (128, 32)]
    for a, b in zip(maps, inter):
        torch.testing.assert_close(a, b)
    assert final.shape == (1, 4, 5, 128)
    three = small_model(features_only=True, out_indices=(1, 2, 3))
    assert [f["reduction"] for f in three.feature_info] == [8, 16, 32]
    assert "head.weight" not in backbone.state_dict() and "norm.weight" not in backbone.state_dict()


def _held(module, kind):
    from hilovit.layers import fast

    return {k: v for k, v in fast.cache_entries(module).items() if k[0] == kind}


def test_masks_and_plans_are_cached_per_size():
    model = small_model().eval()
    attn = model.layers[0].blocks[1].attn
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
        plan, masks = _held(attn, "plan"), _held(attn, "masks")
        model(torch.randn(1, 3, 64, 64))
        assert _held(attn, "plan") == plan
        assert all(_held(attn, "masks")[k] is v for k, v in masks.items())
        model(torch.randn(1, 3, 40, 72))
        assert len(_held(attn, "plan")) == 2


def test_float32_and_bfloat16_inference_keep_their_own_cached_weights_and_masks():
    """Alternating dtypes (as a benchmark or a precision comparison does) must not rebuild the casts."""
    model = small_model().eval()
    blk = model.layers[0].blocks[1]
    img = torch.randn(1, 3, 64, 64)

    def held():  # the qkv weight per (dtype, packed, ...) slot of the fast path's cache, the masks
        return {k[1:]: v[0] for k, v in _held(blk.attn.qkv, "weights").items()}, _held(blk.attn, "masks")

    with torch.no_grad():
        model(img)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(img)
        weights, masks = held()
        assert {k[0] for k in weights} == {torch.float32, torch.bfloat16}
        assert {k[3] for k in masks} == {torch.float32, torch.bfloat16}
        model(img)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(img)
        again = held()
    assert all(again[0][k] is v for k, v in weights.items()) and all(again[1][k] is v for k, v in masks.items())
    with torch.no_grad():  # a changed parameter is still seen
        blk.attn.qkv.weight.mul_(0.5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(img)
    low = next(k for k in weights if k[0] == torch.bfloat16)
    assert held()[0][low] is not weights[low]


@pytest.mark.parametrize("H,W,ws,shift", [(14, 14, 7, 3), (10, 13, 4, 2), (5, 5, 7, 3), (8, 8, 8, 0), (9, 6, 3, 0)])
def test_window_plan_is_a_permutation_with_padding(H, W, ws, shift):
    from hilovit import WindowAttention

    attn = WindowAttention(8, 2, ws, shift)
    plan = attn.window_plan(3, H, W, torch.device("cpu"))
    if plan.src is None:
        assert plan.groups == ((0, 3 * H * W, 0),)
        return
    T = 3 * plan.Hp * plan.Wp
    assert plan.src.shape == (T,) and plan.groups[-1][1] == T
    torch.testing.assert_close(plan.src[plan.inv], torch.arange(3 * H * W))  # inv undoes src on real tokens
    if plan.keep is not None:
        assert int(plan.keep.sum()) == 3 * H * W
        assert plan.keep[plan.inv].min() == 1


def test_attn_mask_buffer_is_the_official_mask_and_the_one_used():
    model = small_model().eval()
    blk = model.layers[0].blocks[1]  # 16x16 map, window 4, shift 2
    ws, s = blk.window_size, blk.shift_size
    region = region_ids(16, 16, ws, s)
    wins = region.view(4, ws, 4, ws).permute(0, 2, 1, 3).reshape(16, ws * ws)
    official = torch.where(wins[:, None, :] == wins[:, :, None], 0.0, -100.0)
    torch.testing.assert_close(blk.attn_mask, official)
    # each window's mask in the attention's folded masks is the buffer's mask for that window
    types = blk.attn._window_types(4, 4)
    folded = blk.attn.type_masks(16, 16, torch.device("cpu"))
    for w in range(16):
        torch.testing.assert_close(folded[types[w]], blk.attn_mask[w])


# --------------------------------------------------------------------------- training


def test_train_forward_backward_and_gradient_checkpointing():
    model = small_model(drop_path_rate=0.2, drop_rate=0.1, attn_drop_rate=0.1).train()
    img = torch.randn(2, 3, 44, 36)
    torch.manual_seed(5)
    out = model(img)
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["layers.0.blocks.1.attn.relative_position_bias_table"].abs().sum() > 0
    model.zero_grad()
    model.set_grad_checkpointing(True)
    torch.manual_seed(5)
    out_ckpt = model(img)
    out_ckpt.square().mean().backward()
    torch.testing.assert_close(out_ckpt, out)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], atol=1e-6, rtol=1e-5)


def test_bfloat16_autocast_is_close_and_caches_do_not_travel():
    """bfloat16 autocast against the float64 explicitly padded reference (:func:`ref_swin`): about 8 bfloat16
    roundings in series per block's branch, added up along the residual stream over 8 blocks, 3 mergings and
    the norms: twice one branch's budget, 16 * BF16_EPS (6%) of the scale, bounds the pooled features, and
    the logits within the same share of the size of the classifier's terms (:func:`linear_term_scale`)."""
    from references import BF16_EPS, linear_term_scale, randomize

    model = randomize(small_model()).eval()  # weights of unit gain: the attention moves the logits
    img = torch.randn(2, 3, 44, 60, generator=torch.Generator().manual_seed(0))  # padded windows too
    ref, ref_maps = ref_swin(model, img)
    n = model.norm
    pooled64 = F.layer_norm(ref_maps[-1].permute(0, 2, 3, 1), n.normalized_shape, n.weight.detach().double(),
                            n.bias.detach().double(), n.eps).mean(dim=(1, 2))
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(img)
            pooled = model.forward_head(model.forward_features(img), pre_logits=True)
        twin = copy.deepcopy(model)  # after inference the blocks hold casts and plans: not copied
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(twin(img), low)
    assert low.dtype == torch.bfloat16 and low.shape == ref.shape
    err = float((pooled.double() - pooled64).abs().max() / pooled64.abs().max())
    assert err < 16 * BF16_EPS, err
    err = float((low.double() - ref).abs().max() / linear_term_scale(model.head, pooled64))
    assert err < 16 * BF16_EPS, err


# --------------------------------------------------------------------------- FLOPs


def test_flops_match_the_counted_matrix_products():
    model = small_model().eval()
    for size in [(64, 64), (64, 128)]:
        breakdown = model.flops_breakdown(size)
        counted = count_flops(model, torch.randn(1, 3, *size))
        assert counted == model.flops(size) - breakdown["norms"]
    # with padding the analytic count is the official one at the padded size; what runs projects
    # only the real tokens in the attention's proj (a few products fewer)
    counted = count_flops(model, torch.randn(1, 3, 100, 150))
    analytic = model.flops((100, 150)) - model.flops_breakdown((100, 150))["norms"]
    assert 0.9 * analytic < counted < analytic


def test_swin_t_flops_and_counted_flops():
    with torch.device("meta"):
        meta = create_model("swin_t")
    assert abs(meta.flops() - 4_494_405_120) / 4_494_405_120 < 0.005
    assert meta.flops(224) == meta.flops()
    model = create_model("swin_t", num_classes=10, embed_dim=24, num_heads=(1, 2, 4, 8)).eval()
    counted = count_flops(model, torch.randn(1, 3, 224, 224))
    assert counted == model.flops() - model.flops_breakdown()["norms"]


# --------------------------------------------------------------------------- API and errors


def test_model_api():
    model = small_model()
    assert model.no_weight_decay() == {"absolute_pos_embed"}
    assert model.no_weight_decay_keywords() == {"relative_position_bias_table"}
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 64, 64) and cfg["classifier"] == "head" and len(cfg["mean"]) == 3
    model.reset_classifier(3)
    assert model.head.out_features == 3 and model.num_classes == 3
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), torch.nn.Identity)
    x = torch.randn(2, 3, 64, 64)
    model.eval()  # no drop path: each call computes the same features
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 2, 2, 128)  # unpooled, channels last
        pooled = feats.mean(dim=(1, 2))
        torch.testing.assert_close(model(x), pooled)  # without a classifier: the pooled features
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), pooled)
        model.reset_classifier(5)
        head = model.get_classifier()
        assert head is model.head and (head.in_features, head.out_features) == (128, 5)
        torch.testing.assert_close(model(x), pooled @ head.weight.T + head.bias)
    assert type(create_model("swin_nano")) is hilovit.SwinTransformer  # the public class is what the registry builds


def test_registry_configs():
    names = hilovit.list_models("swin*")
    assert {"swin_t", "swin_s", "swin_b", "swin_l", "swin_b_384", "swin_l_384", "swin_nano"} <= set(names)
    with torch.device("meta"):
        t = create_model("swin_tiny_patch4_window7_224")
        b384 = create_model("swin_base_patch4_window12_384")
    assert t.pretrained_cfg["url"].endswith("swin_tiny_patch4_window7_224.pth")
    assert b384.pretrained_cfg["input_size"] == (3, 384, 384) and b384.window_size == 12
    assert sum(p.numel() for p in t.parameters()) == 28_288_354


def test_swin_nano_for_fashion_mnist():
    model = create_model("swin_nano", in_chans=1, num_classes=10)
    n = sum(p.numel() for p in model.parameters())
    assert n == 1_270_132
    assert model.flops() < 60e6
    out = model(torch.randn(4, 1, 28, 28))
    out.logsumexp(-1).mean().backward()
    assert out.shape == (4, 10)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    "img,match",
    [
        (torch.randn(1, 1, 64, 64), r"1 channels .* in_chans=3"),
        (torch.randn(1, 3, 3, 64), r"3x64 pixels is smaller than patch_size=4"),
        (torch.randn(3, 64, 64), r"\(B, 3, H, W\)"),
    ],
)
def test_bad_inputs_raise_clear_errors(img, match):
    with pytest.raises(ValueError, match=match):
        small_model()(img)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_heads=(1, 2, 2)), "one entry per stage"),
        (dict(num_heads=(3, 2, 2, 4)), r"num_heads\[0\]=3"),
        (dict(window_size=0), "window_size"),
        (dict(in_chans=0), "in_chans"),
        (dict(img_size=2), "smaller than patch_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SwinTransformer(**{**dict(img_size=64, **SMALL), **kwargs})


# --------------------------------------------------------------------------- checkpoints


def test_wrong_checkpoint_lists_the_keys():
    model = small_model()
    sd = model.state_dict()
    sd.pop("layers.1.blocks.0.mlp.fc1.weight")
    sd["layers.9.blocks.0.foo"] = torch.zeros(1)
    sd["layers.0.blocks.0.attn.qkv.weight"] = torch.zeros(5, 16)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(small_model(), sd)
    msg = str(e.value)
    assert "layers.1.blocks.0.mlp.fc1.weight" in msg and "layers.9.blocks.0.foo" in msg
    assert "layers.0.blocks.0.attn.qkv.weight" in msg


def test_head_of_another_size_is_reinitialised_with_a_warning(tmp_path):
    src = small_model(num_classes=21)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    model = small_model(seed=1)
    head = model.head.weight.clone()
    with pytest.warns(UserWarning, match="head.weight"):
        res = load_checkpoint(model, path)
    assert set(res.reinitialised) == {"head.weight", "head.bias"}
    torch.testing.assert_close(model.head.weight, head)
    torch.testing.assert_close(model.layers[2].blocks[0].attn.qkv.weight, src.layers[2].blocks[0].attn.qkv.weight)
    with pytest.warns(UserWarning, match="head.weight"):
        model2 = create_model("swin_t", pretrained=str(path), img_size=64, **{**SMALL, "num_classes": 5})
    torch.testing.assert_close(model2.norm.weight, src.norm.weight)


def test_other_window_size_resizes_the_bias_table_bicubically():
    src = small_model()  # window 4: tables 7x7
    dst = small_model(window_size=3)  # tables 5x5
    load_checkpoint(dst, src.state_dict())
    t = src.layers[0].blocks[0].attn.relative_position_bias_table  # (49, heads)
    want = F.interpolate(t.t().reshape(1, -1, 7, 7), size=(5, 5), mode="bicubic", align_corners=False)
    torch.testing.assert_close(dst.layers[0].blocks[0].attn.relative_position_bias_table, want.reshape(-1, 25).t())
    assert dst.layers[0].blocks[0].attn.relative_position_index.max() == 24


def test_derived_buffers_are_verified_or_rebuilt():
    model = small_model()
    sd = model.state_dict()
    bad = dict(sd)
    bad["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros_like(
        sd["layers.0.blocks.0.attn.relative_position_index"])
    with pytest.raises(CheckpointError, match="relative_position_index"):
        load_checkpoint(small_model(), bad)
    odd = dict(sd)
    odd["layers.0.blocks.1.attn_mask"] = torch.zeros_like(sd["layers.0.blocks.1.attn_mask"])
    with pytest.warns(UserWarning, match="attn_mask"):
        load_checkpoint(small_model(), odd)
    other = small_model(img_size=96)  # masks of another size: rebuilt silently
    missing = {k: v for k, v in sd.items() if not k.endswith(("attn_mask", "relative_position_index"))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(other, sd)
        load_checkpoint(small_model(), missing)
    assert other.layers[0].blocks[1].attn_mask.shape == (36, 16, 16)
