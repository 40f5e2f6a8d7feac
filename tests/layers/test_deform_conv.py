"""Tests for hilovit.layers.deform_conv (DCNv1 in plain PyTorch).

The reference is a direct scalar transcription of the semantics in the fixtures README
("Deformable convolution (LITv2 DTM)"), run in float64 on tiny inputs.

Run as a script for the speed comparison with a naive grid_sample-per-tap version:
    PYTHONPATH=src python tests/layers/test_deform_conv.py
"""

from __future__ import annotations

import importlib.util
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from hilovit.layers import deform_conv as dc
from hilovit.layers.deform_conv import DeformConv2d, DeformConv2dPack, deform_conv2d

# name -> (B, Cin, Cout, H, W, kernel, stride, padding, dilation)
CONFIGS = {
    "k2s2p0_8x8": (2, 3, 2, 8, 8, 2, 2, 0, 1),
    "k2s2p0_7x9": (2, 2, 3, 7, 9, 2, 2, 0, 1),
    "k3s1p1_6x5": (1, 3, 2, 6, 5, 3, 1, 1, 1),
    "k3s2p1d2_9x8": (2, 2, 3, 9, 8, 3, 2, 1, 2),
    "k3s1p1_5x6": (2, 2, 2, 5, 6, 3, 1, 1, 1),
    "k23_s21_p01_d12_7x6": (1, 2, 3, 7, 6, (2, 3), (2, 1), (0, 1), (1, 2)),
}


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _out_hw(H, W, k, s, p, d):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (k, s, p, d))
    return (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1


def reference_deform_conv2d(x, offset, weight, bias, stride, padding, dilation):
    """Scalar float64 loops, written straight from the semantics."""
    (sh, sw), (ph, pw), (dh, dw) = map(_pair, (stride, padding, dilation))
    B, C, H, W = x.shape
    Cout, _, kh, kw = weight.shape
    Ho, Wo = offset.shape[2:]
    X, O, Wt = x.double().tolist(), offset.double().tolist(), weight.double().tolist()
    bs = bias.double().tolist() if bias is not None else [0.0] * Cout

    def sample(img, y, xx):
        if not (-1 < y < H and -1 < xx < W):
            return 0.0
        y0, x0 = math.floor(y), math.floor(xx)
        ly, lx = y - y0, xx - x0
        v = 0.0
        for yy, xc, wgt in (
            (y0, x0, (1 - ly) * (1 - lx)),
            (y0, x0 + 1, (1 - ly) * lx),
            (y0 + 1, x0, ly * (1 - lx)),
            (y0 + 1, x0 + 1, ly * lx),
        ):
            if 0 <= yy < H and 0 <= xc < W:
                v += wgt * img[yy][xc]
        return v

    out = [[[[0.0] * Wo for _ in range(Ho)] for _ in range(Cout)] for _ in range(B)]
    for b in range(B):
        for ho in range(Ho):
            for wo in range(Wo):
                cols = [[[0.0] * kw for _ in range(kh)] for _ in range(C)]
                for r in range(kh):
                    for c in range(kw):
                        k = r * kw + c
                        y = (ho * sh - ph + r * dh) + O[b][2 * k][ho][wo]
                        xx = (wo * sw - pw + c * dw) + O[b][2 * k + 1][ho][wo]
                        for ci in range(C):
                            cols[ci][r][c] = sample(X[b][ci], y, xx)
                for co in range(Cout):
                    acc = bs[co]
                    for ci in range(C):
                        for r in range(kh):
                            for c in range(kw):
                                acc += Wt[co][ci][r][c] * cols[ci][r][c]
                    out[b][co][ho][wo] = acc
    return torch.tensor(out, dtype=torch.float64)


def naive_grid_sample_deform_conv2d(x, offset, weight, bias, stride, padding, dilation):
    """One F.grid_sample per kernel tap (align_corners=True), then a 1x1 convolution."""
    (sh, sw), (ph, pw), (dh, dw) = map(_pair, (stride, padding, dilation))
    B, C, H, W = x.shape
    Cout, _, kh, kw = weight.shape
    Ho, Wo = offset.shape[2:]
    ho = (torch.arange(Ho, dtype=x.dtype) * sh - ph).view(Ho, 1)
    wo = (torch.arange(Wo, dtype=x.dtype) * sw - pw).view(1, Wo)
    cols = []
    for r in range(kh):
        for c in range(kw):
            k = r * kw + c
            y = ho + r * dh + offset[:, 2 * k]  # (B, Ho, Wo)
            xx = wo + c * dw + offset[:, 2 * k + 1]
            grid = torch.stack([xx / (W - 1) * 2 - 1, y / (H - 1) * 2 - 1], -1)
            cols.append(F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True))
    cols = torch.stack(cols, 2).reshape(B, C * kh * kw, Ho, Wo)  # channel-major, then tap
    return F.conv2d(cols, weight.reshape(Cout, C * kh * kw, 1, 1), bias)


