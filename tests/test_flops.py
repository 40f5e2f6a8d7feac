"""Analytic FLOPs against the official formula and against the ops actually executed."""

import pytest
import torch

from hilovit import Attention, HiLo, SpatialReductionAttention, WindowAttention
from hilovit.flops import analytic_flops, count_flops, count_flops_by_op


def test_hilo_official_example():
    assert HiLo(dim=384, num_heads=12, window_size=2, alpha=0.5).flops(14, 14) == 83467776


def official_hilo_flops(m: HiLo, H: int) -> int:
    """The official (square) formula transcribed term by term."""
    Hp = m.ws * -(-H // m.ws)
    Np = Hp * Hp
    hifi = Np * m.dim * m.h_dim * 3 + (Np / m.ws / m.ws) * (m.ws * m.ws) ** 2 * m.h_dim * 2 + Np * m.h_dim**2
    kv_len = (Hp // m.ws) ** 2
    lofi = Np * m.dim * m.l_dim + kv_len * m.dim * m.l_dim * 2 + Np * m.l_dim * kv_len * 2 + Np * m.l_dim**2
    return int(hifi + lofi)


@pytest.mark.parametrize("H", [7, 8, 14, 15])
@pytest.mark.parametrize("heads,ws,alpha", [(12, 2, 0.9), (4, 1, 0.5), (6, 4, 0.5), (3, 2, 0.0)])
def test_hilo_flops_equal_the_official_formula(H, heads, ws, alpha):
    m = HiLo(96, heads, window_size=ws, alpha=alpha)
    assert m.flops(H, H) == official_hilo_flops(m, H)


CASES = [
    (HiLo(64, 4, window_size=2, alpha=0.5), 14, 14),
    (HiLo(96, 3, window_size=2, alpha=0.9), 14, 20),
    (HiLo(64, 4, window_size=1), 8, 8),
    (HiLo(64, 4, window_size=4, alpha=0.0), 8, 12),
    (Attention(64, 4), 7, 9),
    (SpatialReductionAttention(64, 4, sr_ratio=2), 14, 14),
    (SpatialReductionAttention(64, 4, sr_ratio=4), 16, 8),
    (WindowAttention(64, 4, 7, 0), 14, 21),
    (WindowAttention(64, 4, 7, 3), 14, 14),
]


@pytest.mark.parametrize("m,H,W", CASES, ids=lambda v: type(v).__name__ if isinstance(v, torch.nn.Module) else str(v))
def test_analytic_equals_counted(m, H, W):
    x = torch.randn(1, H, W, m.dim)
    assert analytic_flops(m, H, W) == count_flops(m, x)


def test_counted_attention_is_counted_on_cpu():
    """The stock counter ignores the fused CPU attention kernel; ours counts it."""
    m = Attention(64, 4)
    by_op = count_flops_by_op(m, torch.randn(1, 7, 7, 64))
    attn = [v for k, v in by_op.items() if "attention" in k]
    assert attn and attn[0] == 2 * 49 * 49 * 64


def test_flop_counting_sees_the_plain_windows_and_inference_the_bands():
    """Under a FLOP counter the fast path stands aside, so HiLo's Hi-Fi branch cuts its windows out
    (counted == analytic); in inference a narrow map is attended a band of rows at a time, which also
    computes the masked cross-window products (band of 2 rows x W tokens vs 2x2 windows)."""
    from torch.utils.flop_counter import FlopCounterMode

    from hilovit.layers import fast

    m = HiLo(768, 12, window_size=2, alpha=0.9).eval()
    x = torch.randn(1, 14, 14, 768)
    assert count_flops(m, x) == m.flops(14, 14)
    with FlopCounterMode(display=False), torch.no_grad():
        assert "dispatch mode" in fast.why_not_fast(x)
    seen = []
    attention = fast.attention

    def spy(q, k, v, mask, *a):
        seen.append(tuple(k.shape[-2:]))
        return attention(q, k, v, mask, *a)

    import unittest.mock

    with unittest.mock.patch.object(fast, "attention", spy), torch.no_grad():
        m(x)
    assert (2 * 14, 64) in seen  # the Hi-Fi keys: one band of 2 rows x 14 columns
    seen.clear()
    with unittest.mock.patch.object(fast, "attention", spy), torch.no_grad(), fast.fast_inference(False):
        m(x)
    assert (4, 64) in seen and (28, 64) not in seen  # windows of 2x2 tokens


def test_padding_counts():
    """With padding, HiLo runs both branches on the padded map and crops, as the official detection
    code does: the executed count is the analytic one at the padded size. Window attention projects
    only the real tokens in ``proj``, so there the executed count is smaller."""
    m = HiLo(64, 4, window_size=4, alpha=0.5)
    assert count_flops(m, torch.randn(1, 5, 7, 64)) == m.flops(5, 7) == m.flops(8, 8)
    w = WindowAttention(64, 4, 7, 3)
    assert count_flops(w, torch.randn(1, 10, 10, 64)) < w.flops(10, 10)


def test_count_flops_rejects_non_modules():
    with pytest.raises(TypeError, match="nn.Module"):
        count_flops(lambda x: x, torch.randn(2))
    with pytest.raises(TypeError, match="flops"):
        analytic_flops(torch.nn.ReLU(), 3)
