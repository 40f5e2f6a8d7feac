"""The table of published weights against the official tables, timm's default tags, and the
evaluation crop of the 384 models (``crop_mode='squash'``).

OFFICIAL is written here from the official READMEs: README.md of ziplab/LITv2 (release v1.0: the
ImageNet-1K table; release v1.1: the LITv2-S alpha series) and MODELHUB.md of
microsoft/Swin-Transformer (Swin-V1 ImageNet-1K / ImageNet-22K models: the "1K model" column with
its acc@1, the "22K model" column without an ImageNet-1k accuracy). TIMM_SWIN_CFGS is the order of
timm's ``default_cfgs`` in timm/models/swin_transformer.py, whose first tag per name is timm's default.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hilovit import create_model
from hilovit.data import ImageFolderDataset, resize_center_crop
from hilovit.data.folders import preprocess_image
from hilovit.models.pretrained import _TABLE, get_pretrained
from hilovit.models.registry import resolve_name

LIT = "https://github.com/ziplab/LITv2/releases/download/"
SWIN = "https://github.com/SwinTransformer/storage/releases/download/"
OFFICIAL = {
    "litv2_s.in1k": (LIT + "v1.0/litv2_s.pth", 82.0),
    "litv2_m.in1k": (LIT + "v1.0/litv2_m.pth", 83.3),
    "litv2_b.in1k": (LIT + "v1.0/litv2_b.pth", 83.6),
    "litv2_b_384.in1k": (LIT + "v1.0/litv2_b_384.pth", 84.7),
    "litv2_s.alpha_0": (LIT + "v1.1/alpha_0.pth", 81.16),
    "litv2_s.alpha_0_2": (LIT + "v1.1/alpha_0.2.pth", 81.89),
    "litv2_s.alpha_0_4": (LIT + "v1.1/alpha_0.4.pth", 81.81),
    "litv2_s.alpha_0_5": (LIT + "v1.1/alpha_0.5.pth", 81.88),
    "litv2_s.alpha_0_7": (LIT + "v1.1/alpha_0.7.pth", 81.94),
    "litv2_s.alpha_0_9": (LIT + "v1.1/alpha_0.9.pth", 82.03),
    "litv2_s.alpha_1": (LIT + "v1.1/alpha_1.pth", 81.89),
    "swin_t.ms_in1k": (SWIN + "v1.0.0/swin_tiny_patch4_window7_224.pth", 81.2),
    "swin_s.ms_in1k": (SWIN + "v1.0.0/swin_small_patch4_window7_224.pth", 83.2),
    "swin_b.ms_in1k": (SWIN + "v1.0.0/swin_base_patch4_window7_224.pth", 83.5),
    "swin_b_384.ms_in1k": (SWIN + "v1.0.0/swin_base_patch4_window12_384.pth", 84.5),
    "swin_t.ms_in22k": (SWIN + "v1.0.8/swin_tiny_patch4_window7_224_22k.pth", None),
    "swin_t.ms_in22k_ft_in1k": (SWIN + "v1.0.8/swin_tiny_patch4_window7_224_22kto1k_finetune.pth", 80.9),
    "swin_s.ms_in22k": (SWIN + "v1.0.8/swin_small_patch4_window7_224_22k.pth", None),
    "swin_s.ms_in22k_ft_in1k": (SWIN + "v1.0.8/swin_small_patch4_window7_224_22kto1k_finetune.pth", 83.2),
    "swin_b.ms_in22k": (SWIN + "v1.0.0/swin_base_patch4_window7_224_22k.pth", None),
    "swin_b.ms_in22k_ft_in1k": (SWIN + "v1.0.0/swin_base_patch4_window7_224_22kto1k.pth", 85.2),
    "swin_b_384.ms_in22k": (SWIN + "v1.0.0/swin_base_patch4_window12_384_22k.pth", None),
    "swin_b_384.ms_in22k_ft_in1k": (SWIN + "v1.0.0/swin_base_patch4_window12_384_22kto1k.pth", 86.4),
    "swin_l.ms_in22k": (SWIN + "v1.0.0/swin_large_patch4_window7_224_22k.pth", None),
    "swin_l.ms_in22k_ft_in1k": (SWIN + "v1.0.0/swin_large_patch4_window7_224_22kto1k.pth", 86.3),
    "swin_l_384.ms_in22k": (SWIN + "v1.0.0/swin_large_patch4_window12_384_22k.pth", None),
    "swin_l_384.ms_in22k_ft_in1k": (SWIN + "v1.0.0/swin_large_patch4_window12_384_22kto1k.pth", 87.3),
}
TIMM_SWIN_CFGS = [
    "swin_small_patch4_window7_224.ms_in22k_ft_in1k", "swin_base_patch4_window7_224.ms_in22k_ft_in1k",
    "swin_base_patch4_window12_384.ms_in22k_ft_in1k", "swin_large_patch4_window7_224.ms_in22k_ft_in1k",
    "swin_large_patch4_window12_384.ms_in22k_ft_in1k", "swin_tiny_patch4_window7_224.ms_in1k",
    "swin_small_patch4_window7_224.ms_in1k", "swin_base_patch4_window7_224.ms_in1k",
    "swin_base_patch4_window12_384.ms_in1k", "swin_tiny_patch4_window7_224.ms_in22k_ft_in1k",
    "swin_tiny_patch4_window7_224.ms_in22k", "swin_small_patch4_window7_224.ms_in22k",
    "swin_base_patch4_window7_224.ms_in22k", "swin_base_patch4_window12_384.ms_in22k",
    "swin_large_patch4_window7_224.ms_in22k", "swin_large_patch4_window12_384.ms_in22k",
]


# The dense-prediction files: ziplab/LITv2 segmentation/README.md (ADE20K mIoU) and detection/README.md
# (COCO box AP), release v1.0.
OFFICIAL_DENSE = {
    "semfpn_litv2_s.ade20k": (LIT + "v1.0/litv2_s_fpn_r50_512x512_80k_ade20k.pth", {"miou": 44.3}),
    "semfpn_litv2_m.ade20k": (LIT + "v1.0/litv2_m_fpn_r50_512x512_80k_ade20k.pth", {"miou": 45.7}),
    "semfpn_litv2_b.ade20k": (LIT + "v1.0/litv2_b_fpn_r50_512x512_80k_ade20k.pth", {"miou": 47.2}),
    "retinanet_litv2_s.coco": (LIT + "v1.0/retinanet_litv2_s_fpn_1x_coco.pth", {"box_ap": 44.0}),
    "retinanet_litv2_m.coco": (LIT + "v1.0/retinanet_litv2_m_fpn_1x_coco.pth", {"box_ap": 46.0}),
    "retinanet_litv2_b.coco": (LIT + "v1.0/retinanet_litv2_b_fpn_1x_coco.pth", {"box_ap": 46.7}),
    "retinanet_litv2_s_ws4.coco": (LIT + "v1.0/retinanet_litv2_s_fpn_1x_coco_ws_4.pth", {"box_ap": 43.7}),
    "retinanet_litv2_m_ws4.coco": (LIT + "v1.0/retinanet_litv2_m_fpn_1x_coco_ws_4.pth", {"box_ap": 45.8}),
    "retinanet_litv2_b_ws4.coco": (LIT + "v1.0/retinanet_litv2_b_fpn_1x_coco_ws_4.pth", {"box_ap": 46.3}),
    "mask_rcnn_litv2_s.coco": (LIT + "v1.0/mask_rcnn_litv2_s_fpn_1x_coco.pth", {"box_ap": 44.9, "mask_ap": 40.8}),
    "mask_rcnn_litv2_m.coco": (LIT + "v1.0/mask_rcnn_litv2_m_fpn_1x_coco.pth", {"box_ap": 46.8, "mask_ap": 42.3}),
    "mask_rcnn_litv2_b.coco": (LIT + "v1.0/mask_rcnn_litv2_b_fpn_1x_coco.pth", {"box_ap": 47.3, "mask_ap": 42.6}),
    "mask_rcnn_litv2_s_ws4.coco": (LIT + "v1.0/mask_rcnn_litv2_s_fpn_1x_coco_ws_4.pth",
                                   {"box_ap": 44.7, "mask_ap": 40.7}),
    "mask_rcnn_litv2_m_ws4.coco": (LIT + "v1.0/mask_rcnn_litv2_m_fpn_1x_coco_ws_4.pth",
                                   {"box_ap": 46.5, "mask_ap": 42.0}),
    "mask_rcnn_litv2_b_ws4.coco": (LIT + "v1.0/mask_rcnn_litv2_b_fpn_1x_coco_ws_4.pth",
                                   {"box_ap": 46.8, "mask_ap": 42.3}),
}


# --------------------------------------------------------------------------- the official tables
def test_every_entry_matches_the_official_tables():
    entries = {w.name: w for tags in _TABLE.values() for w in tags.values()}
    assert sorted(entries) == sorted([*OFFICIAL, *OFFICIAL_DENSE])
    for name, (url, top1) in OFFICIAL.items():
        assert (entries[name].url, entries[name].top1) == (url, top1), name
    for name, (url, metrics) in OFFICIAL_DENSE.items():
        assert (entries[name].url, dict(entries[name].metrics), entries[name].top1) == (url, metrics, None), name
    alphas = {w.tag: w.variant_args["alpha"] for w in _TABLE["litv2_s"].values() if w.tag.startswith("alpha")}
    assert alphas == {"alpha_0": 0.0, "alpha_0_2": 0.2, "alpha_0_4": 0.4, "alpha_0_5": 0.5, "alpha_0_7": 0.7,
                      "alpha_0_9": 0.9, "alpha_1": 1.0}


def test_the_readme_says_whether_the_entries_carry_a_hash():
    """README, "Pretrained weights": the entries carry no published hash, so a first download is checked for form
    only. That holds while no entry has a ``sha256``; an entry given one makes the sentence false (and the old
    claim, "a known SHA-256 is checked", true only then)."""
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    entries = [w for tags in _TABLE.values() for w in tags.values()]
    assert len(entries) == len(OFFICIAL) + len(OFFICIAL_DENSE)
    hashed = sorted(w.name for w in entries if w.sha256)
    says_none = "The published entries carry no hash" in readme
    claims_checked = "a known SHA-256 is checked" in readme
    assert says_none == (not hashed) and not (claims_checked and not hashed), (hashed, says_none, claims_checked)


def test_the_384_models_are_evaluated_by_resizing_the_whole_image():
    squash = sorted(w.name for tags in _TABLE.values() for w in tags.values() if w.crop_mode == "squash")
    assert squash == sorted(n for n in OFFICIAL if "_384." in n)  # TEST.CROP False in the official 384 configs
    assert len(squash) == 6
    for name in squash:
        with torch.device("meta"):
            cfg = create_model(name).pretrained_cfg
        assert (cfg["crop_mode"], cfg["crop_pct"], cfg["input_size"]) == ("squash", 1.0, (3, 384, 384)), name
    with torch.device("meta"):
        assert create_model("litv2_b").pretrained_cfg["crop_mode"] == "center"


# --------------------------------------------------------------------------- timm's names
def test_timm_names_without_a_tag_load_timms_default():
    defaults = {}
    for cfg in TIMM_SWIN_CFGS:  # timm: the first tag of a name is its default
        arch, tag = cfg.split(".")
        defaults.setdefault(arch, tag)
    assert defaults["swin_small_patch4_window7_224"] == "ms_in22k_ft_in1k"
    assert defaults["swin_tiny_patch4_window7_224"] == "ms_in1k"
    for arch, tag in defaults.items():
        base, resolved = resolve_name(arch)
        assert resolved == tag, arch
        with torch.device("meta"):
            cfg = create_model(arch).pretrained_cfg
        assert cfg["tag"] == tag and cfg["url"] == OFFICIAL[f"{base}.{tag}"][0], arch
    for cfg in TIMM_SWIN_CFGS:  # and every timm name.tag is one of the entries
        base, tag = resolve_name(cfg)
        assert get_pretrained(base, tag).hf_hub_id == "timm/" + cfg
    # our own short names keep the official ImageNet-1k default
    for name in ("swin_t", "swin_s", "swin_b"):
        assert resolve_name(name) == (name, None) and get_pretrained(name).tag == "ms_in1k"
    assert resolve_name("swin_small_patch4_window7_224.ms_in1k") == ("swin_s", "ms_in1k")


# --------------------------------------------------------------------------- crop modes
def _nearest(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Nearest-neighbour resize by sampling each output pixel's centre, written as loops."""
    h, w = a.shape[:2]
    out = np.zeros((out_h, out_w) + a.shape[2:], a.dtype)
    for y in range(out_h):
        for x in range(out_w):
            out[y, x] = a[int((y + 0.5) * h / out_h), int((x + 0.5) * w / out_w)]
    return out


