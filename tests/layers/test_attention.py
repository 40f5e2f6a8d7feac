"""Token mixers against the official fixtures and against plain-math references written here."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from hilovit import Attention, HiLo, SpatialReductionAttention, WindowAttention
from hilovit.layers import fast
from references import BF16_EPS, heads, merge, ref_attention, ref_hilo, ref_window_attention

# --------------------------------------------------------------------------- plain-math references
# ref_attention, heads, merge, ref_hilo and ref_window_attention (float64) live in tests/references.py.


def ref_msa(m: Attention, x):
    m = m.double()
    B, H, W, C = x.shape
    t = x.double().reshape(B, H * W, C)
    q, k, v = m.qkv(t).chunk(3, dim=-1)
    out = m.proj(merge(ref_attention(heads(q, m.num_heads), heads(k, m.num_heads), heads(v, m.num_heads), m.scale)))
    m.float()
    return out.reshape(B, H, W, C).float()


def ref_sra(m: SpatialReductionAttention, x):
    m = m.double()
    B, H, W, C = x.shape
    xd = x.double()
    t = xd.reshape(B, H * W, C)
    r = m.sr_ratio
    if r > 1:  # the strided conv written as a sum over its taps
        h, w = H // r, W // r
        red = torch.zeros(B, h, w, C, dtype=xd.dtype) + m.sr.bias
        for a in range(r):
            for b in range(r):
                patch = xd[:, a : a + h * r : r, b : b + w * r : r]  # (B, h, w, C)
                red = red + patch @ m.sr.weight[:, :, a, b].t()
        red = m.norm(red.reshape(B, h * w, C))
    else:
        red = t
    q = m.q(t)
    k, v = m.kv(red).chunk(2, dim=-1)
    n = m.num_heads
    out = m.proj(merge(ref_attention(heads(q, n), heads(k, n), heads(v, n), m.scale)))
    m.float()
    return out.reshape(B, H, W, C).float()


# --------------------------------------------------------------------------- official HiLo fixtures


def hilo_fixture_names(fixtures_dir):
    return sorted(p.name[: -len(".json")] for p in fixtures_dir.glob("hilo_*.json"))


def load_hilo_fixture(fixtures_dir, name):
    meta = json.loads((fixtures_dir / f"{name}.json").read_text())
    m = HiLo(**meta["constructor"])
    m.load_state_dict(load_file(fixtures_dir / f"{name}.state_dict.safetensors"), strict=True)
    io = load_file(fixtures_dir / f"{name}.io.safetensors")
    H, W = meta.get("H"), meta.get("W")
    return m.eval(), io, H, W, meta


CLS_TRUNCATION_QUIRK = "hilo_cls_d64_h2_a1.0_ws2_7x7"


@pytest.mark.parametrize("fast_on", [True, False], ids=["fast", "plain"])
def test_hilo_matches_every_official_fixture(fixtures_dir, fast_on):
    """Fast path on: the Hi-Fi windows of these narrow maps are attended a band at a time; off: cut
    out one by one. Both equal the official outputs."""
    names = hilo_fixture_names(fixtures_dir)
    assert len(names) == 19
    checked = 0
    for name in names:
        if name == CLS_TRUNCATION_QUIRK:
            continue
        m, io, H, W, meta = load_hilo_fixture(fixtures_dir, name)
        d = meta["derived"]
        assert (m.l_heads, m.h_heads, m.l_dim, m.h_dim) == (d["l_heads"], d["h_heads"], d["l_dim"], d["h_dim"])
        with torch.no_grad(), fast.fast_inference(fast_on):
            out = m(io["x"], H, W)  # the official (B, N, C) call
            grid = m(io["x"].reshape(2, H, W, -1))  # the models' (B, H, W, C) layout
        assert out.shape == io["out"].shape
        torch.testing.assert_close(out, io["out"], atol=1e-5, rtol=0, msg=name)
        torch.testing.assert_close(grid.reshape_as(out), out, atol=1e-6, rtol=0)
        checked += 1
    assert checked == 18


def test_hilo_classification_truncation_quirk_is_documented_difference(fixtures_dir):
    """The official classification HiLo drops the last row/column from the pooled keys when H is odd;
    hilovit pads like the detection code. Same weights and input: we equal the detection fixture,
    and a reference with floor pooling reproduces the classification output."""
    m, io, H, W, _ = load_hilo_fixture(fixtures_dir, CLS_TRUNCATION_QUIRK)
    det = load_file(fixtures_dir / "hilo_det_d64_h2_a1.0_ws2_7x7.io.safetensors")
    torch.testing.assert_close(det["x"], io["x"])
    with torch.no_grad():
        ours = m(io["x"], H, W)
        floor = ref_hilo(m, io["x"].reshape(2, H, W, -1), pool_floor=True).float().reshape_as(ours)
    torch.testing.assert_close(ours, det["out"], atol=1e-5, rtol=0)
    assert (ours - io["out"]).abs().max() > 0.1
    torch.testing.assert_close(floor, io["out"], atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- against plain math

SIZES = [(8, 8), (7, 7), (6, 10), (5, 9), (14, 3)]


@pytest.mark.parametrize("H,W", SIZES)
@pytest.mark.parametrize(
    "heads,ws,alpha", [(4, 2, 0.5), (4, 3, 0.75), (3, 2, 0.0), (4, 2, 1.0), (4, 1, 0.5), (6, 4, 0.9)]
)
def test_hilo_matches_plain_math(H, W, heads, ws, alpha):
    torch.manual_seed(H * 100 + W)
    m = HiLo(48, heads, qkv_bias=True, window_size=ws, alpha=alpha).eval()
    x = torch.randn(2, H, W, 48)
    with torch.no_grad():
        torch.testing.assert_close(m(x).double(), ref_hilo(m, x), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("H,W", SIZES)
def test_msa_matches_plain_math(H, W):
    torch.manual_seed(0)
    m = Attention(32, 4, qkv_bias=True).eval()
    x = torch.randn(2, H, W, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref_msa(m, x), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("H,W", SIZES)
@pytest.mark.parametrize("sr", [1, 2, 3])
def test_sra_matches_plain_math(H, W, sr):
    torch.manual_seed(1)
    m = SpatialReductionAttention(32, 4, qkv_bias=True, sr_ratio=sr).eval()
    x = torch.randn(2, H, W, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref_sra(m, x), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("H,W", [(8, 8), (7, 7), (6, 10), (9, 5), (12, 12)])
@pytest.mark.parametrize("ws,shift", [(4, 0), (4, 2), (3, 1), (4, 3)])
def test_window_attention_matches_plain_math(H, W, ws, shift):
    torch.manual_seed(2)
    m = WindowAttention(32, 4, window_size=ws, shift_size=shift).eval()
    with torch.no_grad():
        m.relative_position_bias_table.normal_(0, 0.5)
    x = torch.randn(2, H, W, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x).double(), ref_window_attention(m, x), atol=2e-5, rtol=1e-5)


def test_window_attention_bias_cache_follows_the_table():
    torch.manual_seed(3)
    m = WindowAttention(32, 4, window_size=4, shift_size=2).eval()
    x = torch.randn(1, 8, 8, 32)
    with torch.no_grad():
        first = m(x)
        m.relative_position_bias_table.add_(1.0)  # in-place update: the cached bias must be rebuilt
        second = m(x)
        torch.testing.assert_close(second.double(), ref_window_attention(m, x), atol=2e-5, rtol=1e-5)
    assert not torch.allclose(first, second)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dim=30, num_heads=4), "divisible by num_heads"),
        (dict(dim=32, num_heads=4, alpha=1.5), "alpha"),
        (dict(dim=32, num_heads=4, alpha=-0.1), "alpha"),
        (dict(dim=32, num_heads=4, window_size=0), "window_size"),
        (dict(dim=32, num_heads=0), "num_heads"),
    ],
)
def test_hilo_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HiLo(**kwargs)


def test_bad_inputs_name_the_shapes():
    m = HiLo(32, 4)
    with pytest.raises(ValueError, match=r"N=20 tokens but H\*W = 4\*4 = 16"):
        m(torch.randn(1, 20, 32), 4, 4)
    with pytest.raises(ValueError, match="pass H and W"):
        m(torch.randn(1, 16, 32))
    with pytest.raises(ValueError, match="C=32"):
        m(torch.randn(1, 16, 16), 4, 4)
    with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
        m(torch.randn(16, 32))
    with pytest.raises(ValueError, match="32 channels"):
        m(torch.randn(1, 4, 4, 31))
    for other in (Attention(32, 4), SpatialReductionAttention(32, 4, sr_ratio=2), WindowAttention(32, 4, 4, 2)):
        with pytest.raises(ValueError, match=type(other).__name__):
            other(torch.randn(1, 16, 32))
        with pytest.raises(ValueError, match="32 channels"):
            other(torch.randn(1, 4, 4, 8))
    with pytest.raises(ValueError, match="shift_size"):
        WindowAttention(32, 4, window_size=4, shift_size=4)
    with pytest.raises(ValueError, match="sr_ratio"):
        SpatialReductionAttention(32, 4, sr_ratio=0)


# --------------------------------------------------------------------------- training, precision, compile


def test_hilo_backward_gives_finite_gradients_to_every_parameter():
    torch.manual_seed(4)
    m = HiLo(48, 6, qkv_bias=True, window_size=2, alpha=0.5, attn_drop=0.1, proj_drop=0.1).train()
    x = torch.randn(2, 7, 10, 48, requires_grad=True)
    m(x).square().mean().backward()
    names = {n for n, _ in m.named_parameters()}
    assert names == {f"{p}.{t}" for p in ("l_q", "l_kv", "l_proj", "h_qkv", "h_proj") for t in ("weight", "bias")}
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert torch.isfinite(x.grad).all()


def test_attn_drop_acts_in_training_only():
    torch.manual_seed(5)
    m = HiLo(32, 4, window_size=2, alpha=0.5, attn_drop=0.5)
    x = torch.randn(2, 8, 8, 32)
    plain = HiLo(32, 4, window_size=2, alpha=0.5)
    plain.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(x), plain.eval()(x))
        assert not torch.allclose(m.train()(x), plain.eval()(x), atol=1e-3)


def test_hilo_under_bfloat16_autocast():
    """bfloat16 autocast against the float64 definition. About 8 bfloat16 roundings lie in series (the input,
    the weights, the projections' outputs, the logits, the softmax, the attended values, the output
    projection), each within BF16_EPS of its value: the output must be within 8 * BF16_EPS of its scale."""
    torch.manual_seed(6)
    m = HiLo(64, 4, qkv_bias=True, window_size=2, alpha=0.5).eval()
    x = torch.randn(2, 13, 14, 64)  # an odd side: padded windows and pooled cells
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(x)
    ref = ref_hilo(m, x)
    assert low.dtype == torch.bfloat16 and low.shape == ref.shape
    err = float((low.double() - ref).abs().max() / ref.abs().max())
    assert err < 8 * BF16_EPS, err


def test_hilo_torch_compile_matches_eager():
    torch.manual_seed(7)
    m = HiLo(32, 4, qkv_bias=True, window_size=2, alpha=0.5).eval()
    x = torch.randn(2, 6, 10, 32)
    compiled = torch.compile(m, backend="inductor", dynamic=False)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x), atol=1e-5, rtol=1e-5)


def test_sdpa_kernel_is_fused_on_cpu():
    """A 3-D additive mask would send SDPA to its slow math path; every mixer must hit the fused kernel."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    for m in (HiLo(32, 4, window_size=2), Attention(32, 4), SpatialReductionAttention(32, 4, sr_ratio=2),
              WindowAttention(32, 4, 4, 2)):
        seen.clear()
        with Spy(), torch.no_grad():
            m.eval()(torch.randn(1, 8, 8, 32))
        assert any("flash_attention" in s for s in seen), type(m).__name__
        assert not any("bmm" in s for s in seen), type(m).__name__