def make_case(cfg, gen, dtype=torch.float64, special=True):
    """Random input/weight/bias and offsets ~ N(0, 2^2), with a share of hand-placed
    integer offsets and sample positions on or next to the image border."""
    B, C, Cout, H, W, k, s, p, d = cfg
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (k, s, p, d))
    Ho, Wo = _out_hw(H, W, k, s, p, d)
    K = kh * kw
    x = torch.randn(B, C, H, W, generator=gen, dtype=dtype)
    w = torch.randn(Cout, C, kh, kw, generator=gen, dtype=dtype)
    bias = torch.randn(Cout, generator=gen, dtype=dtype)
    off = torch.randn(B, K, 2, Ho, Wo, generator=gen, dtype=torch.float64) * 2
    if special:
        tap = torch.arange(K)
        base_y = (torch.arange(Ho) * sh - ph).view(1, Ho, 1) + (tap // kw * dh).view(K, 1, 1)  # (K, Ho, 1)
        base_x = (torch.arange(Wo) * sw - pw).view(1, 1, Wo) + (tap % kw * dw).view(K, 1, 1)  # (K, 1, Wo)
        eps = 1e-7
        targets_y = torch.tensor(
            [-1, -1 + eps, -1 - eps, -0.5, -eps, 0, H - 1, H - 1 + eps, H - 0.5, H - eps, H, H + eps, 1.5, 2],
            dtype=torch.float64,
        )
        targets_x = torch.tensor(
            [
                -1,
                -1 + eps,
                -1 - eps,
                -0.5,
                -eps,
                0,
                W - 1,
                W - 1 + eps,
                W - 0.5,
                W - eps,
                W,
                W + eps,
                0.25,
                3,
            ],
            dtype=torch.float64,
        )
        shape = (B, K, Ho, Wo)
        ty = targets_y[torch.randint(len(targets_y), shape, generator=gen)] - base_y
        tx = targets_x[torch.randint(len(targets_x), shape, generator=gen)] - base_x
        integer = torch.randint(-3, 4, (B, K, 2, Ho, Wo), generator=gen).double()
        kind = torch.randint(4, shape, generator=gen)  # 0 random, 1 integer, 2 border y, 3 border both
        off = torch.where((kind == 1).unsqueeze(2), integer, off)
        off[:, :, 0] = torch.where(kind >= 2, ty, off[:, :, 0])
        off[:, :, 1] = torch.where(kind == 3, tx, off[:, :, 1])
        ys, xs = base_y + off[:, :, 0], base_x + off[:, :, 1]  # sample positions (B, K, Ho, Wo)
        assert (ys == -1).any() and (ys == H).any() and (ys == H - 1).any() and (xs == -1).any()
    return x, off.reshape(B, 2 * K, Ho, Wo).to(dtype), w, bias, (k, s, p, d)


def _pure_pytorch(x, off, w, b, stride, padding, dilation):
    stride, padding, dilation = map(_pair, (stride, padding, dilation))
    out_hw = dc._check_args(x, off, w, b, stride, padding, dilation)
    return dc._deform_conv2d_pytorch(x, off, w, b, stride, padding, dilation, out_hw)


# The public function, and the pure-PyTorch kernel too when torchvision is the default backend.
IMPLS = {"default": deform_conv2d}
if dc.BACKEND != "pytorch":
    IMPLS["pytorch"] = _pure_pytorch


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_scalar_reference_float64(name, impl):
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    x, off, w, b, (k, s, p, d) = make_case(CONFIGS[name], gen)
    ref = reference_deform_conv2d(x, off, w, b, s, p, d)
    out = IMPLS[impl](x, off, w, b, s, p, d)
    assert out.shape == ref.shape == (x.shape[0], w.shape[0], *_out_hw(*x.shape[2:], k, s, p, d))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["k2s2p0_7x9", "k3s2p1d2_9x8"])
