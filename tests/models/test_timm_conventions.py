"""timm's create_model keywords and pretrained_cfg fields: checkpoint_path, pretrained_cfg (a tag or a
dict), global_pool, drop_rate, the no-op scriptable/exportable/no_jit, the fields users read and
model.default_cfg. Pooling and the head are checked against NumPy written here."""

import numpy as np
import pytest
import torch

from hilovit import create_model, list_models
from hilovit.data.constants import COCO_CLASSES
from hilovit.models._api import CFG_FIELDS
from hilovit.models.checkpoint import CheckpointError
from hilovit.models.pretrained import published

SMALL = ["litv2_nano", "swin_nano"]


def _small(name, **kwargs):
    torch.manual_seed(0)
    return create_model(name, num_classes=3, img_size=64, **kwargs).eval()


def _reference_head(feat: np.ndarray, weight: np.ndarray, bias: np.ndarray, pool: str) -> np.ndarray:
    """timm's pooling of a (B, h, w, C) map written as loops over the batch and channels, then the linear head."""
    B, h, w, C = feat.shape
    if pool == "":
        return feat @ weight.T + bias
    pooled = np.zeros((B, C))
    for b in range(B):
        for c in range(C):
            values = [feat[b, i, j, c] for i in range(h) for j in range(w)]
            avg, top = sum(values) / len(values), max(values)
            pooled[b, c] = {"avg": avg, "max": top, "avgmax": 0.5 * (avg + top)}[pool]
    return pooled @ weight.T + bias


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("pool", ["avg", "max", "avgmax", ""])
def test_global_pool_as_timm(name, pool):
    model = _small(name, global_pool=pool)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feat = model.forward_features(x)
        out = model(x)
    weight, bias = model.head.weight.detach().double().numpy(), model.head.bias.detach().double().numpy()
    ref = _reference_head(feat.double().numpy(), weight, bias, pool)
    assert out.shape == ref.shape  # '' keeps the map: (B, h, w, num_classes), as timm's ClassifierHead
    np.testing.assert_allclose(out.double().numpy(), ref, rtol=1e-4, atol=1e-5)
    if pool:
        assert model.forward_head(feat, pre_logits=True).shape == (2, model.num_features)
    else:
        assert model.forward_head(feat, pre_logits=True).shape == feat.shape


def test_bad_global_pool_is_refused_by_name():
    for bad in ("catavgmax", "mean", 3):
        with pytest.raises(ValueError, match="global_pool"):
            create_model("litv2_nano", num_classes=3, global_pool=bad)
    model = _small("swin_nano")
    with pytest.raises(ValueError, match="global_pool.*'catavgmax'"):
        model.reset_classifier(3, global_pool="catavgmax")
    model.reset_classifier(3, global_pool="max")
    assert model.global_pool == "max"
    assert create_model("litv2_nano", num_classes=3, global_pool=None).global_pool == "avg"  # None: the default


@pytest.mark.parametrize("name", SMALL)
def test_drop_rate_is_dropout_before_the_classifier(name):
    model = _small(name, drop_rate=0.5)
    assert model.head_drop.p == 0.5 and model.pos_drop.p == 0.0  # the blocks keep no dropout
    assert _small(name, proj_drop_rate=0.125).pos_drop.p == 0.125  # the official in-block drop_rate
    feat = torch.randn(4, 2, 2, model.num_features)
    pooled = feat.mean(dim=(1, 2))
    torch.manual_seed(1)
    dropped = model.train().forward_head(feat, pre_logits=True)
    kept = dropped != 0
    assert 0 < kept.sum() < kept.numel()  # some features dropped, some kept
    torch.testing.assert_close(dropped[kept], 2 * pooled[kept])  # kept ones scaled by 1 / (1 - p)
    torch.testing.assert_close(model.eval().forward_head(feat, pre_logits=True), pooled)
    with pytest.raises(ValueError, match="drop_rate"):
        create_model(name, num_classes=3, drop_rate=1.5)
    with pytest.raises(ValueError, match="give one"):
        create_model(name, num_classes=3, drop_rate=0.1, head_drop_rate=0.2)


