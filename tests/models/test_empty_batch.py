"""An empty batch (B = 0) gives an empty output of the right shape, as torch modules do: every token mixer, the blocks,
the backbones and every family of registered model, in float32 and under bfloat16 autocast inference."""

import functools
import warnings

import pytest
import torch

from hilovit import create_model
from hilovit.layers.attention import Attention, SpatialReductionAttention
from hilovit.layers.hilo import HiLo
from hilovit.layers.window_attention import WindowAttention
from hilovit.layers.windows import window_partition, window_reverse
from hilovit.models.litv2_backbone import LITv2Backbone
from hilovit.models.litv2_blocks import ConvFFNBlock, HiLoBlock
from hilovit.models.swin_blocks import SwinTransformerBlock

MODES = [pytest.param(None, id="float32"), pytest.param(torch.bfloat16, id="bf16-autocast")]


def _run(module, x, dtype, **kwargs):
    module.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        return module(x, **kwargs)


def _expect(out, shape, dtype, residual=False):
    assert tuple(out.shape) == shape
    if residual:  # a block's residual stream stays float32 unless the fast path carries it in bfloat16
        assert out.dtype in (torch.float32, dtype or torch.float32)
    else:
        assert out.dtype == (dtype or torch.float32)


MIXERS = {
    "hilo": lambda: HiLo(32, num_heads=4, window_size=2, alpha=0.5),
    "hilo-lofi-only": lambda: HiLo(32, num_heads=4, window_size=2, alpha=1.0),
    "hilo-hifi-only": lambda: HiLo(32, num_heads=4, window_size=2, alpha=0.0),
    "msa": lambda: Attention(32, num_heads=4),
    "sra": lambda: SpatialReductionAttention(32, num_heads=4, sr_ratio=2),
    "w-msa": lambda: WindowAttention(32, num_heads=4, window_size=4),
    "sw-msa": lambda: WindowAttention(32, num_heads=4, window_size=4, shift_size=2),
    "swin-block": lambda: SwinTransformerBlock(32, (9, 10), num_heads=4, window_size=4, shift_size=2),
    "hilo-block": lambda: HiLoBlock(32, num_heads=4, local_ws=2, alpha=0.5),
    "convffn-block": lambda: ConvFFNBlock(32),
}


@pytest.mark.parametrize("dtype", MODES)
@pytest.mark.parametrize("name", list(MIXERS))
def test_mixers_and_blocks(name, dtype):
    module = MIXERS[name]()
    x = torch.randn(0, 9, 10, 32)  # sides that need padding to the windows
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty batch must not switch a fast kernel off (it warns when it does)
        _expect(_run(module, x, dtype), (0, 9, 10, 32), dtype, residual=name.endswith("block"))
    if isinstance(module, HiLo):  # the official call form (B, N, C) with H, W
        _expect(_run(module, x.reshape(0, 90, 32), dtype, H=9, W=10), (0, 90, 32), dtype)


def test_window_partition_and_reverse_of_nothing():
    windows = window_partition(torch.randn(0, 8, 12, 5), 4)
    assert windows.shape == (0, 4, 4, 5)
    assert window_reverse(windows, 4, 8, 12).shape == (0, 8, 12, 5)


MODELS = {  # name -> (kwargs, input channels and size, expected output shape for B = 0)
    "litv2_nano": ({}, (3, 40, 44), (0, 10)),
    "litv2_s": ({"num_classes": 7}, (3, 64, 64), (0, 7)),
    "swin_nano": ({}, (3, 40, 44), (0, 10)),
    "swin_t": ({"num_classes": 7}, (3, 64, 64), (0, 7)),
    "semfpn_litv2_nano": ({"num_classes": 4}, (1, 40, 44), (0, 4, 40, 44)),
    "semfpn_swin_t": ({"num_classes": 4}, (3, 64, 72), (0, 4, 64, 72)),
}


@functools.cache
def _model(name):
    return create_model(name, **MODELS[name][0]).eval()


@pytest.mark.parametrize("dtype", MODES)
@pytest.mark.parametrize("name", list(MODELS))
def test_models(name, dtype):
    _, (c, h, w), shape = MODELS[name]
    model = _model(name)
    _expect(_run(model, torch.randn(0, c, h, w), dtype), shape, dtype)
    if hasattr(model, "forward_features") and not name.startswith("semfpn"):
        with torch.inference_mode():
            feats = model.eval().forward_features(torch.randn(0, c, h, w))
        assert feats.shape[0] == 0 and feats.numel() == 0


@pytest.mark.parametrize("dtype", MODES)
def test_litv2_backbone(dtype):
    backbone = LITv2Backbone(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        maps = backbone.eval()(torch.randn(0, 3, 64, 72))
    assert [tuple(m.shape) for m in maps] == [(0, 32, 16, 18), (0, 64, 8, 9), (0, 128, 4, 4), (0, 256, 2, 2)]