def test_matches_scalar_reference_float32_and_layouts(name):
    gen = torch.Generator().manual_seed(1)
    x, off, w, b, (k, s, p, d) = make_case(CONFIGS[name], gen)
    ref = reference_deform_conv2d(x, off, w, b, s, p, d).float()
    out = deform_conv2d(x.float(), off.float(), w.float(), b.float(), s, p, d)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    # channels_last and non-contiguous inputs give the same result.
    xc = x.float().contiguous(memory_format=torch.channels_last)
    offt = off.float().transpose(2, 3).contiguous().transpose(2, 3)
    torch.testing.assert_close(deform_conv2d(xc, offt, w.float(), b.float(), s, p, d), out, rtol=0, atol=1e-6)


def test_matches_naive_grid_sample():
    gen = torch.Generator().manual_seed(2)
    for name in ("k2s2p0_8x8", "k3s2p1d2_9x8"):
        x, off, w, b, (k, s, p, d) = make_case(CONFIGS[name], gen, special=False)
        torch.testing.assert_close(
            deform_conv2d(x, off, w, b, s, p, d),
            naive_grid_sample_deform_conv2d(x, off, w, b, s, p, d),
            rtol=0,
            atol=1e-9,
        )


@pytest.mark.parametrize("name", list(CONFIGS))
def test_zero_offsets_equal_conv2d(name):
    gen = torch.Generator().manual_seed(3)
    x, off, w, b, (k, s, p, d) = make_case(CONFIGS[name], gen, dtype=torch.float32)
    out = deform_conv2d(x, torch.zeros_like(off), w, b, s, p, d)
    torch.testing.assert_close(out, F.conv2d(x, w, b, s, p, d), rtol=0, atol=1e-5)
    out_nobias = deform_conv2d(x, torch.zeros_like(off), w, None, s, p, d)
    torch.testing.assert_close(out_nobias, F.conv2d(x, w, None, s, p, d), rtol=0, atol=1e-5)


def test_integer_offsets_shift_the_image():
    # All taps moved by (+1 row, -2 columns) = the plain conv of the image shifted the other way.
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 8, 10, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 3, 2, 2, generator=gen, dtype=torch.float64)
    off = torch.zeros(2, 8, 4, 5, dtype=torch.float64)
    off[:, 0::2], off[:, 1::2] = 1.0, -2.0
    shifted = F.pad(x, (2, 0, 0, 1))[:, :, 1:, :-2]  # shifted[y, x] = x[y + 1, x - 2], 0 outside
    torch.testing.assert_close(deform_conv2d(x, off, w, stride=2), F.conv2d(shifted, w, stride=2))


