"""Property-based tests (hypothesis): HiLo over random valid configurations (shape, finiteness, an independent
plain-math reference), Swin's window partition/reverse round trip and the shifted-window mask."""

import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hilovit.layers.attention import Attention, SpatialReductionAttention  # noqa: E402
from hilovit.layers.hilo import HiLo  # noqa: E402
from hilovit.layers.window_attention import WindowAttention  # noqa: E402
from hilovit.layers.windows import shifted_window_mask, window_partition, window_reverse  # noqa: E402

FAST = settings(max_examples=15, deadline=None, derandomize=True)


def _hilo(heads, head_dim, alpha, ws, seed):
    torch.manual_seed(seed)
    m = HiLo(heads * head_dim, num_heads=heads, window_size=ws, alpha=alpha, qkv_bias=True).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


def _attend(q, k, v, scale):
    """softmax(q k^T scale) v for one head: (n, d), (m, d), (m, d) -> (n, d)."""
    return torch.softmax(q @ k.T * scale, dim=-1) @ v


def reference_hilo(m: HiLo, x: torch.Tensor) -> torch.Tensor:
    """HiLo by its definition, token by token in float64: zero-pad to multiples of the window; Hi-Fi heads attend
    inside each window; Lo-Fi heads attend from every position to the window-averaged map; outputs
    [hifi, lofi] along the channels, cropped back."""
    x = x.double()
    B, H, W, C = x.shape
    s, hd = m.ws, m.head_dim
    Hp, Wp = s * math.ceil(H / s), s * math.ceil(W / s)
    xp = torch.zeros(B, Hp, Wp, C, dtype=torch.float64)
    xp[:, :H, :W] = x

    def lin(layer, t):
        return t @ layer.weight.double().T + (layer.bias.double() if layer.bias is not None else 0)

    outs = []
    if m.h_heads:
        hifi = torch.zeros(B, Hp, Wp, m.h_dim, dtype=torch.float64)
        qkv = lin(m.h_qkv, xp)  # channels: [q | k | v], each h_heads x head_dim
        for b in range(B):
            for r0 in range(0, Hp, s):
                for c0 in range(0, Wp, s):
                    win = qkv[b, r0:r0 + s, c0:c0 + s].reshape(s * s, 3, m.h_heads, hd)
                    heads = [_attend(win[:, 0, h], win[:, 1, h], win[:, 2, h], m.scale) for h in range(m.h_heads)]
                    hifi[b, r0:r0 + s, c0:c0 + s] = torch.cat(heads, -1).reshape(s, s, m.h_dim)
        outs.append(lin(m.h_proj, hifi))
    if m.l_heads:
        pooled = xp.reshape(B, Hp // s, s, Wp // s, s, C).mean(dim=(2, 4)).reshape(B, -1, C)
        kv = lin(m.l_kv, pooled).reshape(B, -1, 2, m.l_heads, hd)
        q = lin(m.l_q, xp).reshape(B, Hp * Wp, m.l_heads, hd)
        lofi = torch.stack([torch.cat([_attend(q[b, :, h], kv[b, :, 0, h], kv[b, :, 1, h], m.scale)
                                       for h in range(m.l_heads)], -1) for b in range(B)])
        outs.append(lin(m.l_proj, lofi.reshape(B, Hp, Wp, m.l_dim)))
    return torch.cat(outs, -1)[:, :H, :W]


configs = st.fixed_dictionaries({
    "heads": st.sampled_from([1, 2, 4]),
    "head_dim": st.sampled_from([2, 4, 8]),
    "alpha": st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0]),
    "ws": st.integers(1, 3),
    "H": st.integers(1, 11),
    "W": st.integers(1, 11),
    "seed": st.integers(0, 2**16),
})


@FAST
@given(cfg=configs, B=st.integers(0, 3))
def test_hilo_shape_and_finite_both_call_forms(cfg, B):
    m = _hilo(cfg["heads"], cfg["head_dim"], cfg["alpha"], cfg["ws"], cfg["seed"])
    C, H, W = m.dim, cfg["H"], cfg["W"]
    x = torch.randn(B, H, W, C, generator=torch.Generator().manual_seed(cfg["seed"]))
    with torch.no_grad():
        grid = m(x)
        flat = m(x.reshape(B, H * W, C), H, W)
    assert grid.shape == (B, H, W, C) and flat.shape == (B, H * W, C)
    assert bool(torch.isfinite(grid).all())
    assert torch.allclose(flat.reshape(B, H, W, C), grid, atol=1e-5)


@FAST
@given(cfg=configs, B=st.integers(1, 2))
def test_hilo_equals_the_plain_math_reference(cfg, B):
    m = _hilo(cfg["heads"], cfg["head_dim"], cfg["alpha"], cfg["ws"], cfg["seed"])
    x = torch.randn(B, cfg["H"], cfg["W"], m.dim, generator=torch.Generator().manual_seed(cfg["seed"] + 1))
    with torch.no_grad():
        got = m(x)  # float32, through the inference fast path where it applies
        exact = m.double()(x.double())  # float64: the plain modules
    want = reference_hilo(m, x)
    assert torch.allclose(exact, want, atol=1e-10)
    assert torch.allclose(got.double(), want, atol=2e-4, rtol=1e-4)


@FAST
@given(B=st.integers(0, 2), nh=st.integers(1, 4), nw=st.integers(1, 4), wh=st.integers(1, 4), ww=st.integers(1, 4),
       C=st.integers(1, 5))