def test_functional_sdpa_reference_agrees_with_ref():
    q, k, v = torch.randn(3, 2, 4, 5, 8).double().unbind(0)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, scale=0.3), ref_attention(q, k, v, 0.3))


def test_hilo_fused_projection_cache_follows_the_weights():
    torch.manual_seed(8)
    m = HiLo(32, 4, qkv_bias=True, window_size=2, alpha=0.5).eval()
    x = torch.randn(1, 6, 6, 32)
    with torch.no_grad():
        first = m(x)
        m.l_q.weight.mul_(2.0)  # in place, as an optimiser step or load_state_dict would
        second = m(x)
        torch.testing.assert_close(second.double(), ref_hilo(m, x), atol=2e-5, rtol=1e-5)
    assert not torch.allclose(first, second)
    m.load_state_dict(HiLo(32, 4, qkv_bias=True, window_size=2, alpha=0.5).state_dict())
    with torch.no_grad():
        torch.testing.assert_close(m(x).double(), ref_hilo(m, x), atol=2e-5, rtol=1e-5)


# --------------------------------------------------------------------------- bfloat16 CPU inference path


def _strided_qkv(n, nh, N, hd, scale_in=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    qkv = (torch.randn(n * N, 3 * nh * hd, generator=g) * scale_in).bfloat16()
    return qkv.view(n, N, 3, nh, hd).permute(2, 0, 3, 1, 4).unbind(0)  # strided views, as the modules make them


def test_short_key_bfloat16_path_is_the_softmax_and_skips_the_fused_kernel(monkeypatch):
    q, k, v = _strided_qkv(5, 3, 49, 16)
    g = torch.Generator().manual_seed(1)
    mask = (torch.randn(1, 3, 49, 49, generator=g) - 100.0 * (torch.rand(1, 1, 49, 49, generator=g) < 0.3)).bfloat16()
    ref = ref_attention(q.double(), k.double(), v.double(), 0.25, mask.double())

    def refuse(*a, **kw):
        raise AssertionError("the fused kernel was called")

    monkeypatch.setattr(fast.F, "scaled_dot_product_attention", refuse)
    with torch.inference_mode():
        out = fast.attention(q, k, v, mask, 0.25, 0.0)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape
    assert out.transpose(1, 2).is_contiguous()  # stored (n, N, heads, hd) like the fused kernel's output
    err = (out.double() - ref).abs().max().item()
    # bfloat16 logits, weights and output: a few units of bfloat16 rounding of the output's scale
    assert err < 0.03 * ref.abs().max().item(), err
    # without a mask the short path still runs
    with torch.inference_mode():
        plain = fast.attention(q, k, v, None, 0.25, 0.0)
    assert (plain.double() - ref_attention(q.double(), k.double(), v.double(), 0.25)).abs().max() < 0.03
    # float32 inference: the products around a float32 softmax, to float32 rounding of the math
    with torch.inference_mode():
        f32 = fast.attention(q.float(), k.float(), v.float(), mask.float(), 0.25, 0.0)
    assert f32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), ref, atol=1e-5, rtol=1e-5)
    # outside the fast path (autograd on, nothing requiring grad) the fused kernel is used
    with pytest.raises(AssertionError, match="fused kernel"):
        fast.attention(q.float(), k.float(), v.float(), mask.float(), 0.25, 0.0)


