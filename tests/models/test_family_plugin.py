"""A new backbone family is one module: a toy family written to one file, imported, and then usable by
name everywhere (classifier, segmentor, detector, checkpoint errors, sizes from a checkpoint) without
touching any other file; the registries are clean again afterwards."""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import pytest
import torch

import hilovit
from hilovit.models import checkpoint as ckpt
from hilovit.models.checkpoint import CheckpointError, load_checkpoint, sizes_from_checkpoint
from hilovit.models.detector import _retinanet_config
from hilovit.models.pretrained import load_pretrained
from hilovit.models.registry import (
    dense_backbones,
    list_models,
    model_task,
    unregister_dense_backbone,
    unregister_model,
)

# The whole family: a classifier and its dense-prediction backbone, registered from this one file.
TOY_FAMILY = '''
import torch
import torch.nn as nn

from hilovit.models.checkpoint import register_family
from hilovit.models.registry import register_dense_backbone, register_model


class ToyStage(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.toy_mixer = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)

    def forward(self, x):
        return torch.relu(self.toy_mixer(x))


class ToyNet(nn.Module):
    """A 4-stage hierarchical net: stride-4 stem, then stages at strides 4, 8, 16, 32."""

    def __init__(self, in_chans=3, embed_dim=8, num_classes=10, out_indices=(0, 1, 2, 3), features_only=False):
        super().__init__()
        self.in_chans, self.embed_dim, self.features_only = in_chans, embed_dim, features_only
        self.out_indices = tuple(out_indices)
        self.out_channels = [embed_dim * 2**i for i in self.out_indices]
        self.stem = nn.Conv2d(in_chans, embed_dim, 4, stride=4)
        dims = [embed_dim * 2**i for i in range(4)]
        self.stages = nn.ModuleList(ToyStage(dims[max(i - 1, 0)], dims[i], 1 if i == 0 else 2) for i in range(4))
        if features_only:
            for i in self.out_indices:
                self.add_module(f"norm{i}", nn.GroupNorm(1, dims[i]))
        else:
            self.norm = nn.GroupNorm(1, dims[-1])
            self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        x, outs = self.stem(x), []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if self.features_only and i in self.out_indices:
                outs.append(getattr(self, f"norm{i}")(x))
        if self.features_only:
            return tuple(outs)
        return self.head(self.norm(x).mean((2, 3)))


class ToyDense(ToyNet):
    def __init__(self, in_chans=3, embed_dim=8, out_indices=(0, 1, 2, 3)):
        super().__init__(in_chans, embed_dim, 0, out_indices, features_only=True)


@register_model
def toy_tiny(**kwargs):
    return ToyNet(**kwargs)


register_dense_backbone("Toy", ToyDense)
register_family("a Toy", markers=("toy_mixer",), stem="stem.weight")
'''


@pytest.fixture
def toy(tmp_path):
    """The toy family imported from its one file; everything it registered is removed afterwards."""
    assert "toy_tiny" not in list_models() and "Toy" not in dense_backbones("segmentation")
    (tmp_path / "toy_family.py").write_text(textwrap.dedent(TOY_FAMILY))
    spec = importlib.util.spec_from_file_location("toy_family", tmp_path / "toy_family.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_family"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("toy_family", None)
        if "toy_tiny" in list_models():
            unregister_model("toy_tiny")
        if "Toy" in dense_backbones("segmentation") or "Toy" in dense_backbones("detection"):
            unregister_dense_backbone("Toy")
        if "a Toy" in ckpt._FAMILIES:
            ckpt.unregister_family("a Toy")
    assert "toy_tiny" not in list_models()
    assert "Toy" not in dense_backbones("segmentation") and "Toy" not in dense_backbones("detection")
    assert "a Toy" not in ckpt._FAMILIES


def _seg_cfg(num_classes=5):
    return dict(type="EncoderDecoder",
                backbone=dict(type="Toy", embed_dim=8),
                neck=dict(type="FPN", in_channels=[8, 16, 32, 64], out_channels=16, num_outs=4),
                decode_head=dict(type="FPNHead", in_channels=[16] * 4, in_index=[0, 1, 2, 3],
                                 feature_strides=[4, 8, 16, 32], channels=8, num_classes=num_classes),
                test_cfg=dict(mode="whole"))


def test_classifier_by_name(toy):
    model = hilovit.create_model("toy_tiny", num_classes=7).eval()
    assert isinstance(model, toy.ToyNet)
    assert model_task("toy_tiny") == "classification"
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        out = model(x)
        # the head on the mean of the last stage's normalised map, computed here by hand
        feats = model.stem(x)
        for stage in model.stages:
            feats = torch.relu(torch.nn.functional.conv2d(feats, stage.toy_mixer.weight, stage.toy_mixer.bias,
                                                          stride=stage.toy_mixer.stride, padding=1))
        want = model.head(model.norm(feats).mean((2, 3)))
    assert out.shape == (2, 7)
    torch.testing.assert_close(out, want)


def test_segmentor_with_the_new_backbone_type(toy):
    model = hilovit.build_segmentor(_seg_cfg()).eval()
    assert type(model.backbone) is toy.ToyDense
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 96))
    assert logits.shape == (1, 5, 64, 96) and torch.isfinite(logits).all()
    with pytest.raises(TypeError, match=r"backbone \(type='Toy'\) got unknown argument\(s\) \['depths'\]"):
        hilovit.build_segmentor(dict(_seg_cfg(), backbone=dict(type="Toy", depths=[1, 1, 1, 1])))


