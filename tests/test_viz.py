"""Tests for the pictures of hilovit.viz: HiLo's branch spectra, attention maps, ``hilovit viz``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from hilovit import HiLo, WindowAttention, create_model
from hilovit.cli import main
from hilovit.viz import (
    HiLoCapture,
    amplitude_spectrum,
    attention_map,
    feature_energy,
    high_frequency_share,
    hilo_branches,
    lofi_attention,
    select_hilo,
    window_attention,
)


def _wave(H, W, fy, fx, C=3):
    """A plane wave of fy, fx cycles per position in every channel: (H, W, C)."""
    y, x = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    return torch.cos(2 * math.pi * (fy * y + fx * x)).unsqueeze(-1).expand(H, W, C)


def _texture_and_gradient(n, C, seed, texture=1.0):
    """A token map with smooth waves (low frequency) plus fine random texture in every channel."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, n), torch.linspace(0, 1, n), indexing="ij")
    a, b, c = torch.rand(3, C, generator=g)
    smooth = torch.sin(2 * math.pi * (a * x[..., None] + b * y[..., None]) + 6 * c)
    return (smooth + texture * torch.randn(n, n, C, generator=g)).unsqueeze(0)


def _identity_hilo(dim=64, num_heads=4, window_size=2, alpha=0.5):
    """HiLo whose projections are identities: attention as similarity-weighted averaging of the
    tokens themselves (Hi-Fi reads the first h_dim channels, Lo-Fi the others)."""
    m = HiLo(dim, num_heads=num_heads, window_size=window_size, alpha=alpha, qkv_bias=True).eval()
    eye, h = torch.eye(dim), m.h_dim
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.h_qkv.weight.copy_(torch.cat([eye[:h]] * 3))
        m.h_proj.weight.copy_(torch.eye(h))
        m.l_q.weight.copy_(eye[h:])
        m.l_kv.weight.copy_(torch.cat([eye[h:]] * 2))
        m.l_proj.weight.copy_(torch.eye(m.l_dim))
    return m


# --------------------------------------------------------------------------- spectra
def test_high_frequency_share_of_known_maps():
    assert high_frequency_share(_wave(16, 16, 1 / 16, 0)) == pytest.approx(0.0, abs=1e-12)
    assert high_frequency_share(_wave(16, 16, 0.5, 0.5)) == pytest.approx(1.0)
    assert high_frequency_share(_wave(16, 16, 0, 3 / 16), cutoff=0.25) == pytest.approx(0.0, abs=1e-12)
    assert high_frequency_share(_wave(16, 16, 0, 5 / 16), cutoff=0.25) == pytest.approx(1.0)
    assert high_frequency_share(torch.ones(8, 8, 4)) == 0.0  # constant: no variation at all
    # energy-weighted: 1 part at 6/16 cycles/position, 4 parts (amplitude 2) at 1/16
    mix = _wave(16, 16, 6 / 16, 0) + 2 * _wave(16, 16, 1 / 16, 0)
    assert high_frequency_share(mix) == pytest.approx(1 / 5)
    # at Nyquist a cosine is (-1)^n: twice the energy of a cosine of the same amplitude elsewhere
    assert high_frequency_share(_wave(16, 16, 0.5, 0) + 2 * _wave(16, 16, 1 / 16, 0)) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="cutoff"):
        high_frequency_share(mix, cutoff=0.9)


def test_amplitude_spectrum_is_centred_and_mean_free():
    amp = amplitude_spectrum(_wave(8, 10, 2 / 8, 0) + 5.0)  # the offset is removed
    assert amp.shape == (8, 10)
    assert amp[4, 5] == pytest.approx(0.0, abs=1e-9)  # DC at the centre
    peaks = {tuple(i) for i in torch.nonzero(amp > amp.max() / 2).tolist()}
    assert peaks == {(4 - 2, 5), (4 + 2, 5)}
    energy = feature_energy(torch.cat([torch.zeros(1, 4, 2), torch.ones(1, 4, 2)]).repeat(2, 1, 1))
    assert energy.shape == (4, 4) and torch.allclose(energy, torch.full((4, 4), 0.25, dtype=torch.float64))