def test_short_key_path_hands_overflowing_rows_to_the_fused_kernel():
    q, k, v = _strided_qkv(2, 2, 49, 32, scale_in=4.0)  # logits far beyond exp's float range
    with torch.inference_mode():
        s = (q.float() @ k.float().transpose(-1, -2)).abs().max()
        assert s > 200  # exp would overflow without the guard
        out = fast.attention(q, k, v, None, 1.0, 0.0)
        fused = F.scaled_dot_product_attention(q, k, v, scale=1.0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, fused, atol=0, rtol=0)


@pytest.mark.parametrize("mask_kind", ["none", "broadcast", "band"])
def test_short_key_training_path_gives_the_fused_kernels_values_and_gradients(monkeypatch, mask_kind):
    """Under autograd on the CPU, short key sequences run as plain products (no fused kernel): the
    output and the gradients of q, k, v and the mask are those of the fused kernel's in float32."""
    g = torch.Generator().manual_seed(3)
    n, nh, L, hd = 4, 3, 28, 16
    q, k, v = (torch.randn(n, nh, L, hd, generator=g).requires_grad_() for _ in range(3))
    mask = None
    if mask_kind == "broadcast":  # one (1, heads, L, L) bias shared by every window, as Swin's
        mask = torch.randn(1, nh, L, L, generator=g).requires_grad_()
    elif mask_kind == "band":  # windows kept apart by -inf, as HiLo's Hi-Fi bands
        idx = torch.arange(L) % 14 // 2
        mask = torch.where(idx[:, None] == idx[None, :], 0.0, float("-inf"))
    grad = torch.randn(n, nh, L, hd, generator=g)
    leaves = [t for t in (q, k, v, mask) if t is not None and t.requires_grad]

    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    want = torch.autograd.grad(fused, leaves, grad)

    def refuse(*a, **kw):
        raise AssertionError("the fused kernel was called")

    monkeypatch.setattr(fast.F, "scaled_dot_product_attention", refuse)
    out = fast.attention(q, k, v, mask, 0.3, 0.0)
    got = torch.autograd.grad(out, leaves, grad)
    torch.testing.assert_close(out, fused, atol=1e-5, rtol=1e-5)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # bfloat16 (as under autocast): within bfloat16 rounding of the float64 math, gradients included
    qb, kb, vb = (t.detach().bfloat16().requires_grad_() for t in (q, k, v))
    mb = None if mask is None else mask.detach().bfloat16()
    outb = fast.attention(qb, kb, vb, mb, 0.3, 0.0)
    assert outb.dtype == torch.bfloat16
    gb = torch.autograd.grad(outb, (qb, kb, vb), grad.bfloat16())
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = ref_attention(q64, k64, v64, 0.3, None if mask is None else mask.detach().double())
    g64 = torch.autograd.grad(ref, (q64, k64, v64), grad.double())
    assert (outb.double() - ref).abs().max() < 0.03 * ref.abs().max()
    for a, b in zip(gb, g64):
        assert (a.double() - b).abs().max() < 0.05 * b.abs().max()
    # dropout and long key sequences keep the fused kernel
    with pytest.raises(AssertionError, match="fused kernel"):
        fast.attention(q, k, v, mask, 0.3, 0.1)
    long_k = torch.randn(n, nh, fast.SHORT_KEYS + 1, hd, requires_grad=True)
    with pytest.raises(AssertionError, match="fused kernel"):
        fast.attention(q, long_k, long_k, None, 0.3, 0.0)