def test_samples_outside_are_zero_without_offset_gradient():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 2, 2, generator=gen, dtype=torch.float64)
    b = torch.randn(3, generator=gen, dtype=torch.float64)
    off = torch.full((1, 8, 2, 3), -7.5, dtype=torch.float64)
    # Output (0, 0), whose taps sit at (0, 0), (0, 1), (1, 0), (1, 1) without offsets:
    off[0, 0:2, 0, 0] = torch.tensor([-1.0, 0.0])  # tap 0 at y = -1 exactly, x = 0: outside
    off[0, 2:4, 0, 0] = torch.tensor([0.0, -2.0])  # tap 1 at y = 0, x = -1 exactly: outside
    off[0, 4:6, 0, 0] = torch.tensor([4.0, 0.0])  # tap 2 at y = 5 = H exactly: outside
    # Plain bilinear interpolation would give these value 0 but a non-zero offset gradient.
    off.requires_grad_(True)
    out = deform_conv2d(x, off, w, b, stride=2)
    torch.testing.assert_close(out, b.view(1, 3, 1, 1).expand(1, 3, 2, 3))
    out.sum().backward()
    assert torch.count_nonzero(off.grad) == 0
    assert torch.count_nonzero(x.grad) == 0


@pytest.mark.parametrize("k,s,p,d,H,W", [(2, 2, 0, 1, 4, 5), (3, 1, 1, 2, 4, 4)])
def test_gradcheck(k, s, p, d, H, W):
    gen = torch.Generator().manual_seed(6)
    Ho, Wo = _out_hw(H, W, k, s, p, d)
    x = torch.randn(1, 2, H, W, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, k, k, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True)
    # Integer part in {-1, 0, 1}, fractional part in [0.2, 0.8]: away from the kinks of bilinear
    # interpolation and from the -1 / H validity borders (which are integers).
    frac = 0.2 + 0.6 * torch.rand(1, 2 * k * k, Ho, Wo, generator=gen, dtype=torch.float64)
    off = torch.randint(-1, 2, frac.shape, generator=gen).double() + frac
    off.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda *a: deform_conv2d(*a, stride=s, padding=p, dilation=d), (x, off, w, b), eps=1e-6, atol=1e-7
    )


def test_odd_size_output_shape():
    x = torch.randn(2, 4, 7, 9)
    m = DeformConv2d(4, 6, kernel_size=2, stride=2)
    assert m.output_size(7, 9) == (3, 4)
    assert m(x, torch.randn(2, 8, 3, 4)).shape == (2, 6, 3, 4)
    p = DeformConv2dPack(4, 6, kernel_size=2, stride=2)
    assert p(x).shape == (2, 6, 3, 4)


def test_pack_zero_init_is_strided_conv_and_state_dict():
    torch.manual_seed(0)
    m = DeformConv2dPack(8, 16, kernel_size=2, stride=2)
    sd = m.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == {
        "weight": (16, 8, 2, 2),
        "bias": (16,),
        "conv_offset.weight": (8, 8, 2, 2),
        "conv_offset.bias": (8,),
    }
    assert torch.count_nonzero(m.conv_offset.weight) == 0 and torch.count_nonzero(m.conv_offset.bias) == 0
    x = torch.randn(2, 8, 7, 10)
    with torch.no_grad():
        torch.testing.assert_close(m(x), F.conv2d(x, m.weight, m.bias, stride=2), rtol=0, atol=1e-5)
        # Once the offset predictor is non-zero the result is no longer a plain conv.
        m.conv_offset.bias.fill_(0.5)
        assert (m(x) - F.conv2d(x, m.weight, m.bias, stride=2)).abs().max() > 1e-3
    # Loads a state dict with the official key names strictly.
    m2 = DeformConv2dPack(8, 16, kernel_size=2, stride=2)
    m2.load_state_dict(m.state_dict(), strict=True)
    torch.testing.assert_close(m2(x), m(x))


