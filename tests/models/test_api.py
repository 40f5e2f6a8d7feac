"""The shared model API over every registered model (as timm's tests/test_models.py sweeps its models).

Each registered config is built with its own stages, heads, windows and image size, but narrow and
shallow (``embed_dim=24``, which every registered head count divides, and two blocks per stage, so
Swin still alternates plain and shifted windows) so the sweep stays fast.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn as nn

import hilovit
from hilovit import create_model, list_models, load_checkpoint
from hilovit.models._api import FeatureInfo, feature_take_indices

# segmenters and detectors: tests/models/test_segmentation.py, test_retinanet.py, test_mask_rcnn.py
MODELS = [n for n in list_models() if not n.startswith(("semfpn_", "retinanet_", "mask_rcnn_"))]
H, W = 32, 64  # divisible by every reduction (patch 2 or 4, times 2 per stage)


def _fresh(name: str, **kw) -> nn.Module:
    for stages in (4, 3, 2):  # the registered number of stages: the one whose heads the depths fit
        torch.manual_seed(0)
        try:
            return create_model(name, embed_dim=24, depths=(2,) * stages, drop_path_rate=0.0, **kw).eval()
        except ValueError as e:
            if "one entry per stage" not in str(e):
                raise
    raise AssertionError(f"{name}: no number of stages fits its heads")


@functools.cache
def _built(name: str) -> nn.Module:
    return _fresh(name)


def _image(model: nn.Module, b: int = 2) -> torch.Tensor:
    return torch.randn(b, model.in_chans, H, W, generator=torch.Generator().manual_seed(1))


def test_every_family_is_swept():
    assert any(n.startswith("litv2") for n in MODELS) and any(n.startswith("swin") for n in MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward(name):
    model = _fresh(name).train()
    x = _image(model, 1)
    out = model(x)
    assert out.shape == (1, model.num_classes)
    out.logsumexp(-1).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["head.weight"] is not None and grads["patch_embed.proj.weight"] is not None
    assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)
    missing = [n for n, g in grads.items() if g is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"


@pytest.mark.parametrize("name", MODELS)
def test_feature_info_and_intermediates(name):
    model = _built(name)
    n = model.num_layers
    info = model.feature_info
    assert isinstance(info, FeatureInfo) and len(info) == n
    p = model.patch_size
    assert info.channels() == [24 * 2**i for i in range(n)]
    assert info.reduction() == [p * 2**i for i in range(n)]
    assert info.module_name() == [f"layers.{i}" for i in range(n)]
    assert info.channels(-1) == model.num_features
    for module in info.module_name():
        model.get_submodule(module)  # names a real module
    x = _image(model)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        feats = model.forward_features(x)
        logits = model(x)
        normed_last = model.forward_intermediates(x, indices=1, norm=True, output_fmt="NHWC", intermediates_only=True)
        first = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
    assert [tuple(t.shape) for t in inter] == [
        (2, c, H // r, W // r) for c, r in zip(info.channels(), info.reduction())
    ]
    torch.testing.assert_close(final, feats)  # the last stage after the final norm, unpooled
    torch.testing.assert_close(model.norm(inter[-1].permute(0, 2, 3, 1)), feats)
    torch.testing.assert_close(normed_last[0], feats)
    torch.testing.assert_close(first[0], inter[0])
    torch.testing.assert_close(model.forward_head(feats), logits)
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats.mean(dim=(1, 2)))


@pytest.mark.parametrize("name", MODELS)
def test_features_only_matches_intermediates(name):
    model = _built(name)
    n = model.num_layers
    with pytest.warns(UserWarning) if name.startswith("litv2") else _no_warning():
        fo = _fresh(name, features_only=True, out_indices=(1, -1))
        load_checkpoint(fo, model.state_dict())  # the classifier's weights: norm/head dropped
    assert fo.out_indices == (1, n - 1)
    assert fo.feature_info.channels() == [model.feature_info.channels(i) for i in (1, n - 1)]
    assert fo.feature_info.reduction() == [model.feature_info.reduction(i) for i in (1, n - 1)]
    assert isinstance(fo.get_classifier(), nn.Identity)
    x = _image(model)
    with torch.no_grad():
        maps = fo(x)
        inter = model.forward_intermediates(x, indices=[1, n - 1], intermediates_only=True)
    assert len(maps) == 2
    for i, got, ref in zip((1, n - 1), maps, inter):
        if name.startswith("litv2"):  # the official backbone's output norms norm{i}
            ref = getattr(fo, f"norm{i}")(ref.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(got, ref)
    with pytest.raises(ValueError, match="no classifier"):
        fo.reset_classifier(3)


class _no_warning:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


@pytest.mark.parametrize("name", MODELS)
def test_bad_indices_same_error_in_every_family(name):
    model = _built(name)
    n = model.num_layers
    x = _image(model, 1)
    for bad in ([n], [-n - 1], [0, n + 2]):
        with pytest.raises(ValueError, match=rf"every index must be an int in \[{-n}, {n}\) for {n} stages"):
            model.forward_intermediates(x, indices=bad)
    for bad in (0, n + 1):
        with pytest.raises(ValueError, match=rf"must be in \[1, {n}\]"):
            model.forward_intermediates(x, indices=bad)
    with pytest.raises(ValueError, match=r"out_indices=\(5,\)"):
        _fresh(name, features_only=True, out_indices=(5,))
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NLC")


@pytest.mark.parametrize("name", MODELS)
def test_reset_and_get_classifier(name):
    model = _fresh(name)
    head = model.get_classifier()
    assert isinstance(head, nn.Linear) and head.out_features == model.num_classes
    x = _image(model, 1)
    model.reset_classifier(7)
    assert isinstance(model.get_classifier(), nn.Linear) and model.get_classifier().out_features == 7
    assert model.pretrained_cfg["num_classes"] == 7 and model.num_classes == 7
    w = model.get_classifier().weight
    assert float(w.detach().std()) < 0.05 and torch.count_nonzero(model.get_classifier().bias) == 0  # trunc normal 0.02
    with torch.no_grad():
        assert model(x).shape == (1, 7)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    with torch.no_grad():
        assert model(x).shape == (1, model.num_features)
    model.reset_classifier(0, global_pool="")
    with torch.no_grad():
        assert model(x).shape == (1, H // model.feature_info.reduction(-1), W // model.feature_info.reduction(-1),
                                  model.num_features)
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="num_classes"):
            model.reset_classifier(bad)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, global_pool="catavgmax")


@pytest.mark.parametrize("name", ["litv2_nano", "swin_nano"])
def test_input_dtype_errors_name_the_dtype(name):
    model = _built(name)
    x = _image(model, 1)
    with pytest.raises(TypeError, match="float64.*float32"):
        model(x.double())
    with pytest.raises(TypeError, match="uint8"):
        model((x * 50).clamp(0, 255).to(torch.uint8))
    with pytest.raises(TypeError, match="list"):
        model([x])
    # under autocast another float dtype is the autocast's business
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x.to(torch.bfloat16)).shape == (1, model.num_classes)
    # a model in float64 takes float64
    double = _fresh(name).double()
    with torch.no_grad():
        assert double(x.double()).dtype == torch.float64


def test_feature_take_indices_semantics():
    assert feature_take_indices(4) == ([0, 1, 2, 3], 3)
    assert feature_take_indices(4, 2) == ([2, 3], 3)
    assert feature_take_indices(4, [-1, 0]) == ([0, 3], 3)
    assert feature_take_indices(4, (1, 1, -3)) == ([1], 1)
    for bad in ([4], [-5], 5, 0, [], "1", [1.0], True):
        with pytest.raises(ValueError):
            feature_take_indices(4, bad)


def test_feature_info_is_the_list_it_was():
    info = hilovit.create_model("swin_nano", features_only=True, out_indices=(0, 2)).feature_info
    assert [e["num_chs"] for e in info] == info.channels() == [48, 192]
    assert info.reduction([1]) == [8] and info.module_name(0) == "layers.0"
    assert info.get_dicts(["stage"]) == [{"stage": 0}, {"stage": 2}]
    assert math.prod(info.reduction()) == 16


@pytest.mark.parametrize("family, kwargs, message", [
    ("litv2", dict(embed_dim=0), "embed_dim=0: expected a positive integer"),
    ("litv2", dict(depths=[1, 1, True, 1]), "depths[2]=True: expected a positive integer"),
    ("litv2", dict(num_heads=[1, 2, 0, 8]), "num_heads[2]=0: expected a positive integer"),
    ("litv2", dict(drop_path_rate=1.0), "drop_path_rate=1.0: expected a fraction in [0, 1)"),
    ("litv2", dict(num_classes=-1), "num_classes=-1: expected an integer >= 0"),
    ("swin", dict(window_size=2.0), "window_size=2.0: expected a positive integer"),
])
def test_constructor_checks_name_the_argument_the_value_and_what_was_expected(family, kwargs, message):
    from hilovit.models.litv2 import LITv2
    from hilovit.models.swin import SwinTransformer

    cls = LITv2 if family == "litv2" else SwinTransformer
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    assert str(info.value) == message
