"""Pretrained weights: the source table, downloads into the torch hub cache, adapting on load.

No network: a local HTTP server on 127.0.0.1 (started and stopped by the ``server`` fixture)
serves checkpoints in the official release format (``{'model': state_dict}`` ``.pth`` files) made
from the official fixtures; ``TORCH_HOME`` points into ``tmp_path``.
"""

import hashlib
import json
import socket
import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from file_server import FileServer
from hilovit import create_model
from hilovit.cli import main
from hilovit.models import LITv2Backbone
from hilovit.models.hub import DownloadError, cache_dir, cached_path
from hilovit.models.pretrained import _TABLE, get_pretrained, list_pretrained, load_pretrained
from hilovit.models.registry import resolve_name

LIT = "litv2_e16_img64_a0.5_ws0022"  # LITv2, alpha 0.5: stands in for the official litv2_s files
SWIN = "swin_e24_img64_w4"
DET = "litv2det_e16_70x102_a0.9_ws0042"


# --------------------------------------------------------------------------- a local file server
@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch):
    for var in ("HILOVIT_OFFLINE", "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def _fixture(fixtures_dir, name):
    meta = json.loads((fixtures_dir / f"{name}.json").read_text())
    sd = load_file(str(fixtures_dir / f"{name}.state_dict.safetensors"))
    io = load_file(str(fixtures_dir / f"{name}.io.safetensors"))
    ctor = {k: v for k, v in meta["constructor"].items() if k != "fused_window_process"}
    return ctor, sd, io


def _official_pth(tmp_path, sd, name="official.pth", wrap="model", extra=None) -> bytes:
    path = tmp_path / name
    torch.save({wrap: sd, **(extra or {})}, path)
    return path.read_bytes()


@pytest.fixture
def lit(fixtures_dir, tmp_path, server):
    """The LITv2 fixture published as ``/v1.0/litv2_s.pth`` on the local server."""
    ctor, sd, io = _fixture(fixtures_dir, LIT)
    data = _official_pth(tmp_path, sd)
    server.files["/v1.0/litv2_s.pth"] = data
    return ctor, sd, io, data, server.url("/v1.0/litv2_s.pth")


def _assert_equal_weights(model, sd, skip=()):
    own = model.state_dict()
    for k, v in sd.items():
        if k not in skip:
            assert torch.equal(own[k], v), k


def _cache_files():
    d = cache_dir()
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def _cached_name(url, name=None):
    """The cache name written here from the URL alone: ``<stem>-<8 hex of sha256(url)><ext>``."""
    stem, _, ext = (name or url.rsplit("/", 1)[1]).rpartition(".")
    return f"{stem}-{hashlib.sha256(url.encode()).hexdigest()[:8]}.{ext}"


# --------------------------------------------------------------------------- downloads and the cache
def test_download_gives_the_file_and_the_official_outputs(lit, torch_home):
    ctor, sd, io, data, url = lit
    model = create_model("litv2_s", pretrained=True, pretrained_cfg_overlay=dict(url=url), **ctor).eval()
    _assert_equal_weights(model, sd)
    with torch.no_grad():
        torch.testing.assert_close(model(io["input"]), io["logits"], atol=1e-4, rtol=1e-4)
    name = _cached_name(url)
    # nothing else (no partial file) beside the file and its hash record
    assert _cache_files() == [name, name + ".sha256"]
    assert (torch_home / "hub" / "checkpoints" / name).read_bytes() == data
    digest = hashlib.sha256(data).hexdigest()
    assert (cache_dir() / (name + ".sha256")).read_text() == f"{digest}  {name}\n"  # sha256sum's format
    weights = model.pretrained_cfg["weights"]
    assert weights["source"] == url and weights["sha256"] == digest


def test_cache_is_reused_without_the_network(lit, server):
    ctor, sd, _, _, url = lit
    create_model("litv2_s", pretrained=True, pretrained_cfg_overlay=dict(url=url), **ctor)
    assert [m for m, _ in server.requests].count("GET") == 1
    server.stop()
    again = create_model("litv2_s", pretrained=True, pretrained_cfg_overlay=dict(url=url), **ctor)
    _assert_equal_weights(again, sd)


def test_equal_file_names_from_other_urls_are_other_cache_entries(fixtures_dir, tmp_path, server):
    ctor, sd, _ = _fixture(fixtures_dir, LIT)
    sd2 = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}  # "v2" of the same file name
    server.files["/v1/w.pth"] = _official_pth(tmp_path, sd, "v1.pth")
    server.files["/v2/w.pth"] = _official_pth(tmp_path, sd2, "v2.pth")
    first = create_model("litv2_s", pretrained=server.url("/v1/w.pth"), **ctor)
    second = create_model("litv2_s", pretrained=server.url("/v2/w.pth"), **ctor)
    _assert_equal_weights(first, sd)
    _assert_equal_weights(second, sd2)  # not the v1 file cached under the same name
    assert [m for m, _ in server.requests].count("GET") == 2
    names = [_cached_name(server.url(f"/v{i}/w.pth")) for i in (1, 2)]
    assert names[0] != names[1] and _cache_files() == sorted(names + [n + ".sha256" for n in names])