def test_init_like_conv2d_and_no_bias():
    torch.manual_seed(0)
    m = DeformConv2d(16, 32, kernel_size=3, padding=1)
    bound = 1 / math.sqrt(16 * 9)
    assert m.weight.shape == (32, 16, 3, 3) and m.bias.shape == (32,)
    assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.8 * bound
    assert m.bias.abs().max() <= bound and m.weight.std() > 0.4 * bound
    nb = DeformConv2dPack(4, 5, kernel_size=(2, 3), stride=(2, 1), padding=(0, 1), bias=False)
    assert nb.bias is None and set(nb.state_dict()) == {"weight", "conv_offset.weight", "conv_offset.bias"}
    assert nb.conv_offset.weight.shape == (12, 4, 2, 3)
    x = torch.randn(1, 4, 6, 7)
    torch.testing.assert_close(nb(x), F.conv2d(x, nb.weight, None, (2, 1), (0, 1)), rtol=0, atol=1e-5)
    assert "kernel_size=(2, 3)" in repr(nb)


def test_flops():
    m = DeformConv2d(64, 128, kernel_size=2, stride=2)
    assert m.flops(56, 56) == 28 * 28 * 128 * 64 * 4
    p = DeformConv2dPack(64, 128, kernel_size=2, stride=2)
    assert p.flops(56, 56) == 28 * 28 * 128 * 64 * 4 + 28 * 28 * 8 * 64 * 4
    assert p.flops(56, 56, include_offset=False) == m.flops(56, 56)
    d = DeformConv2d(3, 5, kernel_size=3, stride=2, padding=1, dilation=2)
    assert d.flops(9, 8) == 4 * 3 * 5 * 3 * 9  # output 4x3


def test_bfloat16_autocast_close_to_the_float64_reference():
    """bfloat16 against the scalar float64 reference fed the float64 offsets. A convolution is about 8
    bfloat16 roundings in series (input, weights, products, output), and here the sampling positions are
    rounded as well (the offsets come out of a bfloat16 convolution; a position near 10 moves by up to
    10 * BF16_EPS of a pixel): within 12 * BF16_EPS of the output's scale."""
    from references import BF16_EPS

    torch.manual_seed(0)
    m = DeformConv2dPack(16, 32, kernel_size=2, stride=2)
    with torch.no_grad():
        m.conv_offset.weight.normal_(0, 0.25)
        m.conv_offset.bias.normal_(0, 0.5)
    x = torch.randn(2, 16, 10, 12, requires_grad=True)
    with torch.no_grad():
        w64 = {k: v.double() for k, v in m.state_dict().items()}
        off64 = F.conv2d(x.double(), w64["conv_offset.weight"], w64["conv_offset.bias"], stride=2)
        ref = reference_deform_conv2d(x.double(), off64, w64["weight"], w64["bias"], 2, 0, 1)
    scale = ref.abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    if dc.BACKEND == "pytorch":
        assert out.dtype == torch.bfloat16  # the final matmul ran in the autocast dtype
    assert out.shape == ref.shape
    err = float((out.detach().double() - ref).abs().max() / scale)
    assert err < 12 * BF16_EPS, err
    out.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and m.conv_offset.weight.grad.abs().sum() > 0
    # bfloat16 tensors without autocast work too (the weight in the same dtype, as F.conv2d needs).
    xb, off = x.detach().bfloat16(), m.conv_offset(x).detach().bfloat16()
    outb = deform_conv2d(xb, off, m.weight.detach().bfloat16(), m.bias.detach().bfloat16(), 2)
    assert outb.dtype == torch.bfloat16
    err = float((outb.double() - ref).abs().max() / scale)
    assert err < 12 * BF16_EPS, err


def _compile_or_skip(fn, backend):
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available")
    torch._dynamo.reset()
    return torch.compile(fn, backend=backend, fullgraph=True)