@pytest.fixture
def photo():
    """A 37 x 23 (W x H) image: odd sides, so no output pixel centre falls on a source pixel edge."""
    return np.random.default_rng(0).integers(0, 255, (23, 37, 3), dtype=np.uint8)


def test_squash_resizes_both_sides_then_crops_the_centre(photo):
    image = Image.fromarray(photo)
    got = np.asarray(resize_center_crop(image, 16, 1.0, "nearest", crop_mode="squash"))
    np.testing.assert_array_equal(got, _nearest(photo, 16, 16))  # the whole picture, no crop
    got = np.asarray(resize_center_crop(image, 16, 0.875, "nearest", crop_mode="squash"))
    np.testing.assert_array_equal(got, _nearest(photo, 18, 18)[1:17, 1:17])  # int(16 / 0.875) = 18
    centre = np.asarray(resize_center_crop(image, 16, 1.0, "nearest"))  # shorter side 23 -> 16, long 37 -> 25
    np.testing.assert_array_equal(centre, _nearest(photo, 16, 25)[:, 4:20])
    assert not np.array_equal(centre, _nearest(photo, 16, 16))
    with pytest.raises(ValueError, match="crop_mode='border'; expected one of 'center', 'squash'"):
        resize_center_crop(image, 16, 1.0, crop_mode="border")


