"""hubconf.py: torch.hub.load from a checkout (source='local') builds and loads every registered model."""

from pathlib import Path

import torch

import hilovit

ROOT = Path(__file__).resolve().parents[1]


def test_hub_load_from_a_checkout(tmp_path):
    # LITv2-S's arguments at a small width (the full model takes seconds to initialise on a busy CPU)
    tiny = torch.hub.load(str(ROOT), "litv2_s", pretrained=False, source="local", embed_dim=16, img_size=64,
                          depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], num_classes=7)
    assert isinstance(tiny, hilovit.LITv2) and (tiny.embed_dim, tiny.num_classes) == (16, 7)
    assert tiny.pretrained_cfg["tag"] == "in1k"
    swin = torch.hub.load(str(ROOT), "swin_tiny_patch4_window7_224", source="local", num_classes=3, img_size=64,
                          window_size=4)
    assert isinstance(swin, hilovit.SwinTransformer) and swin.num_classes == 3


def test_hub_load_with_a_weights_file(tmp_path):
    torch.manual_seed(1)
    src = hilovit.create_model("litv2_nano", num_classes=4)
    torch.save({"model": src.state_dict()}, tmp_path / "w.pth")
    model = torch.hub.load(str(ROOT), "litv2_nano", source="local", pretrained=str(tmp_path / "w.pth"), num_classes=4)
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_every_registered_name_is_an_entry_point():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hilovit_hubconf", ROOT / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    public = {n for n in dir(hub) if callable(getattr(hub, n)) and not n.startswith("_")}
    assert public == set(hilovit.list_models(include_aliases=True))
    assert "hilovit.create_model('litv2_s'" in hub.litv2_s.__doc__ and "LITv2-S" in hub.litv2_s.__doc__