def test_checkpoint_path_loads_strictly_after_building(tmp_path):
    source = _small("litv2_nano")
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(5)
    model = create_model("litv2_nano", num_classes=3, img_size=64, checkpoint_path=path)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(CheckpointError, match="head"):  # strict: a classifier of another size is an error
        create_model("litv2_nano", num_classes=5, checkpoint_path=str(path))
    with pytest.raises(FileNotFoundError, match="checkpoint_path"):
        create_model("litv2_nano", checkpoint_path=tmp_path / "missing.pth")
    with pytest.raises(TypeError, match="checkpoint_path"):
        create_model("litv2_nano", checkpoint_path=3)
    assert create_model("litv2_nano", num_classes=3, checkpoint_path="").num_classes == 3  # timm's default ''


def test_pretrained_cfg_tag_takes_priority_and_dict_overlays():
    with torch.device("meta"):
        by_tag = create_model("swin_t", pretrained_cfg="ms_in22k_ft_in1k")
        over_name = create_model("swin_t.ms_in1k", pretrained_cfg="ms_in22k_ft_in1k")
        plain = create_model("litv2_nano")
        laid = create_model("litv2_nano", pretrained_cfg={"crop_pct": 0.95, "label_names": ("a", "b")},
                            pretrained_cfg_overlay={"interpolation": "bilinear"})
    for model in (by_tag, over_name):
        assert model.pretrained_cfg["tag"] == "ms_in22k_ft_in1k"
        assert model.pretrained_cfg["hf_hub_id"] == "timm/swin_tiny_patch4_window7_224.ms_in22k_ft_in1k"
    assert laid.pretrained_cfg["crop_pct"] == 0.95 and laid.pretrained_cfg["label_names"] == ("a", "b")
    assert laid.pretrained_cfg["interpolation"] == "bilinear"
    assert laid.pretrained_cfg["mean"] == plain.pretrained_cfg["mean"]  # keys it does not name are kept
    with pytest.raises(ValueError, match="unknown pretrained tag 'nope'"):
        create_model("swin_t", pretrained_cfg="nope")
    with pytest.raises(TypeError, match="pretrained_cfg"):
        create_model("swin_t", pretrained_cfg=3)
    with pytest.raises(ValueError, match="crop_mode"):
        create_model("litv2_nano", pretrained_cfg={"crop_mode": "border"})


def test_pretrained_cfg_file_is_where_pretrained_loads_from(tmp_path):
    source = _small("swin_nano")
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    model = create_model("swin_nano", num_classes=3, img_size=64, pretrained=True, pretrained_cfg={"file": str(path)})
    assert torch.equal(model.head.weight, source.head.weight)


def test_scriptable_exportable_no_jit_are_accepted_no_ops():
    torch.manual_seed(0)
    plain = create_model("litv2_nano", num_classes=3)
    torch.manual_seed(0)
    flagged = create_model("litv2_nano", num_classes=3, scriptable=True, exportable=True, no_jit=True)
    assert plain.state_dict().keys() == flagged.state_dict().keys()
    assert all(torch.equal(v, flagged.state_dict()[k]) for k, v in plain.state_dict().items())
    with pytest.raises(TypeError, match="scriptable"):
        create_model("litv2_nano", scriptable="yes")


def test_every_model_carries_the_cfg_fields_users_read():
    for name in list_models():
        with torch.device("meta"):
            model = create_model(name)
        cfg = model.pretrained_cfg
        missing = [k for k in CFG_FIELDS if k not in cfg]
        assert not missing, (name, missing)
        assert cfg["architecture"] == name
        assert cfg["license"] == ("apache-2.0" if "litv2" in name else "mit"), name
        weights = published(name)
        assert cfg["tag"] == (weights[0].tag if weights else None), name
        if name.startswith(("retinanet", "mask_rcnn")):  # a detector's class names are its label names
            assert cfg["label_names"] == tuple(cfg["class_names"])
            assert "nano" in name or cfg["label_names"] == COCO_CLASSES
        assert model.default_cfg is model.pretrained_cfg
    with torch.device("meta"):
        alias = create_model("swin_base_patch4_window12_384")
    assert alias.pretrained_cfg["architecture"] == "swin_b_384" and alias.pretrained_cfg["crop_mode"] == "squash"
    with pytest.raises(AttributeError):
        alias.default_cfg = {}
