"""Tests for the patch embedding / token merging layers and the feed-forward blocks.

References are written here in the official (B, N, C) style with explicit NCHW tensors, padding
and ``grid_sample`` (``align_corners=True``, zeros), run in float64.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from hilovit.layers.embed import DeformableTokenMerging, PatchEmbed
from hilovit.layers.mlp import ConvFFN, Mlp
from references import BF16_EPS, ref_conv_ffn, ref_dtm
from references import randomize as _randomize


# ---------------------------------------------------------------------------------------- ConvFFN
def test_conv_ffn_matches_official_math_non_square():
    ffn = _randomize(ConvFFN(8, 32)).double().eval()
    x = torch.randn(2, 5, 7, 8, dtype=torch.float64)
    out = ffn(x)
    ref = ref_conv_ffn(ffn, x.flatten(1, 2), 5, 7).reshape(2, 5, 7, 8)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    # official call form (B, N, C) with H, W
    torch.testing.assert_close(ffn(x.flatten(1, 2), 5, 7), ref.flatten(1, 2), rtol=0, atol=1e-12)


def test_conv_ffn_keys_channels_last_and_grad():
    ffn = ConvFFN(16, 64)
    assert set(ffn.state_dict()) == {
        "fc1.weight", "fc1.bias", "dwconv.dwconv.weight", "dwconv.dwconv.bias", "fc2.weight", "fc2.bias",
    }
    assert ffn.dwconv.dwconv.weight.shape == (64, 1, 3, 3)
    x = torch.randn(2, 6, 4, 16, requires_grad=True)
    y = ffn(x)
    assert y.shape == x.shape and y.is_contiguous()  # the conv runs on a channels_last view: no copies
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in ffn.parameters())
    assert ffn.flops(6, 4) == 24 * (16 * 64 * 2 + 64 * 9)


def test_conv_ffn_fused_inference_path_matches_plain():
    from hilovit.layers import fast

    torch.manual_seed(0)
    ffn = _randomize(ConvFFN(16, 64)).eval()
    x, r = torch.randn(2, 9, 7, 16), torch.randn(2, 9, 7, 16)
    plain = ffn(x, shortcut=r)  # autograd on: the plain modules
    with torch.no_grad():
        assert fast.inference_dtype(x, ffn) == torch.float32
        fused = ffn(x, shortcut=r)
        torch.testing.assert_close(ffn(x), plain - r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rb = r.bfloat16()  # the residual stream is bfloat16 under autocast
        ref, ref32 = ffn(x, shortcut=rb), ffn(x, shortcut=r)
        with torch.no_grad():
            out, out32 = ffn(x, shortcut=rb), ffn(x, shortcut=r)
            assert fast.inference_dtype(x, ffn) == torch.bfloat16
    assert out.dtype == ref.dtype == torch.bfloat16 and out32.dtype == ref32.dtype == torch.float32
    torch.testing.assert_close(out.float(), ref.float(), rtol=0.05, atol=0.05)
    # and both against the float64 official DWMlp (tests/references.py) plus the residual: two linear layers
    # and a depth-wise convolution, about 12 bfloat16 roundings in series, within 12 * BF16_EPS of the scale
    import copy

    want = ref_conv_ffn(copy.deepcopy(ffn).double(), x.double().flatten(1, 2), 9, 7).reshape(x.shape)
    want = want.detach() + rb.double()
    for got in (out, ref):
        assert (got.detach().double() - want).abs().max() < 12 * BF16_EPS * want.abs().max()
    # inside a FLOP counter the plain ops run (and are counted)
    from hilovit.flops import count_flops

    assert count_flops(ffn, x[:1]) == ffn.flops(9, 7)
    # dropout active in training: plain path even without autograd
    ffn.drop.p = 0.5
    ffn.train()
    with torch.no_grad():
        assert not torch.allclose(ffn(x), ffn.eval()(x))


def test_conv_ffn_bad_input():
    ffn = ConvFFN(8, 16)
    with pytest.raises(ValueError, match="channels"):
        ffn(torch.randn(1, 4, 4, 9))
    with pytest.raises(ValueError, match="pass H and W"):
        ffn(torch.randn(1, 16, 8))
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        ffn(torch.randn(16, 8))


def test_mlp_shapes():
    mlp = Mlp(8, 24, 6)
    assert mlp(torch.randn(2, 3, 5, 8)).shape == (2, 3, 5, 6)


# ---------------------------------------------------------------------------------------- PatchEmbed
def test_patch_embed_pads_like_explicit_zero_padding():
    pe = PatchEmbed(4, 3, 8).eval()
    x = torch.randn(2, 3, 13, 10)
    ref = pe(F.pad(x, (0, 2, 0, 3)))
    out = pe(x)
    assert out.shape == (2, 4, 3, 8)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="in_chans|3, H, W"):
        pe(torch.randn(2, 1, 8, 8))


def test_patch_embed_inference_path_matches_plain_modules_and_follows_updates():
    """Inference converts the image to channels-last (and bfloat16 under autocast) before the
    convolution: float32 must equal the plain conv + norm up to float32 rounding, bfloat16 must stay within
    bfloat16 rounding of a float64 reference, and both must see weight updates."""
    torch.manual_seed(0)
    pe = PatchEmbed(4, 3, 16).eval()
    with torch.no_grad():
        pe.norm.weight.uniform_(0.5, 1.5)
        pe.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 18, 13)

    def plain(m, img):
        img = F.pad(img, (0, 3, 0, 2))
        return m.norm(m.proj(img).permute(0, 2, 3, 1))

    def plain64(m, img):
        """The same in float64 on ``m``'s weights (``m`` untouched)."""
        img = F.pad(img.double(), (0, 3, 0, 2))
        y = F.conv2d(img, m.proj.weight.detach().double(), m.proj.bias.detach().double(), stride=4)
        n = m.norm
        return F.layer_norm(y.permute(0, 2, 3, 1), n.normalized_shape, n.weight.detach().double(),
                            n.bias.detach().double(), n.eps)

    with torch.no_grad():
        fp32 = pe(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = pe(x)
    ref64 = plain64(pe, x)
    # the channels-last convolution sums in another order: float32 rounding apart
    torch.testing.assert_close(fp32, plain(pe, x).detach(), rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(fp32.double(), ref64, rtol=1e-5, atol=2e-6)
    assert fp32.is_contiguous() and fp32.shape == (2, 5, 4, 16)
    # a convolution then a LayerNorm: about 8 bfloat16 roundings in series (input, weights, products, output,
    # the norm's input and output), each within BF16_EPS: within 8 * BF16_EPS of the output's scale
    assert low.dtype == torch.bfloat16 and (low.double() - ref64).abs().max() < 8 * BF16_EPS * ref64.abs().max()
    with torch.no_grad():
        pe.proj.weight.mul_(-1.0)  # in place: the cached bfloat16 weight must be rebuilt
        with torch.autocast("cpu", dtype=torch.bfloat16):
            flipped = pe(x)
    ref64 = plain64(pe, x)
    assert (flipped.double() - ref64).abs().max() < 8 * BF16_EPS * ref64.abs().max()


# ---------------------------------------------------------------------------------------- DTM
@pytest.mark.parametrize("H,W", [(8, 8), (7, 9), (5, 2), (2, 3)])
def test_dtm_matches_reference_any_size(H, W):
    dtm = _randomize(DeformableTokenMerging(6), offset_std=2.0).double().eval()
    x = torch.randn(2, H, W, 6, dtype=torch.float64)
    out, offset = dtm(x, return_offset=True)
    ref, h, w = ref_dtm(dtm, x.flatten(1, 2), H, W)
    assert out.shape == (2, H // 2, W // 2, 12) == (2, h, w, 12)
    assert offset.shape == (2, 8, H // 2, W // 2) and offset.abs().max() > 0.5  # really deformed
    torch.testing.assert_close(out.flatten(1, 2), ref, rtol=0, atol=1e-10)


def test_dtm_eval_folding_equals_batchnorm_and_train_mode_uses_batch_stats():
    dtm = _randomize(DeformableTokenMerging(4)).eval()
    x = torch.randn(3, 6, 8, 4)
    folded = dtm(x)
    dtm.norm_layer.train()  # unfolded path, batch statistics
    dtm.norm_layer.track_running_stats = True
    with torch.no_grad():
        before = dtm.norm_layer.running_mean.clone()
        dtm(x)
        assert not torch.equal(before, dtm.norm_layer.running_mean)  # running stats updated in training
    dtm.eval()
    # eval through the module BatchNorm (no folding) for comparison
    bn = dtm.norm_layer
    from hilovit.layers.deform_conv import deform_conv2d

    xc = x.permute(0, 3, 1, 2)
    y = deform_conv2d(xc, dtm.dconv.conv_offset(xc), dtm.dconv.weight, dtm.dconv.bias, stride=2)
    ref = F.gelu(bn(y)).permute(0, 2, 3, 1)
    torch.testing.assert_close(dtm(x), ref, rtol=1e-5, atol=1e-5)
    assert folded.shape == ref.shape


def test_dtm_zero_offsets_is_strided_conv_and_keys():
    dtm = DeformableTokenMerging(4).eval()  # fresh: zero offset predictor
    x = torch.randn(2, 6, 6, 4)
    bn = dtm.norm_layer
    ref = F.gelu(bn(F.conv2d(x.permute(0, 3, 1, 2), dtm.dconv.weight, dtm.dconv.bias, stride=2)))
    torch.testing.assert_close(dtm(x), ref.permute(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
    assert set(dtm.state_dict()) == {
        "dconv.weight", "dconv.bias", "dconv.conv_offset.weight", "dconv.conv_offset.bias", "norm_layer.weight",
        "norm_layer.bias", "norm_layer.running_mean", "norm_layer.running_var", "norm_layer.num_batches_tracked",
    }
    # flops: offset conv (8 channels) + deformable conv; official count has 12 offset channels
    assert dtm.flops(6, 6) == 9 * 4 * 4 * (8 + 8)
    assert dtm.flops(6, 6, official=True) == 9 * (16 * 12 + 12) + 9 * (16 * 8 + 8) + 9 * 8


def _ref_dtm64(dtm, x):
    """The official DTM (tests/references.py) on a float64 copy of ``dtm``: ``(B, H, W, C) -> (B, H/2, W/2, 2C)``."""
    import copy

    B, H, W, _ = x.shape
    out, h, w = ref_dtm(copy.deepcopy(dtm).double(), x.double().flatten(1, 2), H, W)
    return out.reshape(B, h, w, -1)


def test_dtm_bfloat16_inference_path_matches_float64_reference_and_follows_updates():
    """bfloat16 inference runs bfloat16 samples and one fused product (GELU inside) with a cached
    folded weight; it must agree with the float64 reference and see BatchNorm statistic updates. The
    deformable convolution's budget (about 8 roundings, and its sampling positions rounded too: 12 *
    BF16_EPS of the scale) covers the folded norm and the GELU, which add no rounding of their own."""
    from hilovit.layers import embed as embed_mod

    dtm = _randomize(DeformableTokenMerging(16), offset_std=2.0).eval()
    x = torch.randn(2, 9, 12, 16, generator=torch.Generator().manual_seed(0))
    ref64 = _ref_dtm64(dtm, x)
    calls = []
    orig = embed_mod.deform_columns
    embed_mod.deform_columns = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            low = dtm(x)
            low_b = dtm(x.bfloat16())
            dtm.norm_layer.running_mean.add_(0.5)  # in place: the folded weight must be rebuilt
            shifted = dtm(x)
    finally:
        embed_mod.deform_columns = orig
    assert len(calls) == 3 and low.dtype == torch.bfloat16 and low.shape == ref64.shape
    scale = ref64.abs().max()
    assert (low.double() - ref64).abs().max() < 12 * BF16_EPS * scale
    assert (low_b.double() - ref64).abs().max() < 12 * BF16_EPS * scale
    ref_shifted = _ref_dtm64(dtm, x)  # the new running mean
    assert (shifted.double() - ref_shifted).abs().max() < 12 * BF16_EPS * scale
    assert (shifted.float() - low.float()).abs().max() > 0.05 * scale


def test_dtm_gradients_reach_offsets():
    dtm = _randomize(DeformableTokenMerging(4)).train()
    x = torch.randn(2, 5, 6, 4, requires_grad=True)
    dtm(x).pow(2).sum().backward()
    assert dtm.dconv.conv_offset.weight.grad.abs().sum() > 0
    assert x.grad is not None


def test_dtm_bad_input():
    dtm = DeformableTokenMerging(4)
    with pytest.raises(ValueError, match="at least 2x2"):
        dtm(torch.randn(1, 1, 5, 4))
    with pytest.raises(ValueError, match=r"\(B, H, W, 4\)"):
        dtm(torch.randn(1, 4, 4, 5))


def test_dtm_matches_fixture_stage(fixtures_dir):
    from safetensors.torch import load_file

    name = "litv2_e32_img64_a0.9_ws0021"
    sd = load_file(str(fixtures_dir / f"{name}.state_dict.safetensors"))
    io = load_file(str(fixtures_dir / f"{name}.io.safetensors"))
    meta = json.loads((fixtures_dir / f"{name}.json").read_text())
    for st in meta["stages"][:3]:
        i, dim, (H, W) = st["stage"], st["dim"], st["input_resolution"]
        dtm = DeformableTokenMerging(dim).eval()
        prefix = f"layers.{i}.downsample."
        dtm.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, strict=True)
        x = io[f"stage{i}.blocks_out"].reshape(2, H, W, dim)
        with torch.no_grad():
            out, offset = dtm(x, return_offset=True)
        torch.testing.assert_close(offset, io[f"stage{i}.dtm_offset"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(out.flatten(1, 2), io[f"stage{i}.downsample_out"], rtol=1e-4, atol=1e-4)


def test_cached_low_precision_weights_follow_parameter_updates():
    """Fused bfloat16 inference keeps cast (and oneDNN-packed) weights; any change to a parameter
    (in place, as optimisers and load_state_dict do) must be seen by the next call."""
    from hilovit import HiLo
    from hilovit.layers import fast

    torch.manual_seed(3)
    ffn = _randomize(ConvFFN(16, 64)).eval()
    hilo = HiLo(32, 4, qkv_bias=True, window_size=2, alpha=0.5).eval()
    cases = [(ffn, torch.randn(2, 6, 8, 16), ffn.fc1.weight), (hilo, torch.randn(2, 6, 8, 32), hilo.l_q.weight)]
    for module, x, param in cases:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with torch.no_grad():
                before = module(x)
                assert len(fast._CACHE) > 0
                param.mul_(-1.5)  # in place: the version counter moves
                after = module(x)
            ref = module(x)  # autograd on: the plain modules, weights cast by autocast
        assert after.dtype == torch.bfloat16
        assert not torch.allclose(before.float(), after.float(), atol=1e-2)
        torch.testing.assert_close(after.float(), ref.float(), rtol=0.05, atol=0.05)
    # the cache holds no module alive
    import gc

    n = len(fast._CACHE)
    del cases, ffn, hilo, module, param
    gc.collect()
    assert len(fast._CACHE) < n