def test_window_partition_reverse_round_trip(B, nh, nw, wh, ww, C):
    H, W = nh * wh, nw * ww
    x = torch.arange(B * H * W * C, dtype=torch.float32).reshape(B, H, W, C)
    windows = window_partition(x, (wh, ww))
    assert windows.shape == (B * nh * nw, wh, ww, C)
    if B:  # window i of image b is the block at window row i // nw, column i % nw
        i = (nh * nw) // 2
        r, c = divmod(i, nw)
        assert torch.equal(windows[i], x[0, r * wh:(r + 1) * wh, c * ww:(c + 1) * ww])
    assert torch.equal(window_reverse(windows, (wh, ww), H, W), x)


@FAST
@given(nh=st.integers(1, 4), nw=st.integers(1, 4), wh=st.integers(1, 5), ww=st.integers(1, 5), data=st.data())
def test_shifted_window_mask_keeps_wrapped_tokens_apart(nh, nw, wh, ww, data):
    sh, sw = data.draw(st.integers(0, wh - 1)), data.draw(st.integers(0, ww - 1))
    H, W = nh * wh, nw * ww
    mask = shifted_window_mask(H, W, (wh, ww), (sh, sw))
    assert mask.shape == (nh * nw, wh * ww, wh * ww)
    assert torch.equal(mask, mask.transpose(1, 2))  # symmetric
    assert bool((mask.diagonal(dim1=1, dim2=2) == 0).all())
    # independent rule: after the cyclic shift by -shift, a token at (r, c) came from ((r + sh) % H, (c + sw) % W);
    # two tokens of a window may attend to each other iff both or neither wrapped, along each axis
    r, c = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    wrapped = torch.stack([(r + sh >= H), (c + sw >= W)], -1).float()  # (H, W, 2)
    flags = window_partition(wrapped[None], (wh, ww)).reshape(nh * nw, wh * ww, 2)
    apart = (flags[:, :, None, :] != flags[:, None, :, :]).any(-1)
    assert torch.equal(mask != 0, apart)
    assert set(mask.unique().tolist()) <= {0.0, -100.0}
    if sh == 0 and sw == 0:
        assert not bool(mask.any())


MIXERS = {
    "HiLo": lambda: HiLo(16, num_heads=4, window_size=2, alpha=0.5),
    "MSA": lambda: Attention(16, num_heads=4),
    "SRA": lambda: SpatialReductionAttention(16, num_heads=4, sr_ratio=2),
    "W-MSA": lambda: WindowAttention(16, num_heads=4, window_size=3),
    "SW-MSA": lambda: WindowAttention(16, num_heads=4, window_size=3, shift_size=1),
}


@settings(max_examples=25, deadline=None, derandomize=True)
@given(name=st.sampled_from(sorted(MIXERS)), B=st.integers(0, 2), H=st.integers(1, 24), W=st.integers(1, 24),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
def test_every_mixer_gives_the_shape_or_a_clear_error(name, B, H, W, dtype):
    m = MIXERS[name]().to(dtype).eval()
    x = torch.randn(B, H, W, 16).to(dtype)
    try:
        with torch.no_grad():
            out = m(x)
    except (ValueError, TypeError) as e:  # e.g. a map smaller than SRA's reduction
        assert str(e) and name == "SRA" and min(H, W) < 2, (name, B, H, W, e)
        return
    assert out.shape == (B, H, W, 16) and out.dtype == dtype
    assert bool(torch.isfinite(out.float()).all())


# --------------------------------------------------------------------------- whole models
_MODELS = {}


def _small_model(name, dtype):
    key = (name, dtype)
    if key not in _MODELS:
        import hilovit

        torch.manual_seed(0)
        _MODELS[key] = hilovit.create_model(name).eval().to(dtype)
    return _MODELS[key]


SMALL_MODELS = ["litv2_nano", "swin_nano", "semfpn_litv2_nano"]


def _min_side(model) -> int:
    """The smallest image side the model documents: ``min_input_size`` (a segmentor: its backbone's)."""
    side = getattr(model, "min_input_size", None)
    return model.backbone.min_input_size if side is None else side


def _check_output(name, model, y, b, h, w, dtype):
    if name.startswith("semfpn"):
        assert y.shape == (b, model.decode_head.num_classes, h, w)
    else:
        assert y.shape == (b, model.num_classes)
    assert y.dtype == dtype
    assert bool(torch.isfinite(y.float()).all())


@settings(max_examples=10, deadline=None, derandomize=True)
@given(name=st.sampled_from(SMALL_MODELS),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
       b=st.integers(0, 2), h=st.integers(1, 100), w=st.integers(1, 100))
def test_small_models_give_the_right_shape_or_a_clear_error(name, dtype, b, h, w):
    """Any batch (0 included), any side from 1 to 100, float32/float64/bfloat16 weights: below the model's
    documented smallest side a ValueError naming the image size; from it up, the output shape the model
    promises."""
    model = _small_model(name, dtype)
    chans = model.pretrained_cfg["input_size"][0]
    x = torch.randn(b, chans, h, w, dtype=dtype)
    if min(h, w) < _min_side(model):
        with pytest.raises(ValueError, match=f"{h}x{w}"), torch.inference_mode():
            model(x)
        return
    with torch.inference_mode():
        y = model(x)
    _check_output(name, model, y, b, h, w, dtype)


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_small_models_smallest_side_is_exact(name):
    """One pixel below ``min_input_size`` along either side is refused; that size itself works."""
    model = _small_model(name, torch.float32)
    chans, side = model.pretrained_cfg["input_size"][0], _min_side(model)
    assert side >= 2, side  # every model here needs more than one pixel
    for h, w in ((side - 1, side), (side, side - 1)):
        with pytest.raises(ValueError, match=f"{h}x{w}"), torch.inference_mode():
            model(torch.randn(1, chans, h, w))
    with torch.inference_mode():
        y = model(torch.randn(1, chans, side, side))
    _check_output(name, model, y, 1, side, side, torch.float32)