# aot_eager traces the whole graph (forward and backward) through dynamo in a few seconds;
# inductor compiles C++ (about 20 s on 2 cores): marked slow (`make test` runs it, -m 'not slow' leaves it out).
@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile_matches_eager(backend):
    torch.manual_seed(0)
    m = DeformConv2dPack(4, 6, kernel_size=2, stride=2)
    with torch.no_grad():
        m.conv_offset.weight.normal_(0, 0.5)
        m.conv_offset.bias.normal_(0, 0.5)
    x = torch.randn(2, 4, 7, 9)
    compiled = _compile_or_skip(m, backend)
    try:
        out = compiled(x)
    except Exception as e:  # no C++ compiler on this machine: not a fault of the code under test
        inner = getattr(e, "inner_exception", e)
        if backend == "inductor" and type(inner).__name__ == "InvalidCxxCompiler":
            pytest.skip(f"torch.compile backend unavailable: {inner}")
        raise
    ref = m(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    out.sum().backward()
    g_compiled = m.conv_offset.weight.grad.clone()
    m.zero_grad()
    ref.sum().backward()
    torch.testing.assert_close(g_compiled, m.conv_offset.weight.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("dynamo", [False, True])
def test_onnx_export_matches_onnxruntime(dynamo, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if dynamo and importlib.util.find_spec("onnxscript") is None:
        pytest.skip("the dynamo ONNX exporter needs onnxscript")
    torch.manual_seed(0)
    m = DeformConv2dPack(8, 16, kernel_size=2, stride=2).eval()  # DTM-shaped
    with torch.no_grad():
        m.conv_offset.weight.normal_(0, 0.5)
        m.conv_offset.bias.normal_(0, 0.5)
    x = torch.randn(2, 8, 8, 10)
    path = tmp_path / "deform_conv.onnx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The TorchScript exporter also gets dynamic batch and size (7x9 below).
        dynamic = None if dynamo else {"x": {0: "batch", 2: "height", 3: "width"}}
        torch.onnx.export(
            m, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=dynamo, dynamic_axes=dynamic
        )
    # No Python control flow on traced values (it would freeze the example's shapes or data).
    tracer = [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert not tracer, tracer
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        ref = m(x)
    assert y.shape == (2, 16, 4, 5)
    torch.testing.assert_close(torch.from_numpy(y), ref, rtol=0, atol=1e-4)
    if not dynamo:
        x2 = torch.randn(3, 8, 7, 9)
        (y2,) = sess.run(None, {"x": x2.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(y2), m(x2), rtol=0, atol=1e-4)


def _bad(**changes):
    args = dict(
        input=torch.randn(2, 3, 8, 8),
        offset=torch.randn(2, 8, 4, 4),
        weight=torch.randn(5, 3, 2, 2),
        bias=None,
        stride=2,
        padding=0,
        dilation=1,
    )
    args.update(changes)
    return args


@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(input=torch.randn(3, 8, 8)), r"input must be 4-D .*\(3, 8, 8\)"),
        (dict(input=torch.randn(2, 4, 8, 8)), r"input has 4 channels but weight expects Cin=3"),
        (dict(weight=torch.randn(5, 3, 2)), r"weight must be 4-D"),
        (
            dict(offset=torch.randn(2, 18, 4, 4)),
            r"offset must have shape .*\(2, 8, 4, 4\).*got \(2, 18, 4, 4\)",
        ),
        (
            dict(offset=torch.randn(2, 8, 8, 8)),
            r"offset must have shape .*stride \(2, 2\).*got \(2, 8, 8, 8\)",
        ),
        (dict(offset=torch.randn(1, 8, 4, 4)), r"offset must have shape"),
        (dict(stride=0), r"stride must be positive, got \(0, 0\)"),
        (dict(stride=(2, -1)), r"stride must be positive, got \(2, -1\)"),
        (dict(dilation=0), r"dilation must be positive, got \(0, 0\)"),
        (dict(padding=-1), r"padding must be non-negative"),
        (dict(input=torch.randn(2, 3, 1, 8)), r"too small"),
        (dict(bias=torch.randn(4)), r"bias must have shape \(5,\)"),
    ],
)
def test_value_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        deform_conv2d(**_bad(**changes))


def test_module_value_errors():
    with pytest.raises(ValueError, match=r"stride must be positive, got \(0, 0\)"):
        DeformConv2d(3, 4, 2, stride=0)
    with pytest.raises(ValueError, match=r"dilation must be positive"):
        DeformConv2dPack(3, 4, 2, dilation=(1, 0))
    with pytest.raises(ValueError, match=r"kernel_size must be positive"):
        DeformConv2d(3, 4, 0)
    with pytest.raises(TypeError, match=r"kernel_size must be an int or a pair"):
        DeformConv2d(3, 4, (2, 2, 2))
    m = DeformConv2dPack(3, 4, 2, stride=2)
    # The Pack checks its input before the offset convolution sees it.
    with pytest.raises(ValueError, match=r"input has 5 channels but weight expects Cin=3"):
        m(torch.randn(1, 5, 4, 4))
    with pytest.raises(ValueError, match=r"input must be 4-D"):
        m(torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match=r"offset must have shape"):
        DeformConv2d(3, 4, 2)(torch.randn(1, 3, 4, 4), torch.zeros(1, 8, 2, 2))


def test_backend_flag():
    has_tv = dc._tv_deform_conv2d is not None
    assert dc.BACKEND == ("torchvision" if has_tv else "pytorch")


@pytest.mark.skipif(dc._tv_deform_conv2d is None, reason="torchvision is not importable")
@pytest.mark.parametrize("name", ["k2s2p0_7x9", "k3s2p1d2_9x8"])
def test_torchvision_equivalence(name):
    import torchvision

    gen = torch.Generator().manual_seed(7)
    x, off, w, b, (k, s, p, d) = make_case(CONFIGS[name], gen)
    tv = torchvision.ops.deform_conv2d(x, off, w, b, _pair(s), _pair(p), _pair(d))
    torch.testing.assert_close(_pure_pytorch(x, off, w, b, s, p, d), tv, rtol=0, atol=1e-10)


def _benchmark(repeats: int = 15) -> None:
    """LITv2-S-like DTM: B=16, C=64, 56x56 -> 28x28, Cout=128, kernel 2, stride 2.

    The two versions run alternately, so load from other processes hits both alike; the
    report gives the fastest and the median time of each and the median of per-round ratios."""
    import statistics
    import time

    torch.manual_seed(0)
    B, C, H, W, Cout = 16, 64, 56, 56, 128
    x = torch.randn(B, C, H, W)
    off = torch.randn(B, 8, 28, 28) * 1.5
    w = torch.randn(Cout, C, 2, 2) * 0.1
    b = torch.randn(Cout)
    fns = {"ours": deform_conv2d, "naive": naive_grid_sample_deform_conv2d}

    def forward(f):
        with torch.no_grad():
            f(x, off, w, b, 2, 0, 1)

    def forward_backward(f):
        xs = [t.detach().requires_grad_() for t in (x, off, w, b)]
        f(*xs, 2, 0, 1).sum().backward()

    diff = (deform_conv2d(x, off, w, b, 2) - naive_grid_sample_deform_conv2d(x, off, w, b, 2, 0, 1)).abs()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, backend {dc.BACKEND}")
    print(f"max |ours - naive| = {diff.max().item():.2e}")
    for what, run in (("forward", forward), ("forward+backward", forward_backward)):
        times = {name: [] for name in fns}
        for i in range(repeats + 2):
            for name, f in fns.items():
                t0 = time.perf_counter()
                run(f)
                if i >= 2:  # warm-up rounds
                    times[name].append(time.perf_counter() - t0)
        ratio = statistics.median(n / o for n, o in zip(times["naive"], times["ours"]))
        line = "  ".join(
            f"{name} min {min(t) * 1e3:6.1f} / median {statistics.median(t) * 1e3:6.1f} ms"
            for name, t in times.items()
        )
        print(f"{what:17s} {line}  naive/ours {ratio:.2f}x")


if __name__ == "__main__":
    _benchmark()