def test_a_cached_file_changed_on_disk_is_refused_with_both_hashes(lit, server):
    ctor, sd, _, data, url = lit
    create_model("litv2_s", pretrained=url, **ctor)
    server.stop()  # from here on the cache alone
    path = cache_dir() / _cached_name(url)
    good = hashlib.sha256(data).hexdigest()
    for changed in (data[:-10], data[:100] + bytes([data[100] ^ 1]) + data[101:]):  # cut short; one bit flipped
        path.write_bytes(changed)
        with pytest.raises(DownloadError, match="changed since it was downloaded") as err:
            create_model("litv2_s", pretrained=url, **ctor)
        msg = str(err.value)
        assert good in msg and hashlib.sha256(changed).hexdigest() in msg
        assert f"rm -f {path} {path}.sha256" in msg
    path.write_bytes(data)  # restored: loads again
    _assert_equal_weights(create_model("litv2_s", pretrained=url, **ctor), sd)
    # a hash given by the caller is checked against the cached file too
    with pytest.raises(DownloadError, match=f"SHA-256 mismatch for the cached file.*expected {'1' * 64}, got {good}"):
        create_model("litv2_s", pretrained=url, pretrained_cfg_overlay=dict(sha256="1" * 64), **ctor)
    (cache_dir() / (path.name + ".sha256")).write_text("not a hash\n")
    with pytest.raises(DownloadError, match="hash record .* is unreadable"):
        create_model("litv2_s", pretrained=url, **ctor)


def test_a_file_put_in_the_cache_by_hand_is_checked_against_the_callers_hash(lit, server):
    ctor, sd, _, data, url = lit
    server.stop()
    path = cached_path(url)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)  # what the curl command of the error message does
    good = hashlib.sha256(data).hexdigest()
    _assert_equal_weights(create_model("litv2_s", pretrained=url, pretrained_cfg_overlay=dict(sha256=good),
                                       **ctor), sd)
    assert _cache_files() == [path.name]  # no record is invented for a file that was not downloaded
    with pytest.raises(DownloadError, match=f"expected {'2' * 64}, got {good}"):
        create_model("litv2_s", pretrained=url, pretrained_cfg_overlay=dict(sha256="2" * 64), **ctor)


@pytest.mark.parametrize("mode", ["cut", "cut-nohead"])
def test_interrupted_transfer_leaves_no_cached_file(lit, server, mode):
    ctor, _, _, _, url = lit
    server.mode["/v1.0/litv2_s.pth"] = mode
    with pytest.raises(DownloadError, match="cut short") as err:
        create_model("litv2_s", pretrained=True, pretrained_cfg_overlay=dict(url=url), **ctor)
    assert url in str(err.value) and "nothing was cached" in str(err.value)
    assert _cache_files() == []
    del server.mode["/v1.0/litv2_s.pth"]  # the server recovers: the next call downloads the whole file
    create_model("litv2_s", pretrained=True, pretrained_cfg_overlay=dict(url=url), **ctor)
    assert _cache_files() == [_cached_name(url), _cached_name(url) + ".sha256"]