def test_detector_with_the_new_backbone_type(toy):
    cfg = _retinanet_config(dict(type="Toy", embed_dim=8, out_indices=[1, 2, 3]), [16, 32, 64], start_level=0,
                            num_outs=4, out_channels=16, num_classes=3, stacked_convs=1,
                            anchors=dict(octave_base_scale=4, scales_per_octave=1, ratios=[1.0],
                                         strides=[8, 16, 32, 64]))
    model = hilovit.build_detector(cfg).eval()
    assert type(model.backbone) is toy.ToyDense
    images = torch.randint(0, 256, (2, 3, 64, 80), dtype=torch.uint8)
    results = model.predict(images, resize=False)
    assert len(results) == 2
    for r in results:
        assert r["boxes"].shape[1:] == (4,) and r["boxes"].shape[0] == r["scores"].shape[0] == r["labels"].shape[0]
        assert ((r["labels"] >= 0) & (r["labels"] < 3)).all()
    with pytest.raises(ValueError, match=r"neck in_channels \[8, 16, 32\] do not match the backbone's output "
                                         r"channels \[16, 32, 64\]"):
        hilovit.build_detector(dict(cfg, neck=dict(cfg["neck"], in_channels=[8, 16, 32])))


def test_checkpoints_name_the_family_and_its_stem(toy):
    toy_sd = hilovit.create_model("toy_tiny", in_chans=1, num_classes=4).state_dict()
    with pytest.raises(CheckpointError, match=r"does not fit LITv2 \(it looks like a Toy checkpoint\)"):
        load_checkpoint(hilovit.create_model("litv2_nano"), toy_sd)
    lit_sd = hilovit.create_model("litv2_nano").state_dict()
    with pytest.raises(CheckpointError, match=r"does not fit ToyNet \(it looks like a LITv2 checkpoint\)"):
        load_checkpoint(hilovit.create_model("toy_tiny"), lit_sd)
    # the declared stem gives the input channels, bare or under a segmentor's "backbone."
    assert sizes_from_checkpoint(toy_sd) == {"num_classes": 4, "in_chans": 1}
    seg_sd = hilovit.build_segmentor(dict(_seg_cfg(), backbone=dict(type="Toy", in_chans=2))).state_dict()
    assert sizes_from_checkpoint(seg_sd)["in_chans"] == 2


def test_classifier_weights_move_into_the_segmentor_backbone(toy):
    classifier = hilovit.create_model("toy_tiny")
    seg = hilovit.build_segmentor(_seg_cfg())
    with pytest.warns(UserWarning, match=r"backbone loaded from the checkpoint .* initialised afresh: "
                                         r"backbone\.norm0, backbone\.norm1, backbone\.norm2, backbone\.norm3"):
        load_pretrained(seg, classifier.state_dict())
    for key, value in classifier.state_dict().items():
        if key.startswith(("stem.", "stages.")):
            torch.testing.assert_close(seg.state_dict()["backbone." + key], value, rtol=0, atol=0)