def test_predict_and_image_folders_honour_the_weights_crop_mode(photo, tmp_path):
    with torch.device("meta"):
        cfg = dict(create_model("litv2_b_384").pretrained_cfg)
    assert cfg["crop_mode"] == "squash" and cfg["interpolation"] == "bicubic"
    mean, std = torch.tensor(cfg["mean"]).view(3, 1, 1), torch.tensor(cfg["std"]).view(3, 1, 1)
    x = preprocess_image(Image.fromarray(photo), cfg)
    whole = np.asarray(Image.fromarray(photo).resize((384, 384), Image.Resampling.BICUBIC), np.float32) / 255
    torch.testing.assert_close(x, (torch.from_numpy(whole).permute(2, 0, 1) - mean) / std)  # no crop
    small = dict(cfg, input_size=(3, 16, 16), interpolation="nearest")
    got = preprocess_image(Image.fromarray(photo), small)
    ref = torch.from_numpy(_nearest(photo, 16, 16).astype(np.float32) / 255).permute(2, 0, 1)
    torch.testing.assert_close(got, (ref - mean) / std)
    with pytest.raises(ValueError, match="crop_mode'\\] = 'border'"):
        preprocess_image(Image.fromarray(photo), dict(small, crop_mode="border"))
    (tmp_path / "a").mkdir()
    Image.fromarray(photo).save(tmp_path / "a" / "0.png")
    ds = ImageFolderDataset(tmp_path, 16, crop_pct=1.0, interpolation="nearest", crop_mode="squash")
    np.testing.assert_array_equal(ds[0][0].permute(1, 2, 0).numpy(), _nearest(photo, 16, 16))
    ds.set_eval_crop(1.0, "nearest", crop_mode="center")
    np.testing.assert_array_equal(ds[0][0].permute(1, 2, 0).numpy(), _nearest(photo, 16, 25)[:, 4:20])
    with pytest.raises(ValueError, match="crop_mode='whole'"):
        ImageFolderDataset(tmp_path, 16, crop_mode="whole")


def test_eval_of_published_weights_uses_their_crop_mode(photo, tmp_path, monkeypatch):
    import hilovit.models._builder
    from hilovit.tasks.classification_eval import run_eval

    def tiny_with_384_cfg(name, pretrained, device="cpu", **kwargs):  # stands in for the 87M-parameter model
        net = create_model("litv2_nano", num_classes=2, **kwargs).eval()
        net.pretrained_cfg = {**net.pretrained_cfg, "crop_mode": "squash", "crop_pct": 1.0,
                              "interpolation": "nearest", "input_size": (3, 28, 28)}
        return net

    monkeypatch.setattr(hilovit.models._builder, "pretrained_model", tiny_with_384_cfg)
    for c in ("a", "b"):
        (tmp_path / "val" / c).mkdir(parents=True)
        Image.fromarray(photo).save(tmp_path / "val" / c / "0.png")
    r = run_eval("litv2_b_384", pretrained=True, data=str(tmp_path / "val"), workers=0, progress="off")
    assert r["n"] == 2 and r["preprocessing"]["crop_mode"] == "squash" and r["preprocessing"]["crop_pct"] == 1.0