def test_window_attention_bfloat16_inference_matches_float64_reference():
    """bfloat16 autocast inference (padded, shifted, with a visible relative-position bias) against the float64
    definition: about 8 bfloat16 roundings in series, as HiLo's, so within 8 * BF16_EPS of the output's scale."""
    torch.manual_seed(11)
    m = WindowAttention(48, 3, window_size=7, shift_size=3).eval()
    with torch.no_grad():
        m.relative_position_bias_table.normal_(0, 0.5)
    x = torch.randn(2, 21, 19, 48)  # padded, shifted
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(x)
    ref = ref_window_attention(m, x)
    assert low.dtype == torch.bfloat16 and low.shape == ref.shape
    err = float((low.double() - ref).abs().max() / ref.abs().max())
    assert err < 8 * BF16_EPS, err


def test_window_plan_chunks_cover_each_group_in_balanced_pieces():
    m = WindowAttention(16, 2, window_size=4, shift_size=2)
    plan = m.window_plan(3, 22, 30, torch.device("cpu"))  # padded, four window types
    N = m.window_tokens
    for max_rows in (N, 5 * N, 7 * N + 3, 10**6):
        pieces = plan.chunks(N, max_rows)
        for first, end, t in plan.groups:
            mine = [(a, b) for a, b, u in pieces if u == t]
            assert mine[0][0] == first and mine[-1][1] == end
            assert all(b0 == a1 for (_, b0), (a1, _) in zip(mine[:-1], mine[1:]))  # contiguous, in order
            sizes = [(b - a) // N for a, b in mine]
            assert all((b - a) % N == 0 for a, b in mine) and max(sizes) <= max(1, max_rows // N)
            assert max(sizes) - min(sizes) <= 1