# --------------------------------------------------------------------------- capturing HiLo's branches
def test_capture_returns_the_branches_hilo_concatenates():
    torch.manual_seed(0)
    m = HiLo(32, num_heads=4, window_size=2, alpha=0.5).eval()
    x = torch.randn(2, 7, 9, 32)  # padded to 8 x 10 inside
    with HiLoCapture(m) as cap, torch.no_grad():
        y = m(x)
    assert cap.hifi.shape == (2, 7, 9, m.h_dim) and cap.lofi.shape == (2, 7, 9, m.l_dim)
    torch.testing.assert_close(torch.cat([cap.hifi, cap.lofi], dim=-1), y)
    assert not {"forward", "hifi", "lofi"} & set(vars(m))  # wrappers removed
    with HiLoCapture(m) as cap, torch.no_grad():  # the official call form
        m(x.flatten(1, 2), 7, 9)
    assert cap.hifi.shape == (2, 7, 9, m.h_dim)


def test_select_hilo():
    model = create_model("litv2_nano")
    index, name, m = select_hilo(model)
    assert m.h_heads > 0 and m.l_heads > 0 and name.startswith("layers.2")
    with pytest.raises(ValueError, match="HiLo layers"):
        select_hilo(model, layer=99)
    last = select_hilo(model, layer=-1, need="lofi")[2]
    assert last.ws == 1
    with pytest.raises(ValueError, match="needs Hi-Fi and Lo-Fi"):
        select_hilo(model, layer=-1)
    with pytest.raises(ValueError, match="no HiLo layer"):
        select_hilo(create_model("swin_nano"))


@pytest.mark.parametrize("seed", range(4))
def test_hifi_carries_the_high_frequencies(seed):
    # The paper's claim, on a constructed case: tokens with fine texture and smooth waves, projections
    # set to identities so both branches attend by similarity. Hi-Fi's full-resolution values keep
    # the texture; Lo-Fi's values are window averages, so its output is smooth.
    m = _identity_hilo()
    x = _texture_and_gradient(16, 64, seed)
    with HiLoCapture(m) as cap, torch.no_grad():
        m(x)
    hi, lo = high_frequency_share(cap.hifi), high_frequency_share(cap.lofi)
    assert hi > lo + 0.15, (hi, lo)
    # the model-level API measures the same thing
    branches = hilo_branches(m, x)
    assert branches.hifi_share == pytest.approx(hi) and branches.lofi_share == pytest.approx(lo)


def test_without_texture_neither_branch_has_high_frequencies():
    m = _identity_hilo()
    x = _texture_and_gradient(16, 64, 0, texture=0.0)
    with HiLoCapture(m) as cap, torch.no_grad():
        m(x)
    assert high_frequency_share(cap.hifi) < 0.15 and high_frequency_share(cap.lofi) < 0.15