def test_a_cut_file_is_recognised_when_the_server_does_not_announce_its_length(tmp_path):
    from safetensors.torch import save_file

    from hilovit.models._transfer import check_whole as _check_whole

    save_file({"a": torch.randn(100), "b": torch.randn(7)}, str(tmp_path / "w.safetensors"))
    torch.save({"model": {"a": torch.randn(100)}}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        data = (tmp_path / name).read_bytes()
        _check_whole(tmp_path / name)  # whole: no error
        for cut in (len(data) - 1, len(data) // 2, 12):
            (tmp_path / "cut").write_bytes(data[:cut])
            with pytest.raises(DownloadError, match=f"of {cut} bytes"):
                _check_whole(tmp_path / "cut")


def test_missing_file_is_a_clear_404(server):
    url = server.url("/v1.0/nothing.pth")
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        create_model("litv2_nano", pretrained=url)
    assert url in str(err.value) and "curl -fL" in str(err.value)
    assert _cache_files() == []


def test_hash_is_checked_and_a_mismatch_deletes_the_file(lit):
    ctor, sd, _, data, url = lit
    with pytest.raises(DownloadError, match="SHA-256 mismatch") as err:
        create_model("litv2_s", pretrained=True, pretrained_cfg_overlay=dict(url=url, sha256="0" * 64), **ctor)
    assert hashlib.sha256(data).hexdigest() in str(err.value) and "deleted" in str(err.value)
    assert _cache_files() == []
    good = hashlib.sha256(data).hexdigest()
    model = create_model("litv2_s", pretrained=True, pretrained_cfg_overlay=dict(url=url, sha256=good), **ctor)
    _assert_equal_weights(model, sd)


@pytest.mark.parametrize("var", ["HILOVIT_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_never_downloads_and_says_how_to_fetch(lit, server, monkeypatch, var):
    ctor, sd, _, data, url = lit
    monkeypatch.setenv(var, "1")
    with pytest.raises(DownloadError) as err:
        create_model("litv2_s", pretrained=True, pretrained_cfg_overlay=dict(url=url), **ctor)
    target = cache_dir() / _cached_name(url)
    assert cached_path(url) == target
    msg = str(err.value)
    assert f"{var}=1" in msg and f"curl -fL --create-dirs -o {target} {url}" in msg and f"pretrained='{target}'" in msg
    assert server.requests == []
    target.parent.mkdir(parents=True)
    target.write_bytes(data[:100])  # a fetch by hand cut short: named, with what to do
    with pytest.raises(ValueError, match="cannot be read.*delete it and run again"):
        create_model("litv2_s", pretrained=True, pretrained_cfg_overlay=dict(url=url), **ctor)
    target.write_bytes(data)  # what the curl command does
    _assert_equal_weights(create_model("litv2_s", pretrained=True, pretrained_cfg_overlay=dict(url=url), **ctor), sd)
    assert server.requests == []


def test_no_network_is_a_clear_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/litv2_s.pth"
    with pytest.raises(DownloadError, match="cannot download") as err:
        create_model("litv2_nano", pretrained=url)
    assert url in str(err.value) and "curl -fL --create-dirs -o" in str(err.value)
    assert _cache_files() == []


def test_alpha_picks_the_matching_release_file(fixtures_dir, tmp_path, monkeypatch):
    ctor, sd, _ = _fixture(fixtures_dir, LIT)  # trained (here: drawn) with alpha 0.5
    entry = get_pretrained("litv2_s", model_kwargs={"alpha": 0.5})
    assert entry.name == "litv2_s.alpha_0_5" and entry.url.endswith("/v1.1/alpha_0.5.pth")
    # the entry's file_name keeps working: the URL's hash is added to it
    assert entry.cache_path == str(cache_dir() / _cached_name(entry.url, "litv2_s-alpha_0_5.pth"))
    (cache_dir()).mkdir(parents=True)
    (cache_dir() / _cached_name(entry.url, "litv2_s-alpha_0_5.pth")).write_bytes(_official_pth(tmp_path, sd))
    monkeypatch.setenv("HILOVIT_OFFLINE", "1")
    model = create_model("litv2_s", pretrained=True, **ctor)
    _assert_equal_weights(model, sd)
    assert model.pretrained_cfg["tag"] == "alpha_0_5"
    with pytest.raises(DownloadError, match=r"v1\.0/litv2_s\.pth"):  # alpha 0.9: the main LITv2-S file
        create_model("litv2_s", pretrained=True, **dict(ctor, alpha=0.9))
    with pytest.raises(ValueError, match="alpha=0.3.*litv2_s.alpha_0_2"):
        create_model("litv2_s", pretrained=True, **dict(ctor, alpha=0.3))


# --------------------------------------------------------------------------- adapting on load
def test_other_num_classes_reinitialises_the_head_with_a_warning(lit):
    ctor, sd, _, _, url = lit
    with pytest.warns(UserWarning, match=r"head\.bias, head\.weight"):
        model = create_model("litv2_s", pretrained=url, **dict(ctor, num_classes=5))
    _assert_equal_weights(model, sd, skip=("head.weight", "head.bias"))
    assert model.head.weight.shape == (5, sd["head.weight"].shape[1])
    bare = create_model("litv2_s", pretrained=url, **dict(ctor, num_classes=0)).eval()
    _assert_equal_weights(bare, sd, skip=("head.weight", "head.bias"))
    with torch.no_grad():
        assert bare(torch.randn(1, 3, 64, 64)).shape == (1, sd["head.weight"].shape[1])


def test_one_input_channel_sums_the_rgb_stem(lit):
    ctor, sd, io, _, url = lit
    with pytest.warns(UserWarning, match="summed"):
        grey = create_model("litv2_s", pretrained=url, **dict(ctor, in_chans=1)).eval()
    stem = sd["patch_embed.proj.weight"]
    assert torch.equal(grey.patch_embed.proj.weight, stem.sum(1, keepdim=True))
    rgb = create_model("litv2_s", pretrained=url, **ctor).eval()
    x = io["input"][:, :1]
    with torch.no_grad():  # a grey image gives what the RGB model gives for it copied into every channel
        torch.testing.assert_close(grey(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-4, rtol=1e-4)
    assert grey.pretrained_cfg["mean"] == pytest.approx((sum((0.485, 0.456, 0.406)) / 3,))
    with pytest.warns(UserWarning, match="repeated and scaled"):
        four = create_model("litv2_s", pretrained=url, **dict(ctor, in_chans=4))
    assert torch.allclose(four.patch_embed.proj.weight, stem[:, [0, 1, 2, 0]] * 0.75)


def test_swin_tables_resized_for_another_window(fixtures_dir, tmp_path):
    ctor, sd, _ = _fixture(fixtures_dir, SWIN)  # window 4: tables (7*7, heads)
    path = tmp_path / "swin.pth"
    path.write_bytes(_official_pth(tmp_path, sd, "swin.pth"))
    model = create_model("swin_t", pretrained=str(path), **dict(ctor, window_size=8)).eval()
    # maps of 16, 8, 4, 2: windows were 4, 4, 4, 2 (tables of side 7, 7, 7, 3), now 8, 8, 4, 2
    side = {0: 15, 1: 15, 2: 7, 3: 3}
    for s, stage in enumerate(model.layers):
        for b, blk in enumerate(stage.blocks):
            key = f"layers.{s}.blocks.{b}.attn.relative_position_bias_table"
            table, heads = sd[key], sd[key].shape[1]
            old = {0: 7, 1: 7, 2: 7, 3: 3}[s]
            grid = table.t().reshape(1, heads, old, old)
            want = F.interpolate(grid, size=(side[s], side[s]), mode="bicubic", align_corners=False)
            torch.testing.assert_close(model.state_dict()[key], want.reshape(heads, -1).t())
            w = blk.attn.relative_position_index.shape[0]
            coords = torch.stack(torch.meshgrid(torch.arange(int(w**0.5)), torch.arange(int(w**0.5)),
                                                indexing="ij")).flatten(1)
            rel = coords[:, :, None] - coords[:, None, :] + int(w**0.5) - 1
            assert torch.equal(blk.attn.relative_position_index, rel[0] * (2 * int(w**0.5) - 1) + rel[1])
    _assert_equal_weights(model, {k: v for k, v in sd.items() if "relative_position" not in k and "attn_mask" not in k})
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 64, 64))).all()


def test_mmdet_and_mmseg_checkpoints_load_into_the_backbone(fixtures_dir, tmp_path, server):
    ctor, sd, io = _fixture(fixtures_dir, DET)
    extra = {"meta": {"mmdet_version": "2.11.0", "epoch": 12}, "optimizer": {"state": {}, "param_groups": []}}
    det = {"backbone." + k: v for k, v in sd.items()}
    det["neck.fpn_convs.0.conv.weight"] = torch.randn(8, 16, 3, 3)
    det["rpn_head.rpn_conv.weight"] = torch.randn(8, 8, 3, 3)
    server.files["/v1.0/mask_rcnn.pth"] = _official_pth(tmp_path, det, "det.pth", wrap="state_dict", extra=extra)
    backbone = LITv2Backbone(**ctor).eval()
    load_pretrained(backbone, server.url("/v1.0/mask_rcnn.pth"))
    _assert_equal_weights(backbone, sd)
    with torch.no_grad():
        outs = backbone(io["input"])
    for i, out in enumerate(outs):
        torch.testing.assert_close(out, io[f"out{i}"], atol=1e-4, rtol=1e-4)
    seg = dict(det, **{"backbone.norm0.weight": torch.ones(16), "backbone.norm0.bias": torch.zeros(16)})
    server.files["/v1.0/fpn_ade20k.pth"] = _official_pth(tmp_path, seg, "seg.pth", wrap="state_dict", extra=extra)
    other = LITv2Backbone(**ctor).eval()
    with pytest.warns(UserWarning, match="norm0"):
        load_pretrained(other, server.url("/v1.0/fpn_ade20k.pth"))
    _assert_equal_weights(other, sd)


@pytest.mark.parametrize("timm_name", ["model.safetensors", "pytorch_model.bin"])
def test_hf_hub_source(lit, server, tmp_path, monkeypatch, timm_name):
    pytest.importorskip("huggingface_hub")
    from safetensors.torch import save_file

    ctor, sd, _, data, _ = lit
    if timm_name == "model.safetensors":
        save_file(sd, str(tmp_path / "m.safetensors"))
        data = (tmp_path / "m.safetensors").read_bytes()
    server.files[f"/org/tiny-litv2/resolve/main/{timm_name}"] = data
    monkeypatch.setenv("HF_ENDPOINT", server.base)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    model = create_model("litv2_s", pretrained="hf-hub:org/tiny-litv2", **ctor)
    _assert_equal_weights(model, sd)
    server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: the Hugging Face cache serves it
    _assert_equal_weights(create_model("litv2_s", pretrained="hf-hub:org/tiny-litv2", **ctor), sd)
    with pytest.raises(DownloadError, match="downloads are off"):
        create_model("litv2_s", pretrained="hf-hub:org/other", **ctor)


# --------------------------------------------------------------------------- names, tags, the table
def test_timm_names_resolve_to_our_names_and_tags():
    assert resolve_name("swin_tiny_patch4_window7_224.ms_in1k") == ("swin_t", "ms_in1k")
    assert resolve_name("swin_base_patch4_window12_384.ms_in22k_ft_in1k") == ("swin_b_384", "ms_in22k_ft_in1k")
    assert resolve_name("litv2_s") == ("litv2_s", None)
    for tags in _TABLE.values():
        for w in tags.values():
            if w.hf_hub_id:  # timm's repository name is its model name with the same tag
                assert resolve_name(w.hf_hub_id.split("/", 1)[1]) == (w.model, w.tag)
    with torch.device("meta"):
        m = create_model("swin_base_patch4_window12_384.ms_in22k")
        a = create_model("litv2_s.alpha_0_2")
    assert m.num_classes == 21841 and m.window_size == 12 and m.img_size == (384, 384)
    assert m.pretrained_cfg["url"].endswith("/v1.0.0/swin_base_patch4_window12_384_22k.pth")
    assert m.pretrained_cfg["crop_pct"] == 1.0 and m.pretrained_cfg["top1"] is None
    assert a.pretrained_cfg["url"].endswith("/v1.1/alpha_0.2.pth") and a.layers[2].blocks[0].attn.l_heads == 2
    assert len([n for n in list_pretrained("litv2_s.alpha_*")]) == 7
    with pytest.raises(ValueError, match="unknown pretrained tag 'in21k'.*swin_t.ms_in1k"):
        create_model("swin_t.in21k")
    with pytest.raises(ValueError, match="alpha=0.5 contradicts 'litv2_s.alpha_0_2'"):
        create_model("litv2_s.alpha_0_2", alpha=0.5)


def test_table_agrees_with_the_models_and_the_official_release_layout():
    for model, tags in _TABLE.items():
        if not model.startswith(("litv2", "swin")):
            continue  # the segmentation and detection files: tests/models/test_pretrained_table.py
        with torch.device("meta"):
            net = create_model(model)
        for w in tags.values():
            assert tuple(w.input_size[1:]) == tuple(net.img_size), w.name
            assert w.crop_pct == (1.0 if w.input_size[1] >= 384 else 0.875), w.name
            assert w.crop_mode == ("squash" if w.input_size[1] >= 384 else "center"), w.name
            assert (w.num_classes == 21841) == (w.tag == "ms_in22k") == (w.top1 is None and model.startswith("swin"))
            family = "ziplab/LITv2/releases/download/v1." if model.startswith("litv2") else "SwinTransformer/storage/"
            assert w.url.startswith("https://github.com/" + family) and w.url.endswith(".pth"), w.name
    assert {w.url.rsplit("/", 1)[1] for w in _TABLE["litv2_s"].values()} == {
        "litv2_s.pth", "alpha_0.pth", "alpha_0.2.pth", "alpha_0.4.pth", "alpha_0.5.pth", "alpha_0.7.pth",
        "alpha_0.9.pth", "alpha_1.pth"}


def test_pretrained_false_builds_random_weights_and_bad_values_are_named(tmp_path):
    torch.manual_seed(0)
    a = create_model("litv2_nano", pretrained=False)
    b = create_model("litv2_nano")
    assert "weights" not in a.pretrained_cfg and not torch.equal(a.head.weight, b.head.weight)
    with pytest.raises(TypeError, match="pretrained must be"):
        create_model("litv2_nano", pretrained=1.5)
    with pytest.raises(ValueError, match="no pretrained weights are published for 'litv2_nano'"):
        create_model("litv2_nano", pretrained=True)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        create_model("litv2_nano", pretrained=str(tmp_path / "nothing.pth"))
    with pytest.raises(TypeError, match="pretrained_cfg_overlay"):
        create_model("litv2_nano", pretrained_cfg_overlay="url")
    with pytest.raises(ValueError, match="hf-hub:org/name"):
        create_model("litv2_nano", pretrained="hf-hub:just-a-name")
    with pytest.raises(ValueError, match="is a folder"):
        create_model("litv2_nano", pretrained=str(tmp_path))


# --------------------------------------------------------------------------- hilovit models
def test_models_command_lists_params_flops_top1_source_and_cache(fixtures_dir, capsys, monkeypatch):
    official = json.loads((fixtures_dir / "manifests" / "litv2_s.json").read_text())
    assert main(["models", "litv2_s"]) == 0
    row = [c.strip() for c in capsys.readouterr().out.splitlines()[2].strip("|").split("|")]
    assert row[0] == "litv2_s" and float(row[1]) == round(official["param_count"] / 1e6, 2)
    assert abs(float(row[2]) - official["flops"] / 1e9) < 0.01 * official["flops"] / 1e9
    assert row[3:] == ["3x224x224", "82.00", "https://github.com/ziplab/LITv2/releases/download/v1.0/litv2_s.pth", "no"]
    cache_dir().mkdir(parents=True)
    cached = get_pretrained("litv2_s").cache_path
    open(cached, "wb").write(b"x")
    assert main(["models", "litv2_s"]) == 0
    assert capsys.readouterr().out.splitlines()[2].rstrip(" |").endswith("yes")
    assert main(["models", "--pretrained", "swin_tiny*"]) == 0
    out = capsys.readouterr().out.splitlines()[2:]
    assert [r.split("|")[1].strip() for r in out] == ["swin_t.ms_in1k", "swin_t.ms_in22k_ft_in1k", "swin_t.ms_in22k"]
    assert "timm/swin_tiny_patch4_window7_224.ms_in22k_ft_in1k" in out[1] and "80.90" in out[1]
    monkeypatch.setenv("HILOVIT_OFFLINE", "1")
    assert main(["models", "litv2_s", "--download"]) == 0  # cached: no network needed
    assert capsys.readouterr().out.splitlines()[-1] == f"litv2_s: {cached}"
    assert main(["models", "litv2_m", "--download"]) == 1
    assert "curl -fL" in capsys.readouterr().err
    assert main(["models", "nothing*"]) == 1


def test_warnings_do_not_leak_from_a_plain_load(lit):
    ctor, _, _, _, url = lit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_model("litv2_s", pretrained=url, **ctor)


# --------------------------------------------------------------------------- a URL sizes the model as a path does
def _seven_class_checkpoint(tmp_path):
    """A litv2_nano classifier trained (here: seeded) for 7 named classes, saved as a ``.pth``; litv2_nano's own
    head has 10, so a model sized by its default would not fit it."""
    torch.manual_seed(7)
    model = create_model("litv2_nano", num_classes=7)
    names = [f"kind{i}" for i in range(7)]
    path = tmp_path / "w.pth"
    torch.save({"model": model.state_dict(), "classes": names}, path)
    return model.eval(), path


def test_pretrained_model_from_a_url_is_the_model_of_the_same_file_as_a_path(tmp_path, server):
    from hilovit.models._builder import pretrained_model

    trained, path = _seven_class_checkpoint(tmp_path)
    server.files["/runs/w.pth"] = path.read_bytes()
    x = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))

    from_path = pretrained_model("litv2_nano", str(path))
    from_url = pretrained_model("litv2_nano", server.url("/runs/w.pth"))
    assert ("GET", "/runs/w.pth") in server.requests
    assert from_url.pretrained_cfg["num_classes"] == from_path.pretrained_cfg["num_classes"] == 7
    _assert_equal_weights(from_url, trained.state_dict())  # the head too: nothing re-initialised
    with torch.no_grad():
        assert torch.equal(from_url(x), from_path(x))
        assert torch.equal(from_url(x), trained(x))


def test_cli_predict_of_a_url_prints_what_the_same_file_as_a_path_prints(tmp_path, server, capsys):
    from PIL import Image

    _, path = _seven_class_checkpoint(tmp_path)
    server.files["/runs/w.pth"] = path.read_bytes()
    rng = torch.Generator().manual_seed(1)
    image = tmp_path / "photo.png"
    Image.fromarray(torch.randint(0, 256, (40, 36, 3), generator=rng, dtype=torch.uint8).numpy()).save(image)

    printed = {}
    for kind, source in (("path", str(path)), ("url", server.url("/runs/w.pth"))):
        assert main(["predict", str(image), "--model", "litv2_nano", "--pretrained", source, "--topk", "7",
                     "--json"]) == 0
        printed[kind] = json.loads(capsys.readouterr().out)
    assert ("GET", "/runs/w.pth") in server.requests
    assert printed["url"] == printed["path"]
    (result,) = printed["path"]
    assert sorted(p["index"] for p in result["predictions"]) == list(range(7))
    assert all(p["label"] == f"kind{p['index']}" for p in result["predictions"])  # the names the file records