# --------------------------------------------------------------------------- attention maps
def test_lofi_attention_reproduces_the_lofi_output():
    torch.manual_seed(0)
    model = create_model("litv2_s", embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8]).eval()
    _, _, hilo = select_hilo(model)
    with HiLoCapture(hilo) as cap, torch.no_grad():
        model(torch.randn(1, 3, 72, 88))  # stage 2: 4 x 5 tokens, padded to 4 x 6, 2 x 3 pooled keys
    pos = (3, 4)
    w = lofi_attention(hilo, cap.lofi_source, pos)
    assert w.shape == (hilo.l_heads, 2, 3)
    torch.testing.assert_close(w.sum(dim=(1, 2)), torch.ones(hilo.l_heads))
    # weights times the pooled values, through l_proj, is what the branch computed at that position
    pooled = torch.nn.functional.avg_pool2d(cap.lofi_source.permute(0, 3, 1, 2), hilo.ws).permute(0, 2, 3, 1)
    with torch.no_grad():
        v = hilo.l_kv(pooled)[..., hilo.l_dim:].reshape(6, hilo.l_heads, hilo.head_dim)
        out = hilo.l_proj(torch.einsum("hn,nhd->hd", w.reshape(hilo.l_heads, 6), v).reshape(-1))
    torch.testing.assert_close(out, cap.lofi[0, pos[0], pos[1]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shift, pos", [(0, (5, 9)), (3, (1, 2)), (3, (12, 13)), (3, (6, 13))])
def test_window_attention_map_reproduces_the_module(shift, pos):
    torch.manual_seed(0)
    attn = WindowAttention(24, 3, window_size=7, shift_size=shift).eval()
    x = torch.randn(1, 14, 14, 24)
    w = window_attention(attn, x, pos)
    assert w.shape == (3, 14, 14)
    torch.testing.assert_close(w.sum(dim=(1, 2)), torch.ones(3))
    assert int((w[0] > 0).sum()) <= 49 and w[:, pos[0], pos[1]].gt(0).all()
    with torch.no_grad():
        v = attn.qkv(x)[0, ..., 48:].reshape(14, 14, 3, 8)
        mixed = torch.einsum("hyx,yxhd->hd", w, v).reshape(-1)
        torch.testing.assert_close(attn.proj(mixed), attn(x)[0, pos[0], pos[1]], atol=1e-5, rtol=1e-5)


def test_attention_map_per_family():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 56, 56)
    lit = attention_map(create_model("litv2_nano"), x, query=(0, 55))
    assert lit.kind == "lofi" and lit.tokens == (7, 7) and lit.query == (0, 6) and lit.cell == 3
    swin = create_model("swin_nano")
    amap = attention_map(swin, x, layer=1)
    assert amap.kind == "window" and amap.tokens == (28, 28) and amap.query == (14, 14)
    assert not any(m._forward_pre_hooks for m in swin.modules())  # the recording hook is removed
    with pytest.raises(ValueError, match="outside"):
        attention_map(swin, x, query=(56, 0))


# --------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    n = 64
    yy, xx = np.mgrid[0:n, 0:n] / n
    img = np.stack([xx, yy, 1 - xx * yy], -1)
    img[:, : n // 2] = np.random.default_rng(0).random((n, n // 2, 3))
    path = tmp_path_factory.mktemp("viz") / "picture.png"
    Image.fromarray((img * 255).astype(np.uint8)).convert("P").save(path)
    return path


def _is_png(path):
    with Image.open(path) as im:
        return im.format == "PNG" and im.size[0] > 300


def test_cli_viz_hilo(picture, tmp_path, capsys):
    out = tmp_path / "hilo.png"
    rc = main(["viz", "hilo", str(picture), "--model", "litv2_nano", "--img-size", "56", "--output", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and _is_png(out)
    assert "Hi-Fi" in text and "Lo-Fi" in text and f"wrote {out}" in text
    assert [p.name for p in tmp_path.iterdir()] == ["hilo.png"]  # written atomically
    assert main(["viz", "hilo", str(picture), "--model", "swin_nano", "--output", str(out)]) == 2
    assert "no HiLo layer" in capsys.readouterr().err
    assert main(["viz", "hilo", str(tmp_path / "none.png"), "--model", "litv2_nano", "--output", str(out)]) == 2
    assert "none.png" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["litv2_nano", "swin_nano"])
def test_cli_viz_attention(picture, tmp_path, capsys, model):
    out = tmp_path / f"{model}.png"
    rc = main(["viz", "attention", str(picture), "--model", model, "--img-size", "56", "--query", "10", "40",
               "--output", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and _is_png(out)
    assert ("Lo-Fi" if model.startswith("litv2") else "window attention") in text
