"""Model repositories both ways: save_pretrained / push_to_hub, then create_model('local-dir:' | 'hf-hub:').

For every task (a classifier, a Semantic FPN segmenter, RetinaNet, Mask R-CNN) a model written by
``save_pretrained`` is read back from the folder (``local-dir:``) and through ``huggingface_hub``
from a local HTTP server on 127.0.0.1 answering as the hub's resolve endpoint does
(``/{repo_id}/resolve/{revision}/{filename}`` with ``ETag`` and ``X-Repo-Commit``; ``HF_ENDPOINT``
points at it, ``HF_HOME`` into ``tmp_path``), and must give the same outputs and label names.
Uploading goes to a stand-in ``HfApi`` that records its calls and keeps a copy of the folder.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hilovit
from file_server import FileServer
from hilovit import CheckpointError, DownloadError, create_model, publish
from hilovit.cli import main
from hilovit.models.checkpoint import read_checkpoint, save_safetensors

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MODELS = {  # name: (constructor arguments, the input its outputs are compared on)
    "litv2_nano": (dict(num_classes=7), (2, 3, 28, 28)),
    "semfpn_litv2_nano": ({}, (1, 1, 64, 96)),
    "retinanet_litv2_nano": ({}, (1, 1, 64, 96)),
    "mask_rcnn_litv2_nano": ({}, (1, 1, 64, 96)),
}


@pytest.fixture(autouse=True)
def _hub_env(tmp_path, monkeypatch):
    for var in ("HILOVIT_OFFLINE", "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_HUB_CACHE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


@pytest.fixture
def server(monkeypatch):
    srv = FileServer()
    monkeypatch.setenv("HF_ENDPOINT", srv.base)
    yield srv
    srv.stop()


def _publish(server, folder: Path, repo_id: str) -> None:
    """Serve every file of ``folder`` as the hub serves ``repo_id`` at revision main."""
    for f in folder.iterdir():
        server.files[f"/{repo_id}/resolve/main/{f.name}"] = f.read_bytes()


def _outputs(model, x):
    """What each task's network computes: class logits, segmentation logits, raw head maps."""
    with torch.no_grad():
        if hasattr(model, "forward_dense"):
            cls, reg = model.forward_dense(x)
            return list(cls) + list(reg)
        out = model(x)
        return list(out) if isinstance(out, (tuple, list)) else [out]


def _labels(n):
    return [f"class {i}" for i in range(n)]


@pytest.mark.parametrize("name", list(MODELS))
def test_save_then_local_dir_and_hf_hub_give_the_same_model(name, tmp_path, server, monkeypatch):
    kwargs, shape = MODELS[name]
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    names = _labels(model.num_classes)
    folder = hilovit.save_pretrained(model, tmp_path / "repo", config={"label_names": names})
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((folder / "config.json").read_text())
    task = {"litv2_nano": "classification", "semfpn_litv2_nano": "segmentation"}.get(name, "detection")
    assert cfg["architecture"] == name and cfg["task"] == task and cfg["num_classes"] == model.num_classes
    assert cfg["label_names"] == names and cfg["pretrained_cfg"]["label_names"] == names
    assert cfg["model_args"]["in_chans"] == (3 if name == "litv2_nano" else 1)
    assert cfg["pretrained_cfg"]["mean"] == [0.5] * cfg["model_args"]["in_chans"]
    assert cfg["pretrained_cfg"]["input_size"] == ([3, 28, 28] if name == "litv2_nano" else [1, 128, 128])
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    want = _outputs(model, x)
    _publish(server, folder, "org/tiny")
    for source in (f"local-dir:{folder}", "hf-hub:org/tiny"):
        got_model = create_model(source).eval()
        assert type(got_model) is type(model) and got_model.num_classes == model.num_classes
        assert got_model.pretrained_cfg["label_names"] == names
        assert got_model.pretrained_cfg["architecture"] == name
        got = _outputs(got_model, x)
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert a.shape == b.shape and torch.equal(a, b), source
    assert ("GET", "/org/tiny/resolve/main/config.json") in server.requests
    server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline: config.json and the weights from the Hugging Face cache
    cached = create_model("hf-hub:org/tiny").eval()
    assert cached.pretrained_cfg["hf_hub_id"] == "org/tiny"
    assert all(torch.equal(a, b) for a, b in zip(_outputs(cached, x), want))


def test_new_head_and_no_weights(tmp_path):
    torch.manual_seed(0)
    model = create_model("litv2_nano", num_classes=7)
    hilovit.save_pretrained(model, tmp_path / "repo", config={"label_names": _labels(7)})
    fresh = create_model(f"local-dir:{tmp_path / 'repo'}", pretrained=False)  # timm's pretrained=False: no weights
    assert fresh.num_classes == 7 and not torch.equal(fresh.patch_embed.proj.weight, model.patch_embed.proj.weight)
    with pytest.warns(UserWarning, match="classifier of another size"):
        three = create_model(f"local-dir:{tmp_path / 'repo'}", num_classes=3)
    assert three.num_classes == 3 and three.pretrained_cfg.get("label_names") is None
    assert torch.equal(three.patch_embed.proj.weight, model.patch_embed.proj.weight)


def test_repositories_that_cannot_be_built_are_refused(tmp_path, server):
    torch.manual_seed(0)
    folder = hilovit.save_pretrained(create_model("litv2_nano", num_classes=7), tmp_path / "repo")
    only_weights = tmp_path / "weights-only"
    only_weights.mkdir()
    shutil.copy(folder / "model.safetensors", only_weights)
    with pytest.raises(FileNotFoundError, match="holds no file \\(config.json\\).*names the architecture"):
        create_model(f"local-dir:{only_weights}")
    with pytest.raises(FileNotFoundError, match="no folder"):
        create_model(f"local-dir:{tmp_path / 'missing'}")
    server.files["/org/weights-only/resolve/main/model.safetensors"] = (folder / "model.safetensors").read_bytes()
    with pytest.raises(DownloadError, match="hf-hub:org/weights-only holds no config.json"):
        create_model("hf-hub:org/weights-only")
    cfg = json.loads((folder / "config.json").read_text())
    for change, error, match in [
        ({"architecture": "resnet50"}, ValueError, "unknown architecture 'resnet50'; hilovit builds: .*litv2_nano"),
        ({"architecture": None}, ValueError, "names no architecture"),
        ({"num_classes": 5, "label_names": None}, CheckpointError,
         "(?s)does not fit LITv2.*head.weight: checkpoint \\(7, 256\\) vs model \\(5, 256\\)"),
        ({"label_names": ["a", "b"]}, ValueError, "2 label_names for num_classes=7"),
        ({"num_classes": -1}, ValueError, "num_classes=-1: expected an integer >= 0"),
        ({"task": "detection"}, ValueError, "task 'detection' contradicts the architecture 'litv2_nano'"),
        ({"model_args": {"in_chans": 3, "img_size": 28, "depths": [1, 1, 1, 1]}}, CheckpointError,
         "unexpected keys"),
    ]:
        bad = tmp_path / "bad"
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(folder, bad)
        changed = {k: v for k, v in {**cfg, **change}.items() if v is not None}
        changed["pretrained_cfg"] = {k: v for k, v in cfg["pretrained_cfg"].items() if k != "label_names"}
        (bad / "config.json").write_text(json.dumps(changed))
        with pytest.raises(error, match=match):
            create_model(f"local-dir:{bad}")
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json of local-dir:.* is not JSON"):
        create_model(f"local-dir:{bad}")
    with pytest.raises(ValueError, match="the repository holds its own weights"):
        create_model(f"local-dir:{folder}", pretrained="other.pth")


def test_timm_single_dict_config_is_read(tmp_path):
    torch.manual_seed(0)
    model = create_model("litv2_nano", num_classes=4)
    folder = hilovit.save_pretrained(model, tmp_path / "repo")
    legacy = {"architecture": "litv2_nano", "num_classes": 4, "labels": list("abcd"), "input_size": [3, 28, 28],
              "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "model_args": {"img_size": 28}}
    (folder / "config.json").write_text(json.dumps(legacy))
    got = create_model(f"local-dir:{folder}")
    assert got.pretrained_cfg["label_names"] == list("abcd")
    assert got.pretrained_cfg["mean"] == (0.1, 0.2, 0.3) and got.pretrained_cfg["std"] == (0.4, 0.5, 0.6)
    assert torch.equal(got.head.weight, model.head.weight)


def test_hf_hub_without_huggingface_hub_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r"pip install 'hilovit\[hub\]'"):
        create_model("hf-hub:org/tiny")
    with pytest.raises(ImportError, match=r"pip install 'hilovit\[hub\]'"):
        hilovit.push_to_hub(create_model("litv2_nano", num_classes=2), "org/tiny")


def test_the_folder_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    model = create_model("litv2_nano", num_classes=2)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds other files.*overwrite=True"):
        hilovit.save_pretrained(model, other)
    assert (other / "notes.txt").read_text() == "mine"
    hilovit.save_pretrained(model, other, overwrite=True)
    assert not (other / "notes.txt").exists() and (other / "config.json").is_file()
    repo = hilovit.save_pretrained(model, tmp_path / "repo")
    hilovit.save_pretrained(create_model("litv2_nano", num_classes=3), repo)  # its own folder: replaced
    assert json.loads((repo / "config.json").read_text())["num_classes"] == 3

    def broken(*args, **kwargs):
        raise RuntimeError("card failed")

    monkeypatch.setattr("hilovit.model_card.model_card", broken)
    with pytest.raises(RuntimeError, match="card failed"):
        hilovit.save_pretrained(model, tmp_path / "new")
    with pytest.raises(RuntimeError, match="card failed"):
        hilovit.save_pretrained(model, repo)
    assert not (tmp_path / "new").exists() and json.loads((repo / "config.json").read_text())["num_classes"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "repo"]  # no temporary folder left
    with pytest.raises(ValueError, match="label_names for a model with 2 classes"):
        hilovit.save_pretrained(model, tmp_path / "x", config={"label_names": ["a", "b", "c"]})


# --------------------------------------------------------------------------- a training run
def _fake_run(root: Path, name: str, meta: dict, summary: dict, recipe: str) -> Path:
    """A run folder as ``hilovit train`` leaves it: weights with their metadata, summary.json, config.yaml."""
    torch.manual_seed(0)
    run = root / name
    run.mkdir(parents=True)
    net = create_model(meta["model"], num_classes=int(meta["num_classes"]), in_chans=int(meta["in_chans"]))
    if hasattr(net, "bbox_head"):  # confident enough for an untrained RetinaNet to draw boxes
        torch.nn.init.constant_(net.bbox_head.retina_cls.bias, 1.0)
    save_safetensors(net.state_dict(), run / "model.safetensors", metadata={"format": "hilovit-train", **meta})
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text(recipe)
    return run


RUNS = {
    "classification": ({"task": "classification", "model": "litv2_nano", "num_classes": "10", "in_chans": "1",
                        "img_size": "28", "classes": json.dumps(FASHION), "dataset": "fashion-mnist",
                        "mean": "0.286", "std": "0.353", "model_kwargs": "{}"},
                       {"model": "litv2_nano", "dataset": "fashion-mnist", "eval_split": "test", "epochs": 5,
                        "train_images": 60000, "eval_images": 10000, "test_top1": 91.87, "test_top5": 99.84,
                        "config": {"epochs": 5, "batch_size": 128, "base_lr": 0.008}},
                       "model: litv2_nano\ndata: fashion-mnist\nepochs: 5\nbatch_size: 128\n"),
    "segmentation": ({"task": "segmentation", "model": "semfpn_litv2_nano", "num_classes": "11", "in_chans": "1",
                      "classes": json.dumps(["background"] + FASHION), "dataset": "fashion-scenes", "mean": "0.2",
                      "std": "0.3", "eval_scale": "96,96", "ignore_index": "255", "model_kwargs": "{}"},
                     {"task": "segmentation", "dataset": "fashion-scenes", "eval_split": "test", "eval_images": 300,
                      "test_miou": 51.65, "config": {"epochs": 4, "batch_size": 8, "lr": 0.002}},
                     "task: segmentation\nmodel: semfpn_litv2_nano\ndata: fashion-scenes\nepochs: 4\n"),
    "detection": ({"task": "detection", "model": "retinanet_litv2_nano", "num_classes": "10", "in_chans": "1",
                   "classes": json.dumps(FASHION), "dataset": "fashion-scenes", "mean": "0.5", "std": "0.5",
                   "category_ids": ",".join(str(i) for i in range(11, 21)), "eval_scale": "", "model_kwargs": "{}"},
                  {"task": "detection", "dataset": "fashion-scenes", "eval_split": "test", "eval_images": 300,
                   "test_ap50": 55.2, "config": {"epochs": 5, "batch_size": 16, "lr": 0.001}},
                  "task: detection\nmodel: retinanet_litv2_nano\ndata: fashion-scenes\nepochs: 5\n"),
}


def test_a_run_becomes_a_repository_with_its_card(tmp_path):
    run = _fake_run(tmp_path / "runs", "demo", *RUNS["classification"])
    folder = hilovit.save_pretrained(run, tmp_path / "repo")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                        "train_config.yaml"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["label_names"] == FASHION and cfg["model_args"] == {"in_chans": 1, "img_size": 28}
    assert cfg["pretrained_cfg"]["mean"] == [0.286] and cfg["pretrained_cfg"]["dataset"] == "fashion-mnist"
    card = (folder / "README.md").read_text()
    for text in ("pipeline_tag: image-classification", "| top1 | 91.87 |", "| top5 | 99.84 |", "fashion-mnist",
                 "| train images | 60000 |", "epochs: 5", f"hilovit train --config train_config.yaml --output {run}",
                 f"hilovit export --format hub --checkpoint {run} --output DIR", "`Ankle boot`"):
        assert text in card, text
    assert (folder / "train_config.yaml").read_text() == (run / "config.yaml").read_text()
    sd, meta = read_checkpoint(folder / "model.safetensors")  # the run's header: --checkpoint FOLDER works too
    assert meta["task"] == "classification" and meta["model"] == "litv2_nano" and json.loads(meta["classes"]) == FASHION
    want, _ = read_checkpoint(run)
    assert sd.keys() == want.keys() and all(torch.equal(sd[k], want[k]) for k in sd)


class FakeHfApi:
    """Stands in for huggingface_hub.HfApi: records the calls, keeps a copy of the uploaded folder."""

    calls = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=False, exist_ok=False, repo_type=None):
        self.calls.append(("create_repo", repo_id, private, exist_ok, repo_type, self.token))
        return f"https://hub.example/{repo_id}"

    def upload_folder(self, repo_id, folder_path, repo_type=None, commit_message=None):
        self.calls.append(("upload_folder", repo_id, repo_type))
        self.uploaded = Path(self.upload_to) / repo_id
        shutil.copytree(folder_path, self.uploaded)


def test_push_to_hub_uploads_the_saved_folder(tmp_path, monkeypatch, server):
    import huggingface_hub

    FakeHfApi.calls, FakeHfApi.upload_to = [], str(tmp_path / "uploaded")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    run = _fake_run(tmp_path / "runs", "seg", *RUNS["segmentation"])
    url = hilovit.push_to_hub(run, "org/seg-demo", token="secret", private=True)
    assert url == "https://hub.example/org/seg-demo"
    assert FakeHfApi.calls == [("create_repo", "org/seg-demo", True, True, "model", "secret"),
                               ("upload_folder", "org/seg-demo", "model")]
    up = tmp_path / "uploaded" / "org" / "seg-demo"
    assert sorted(p.name for p in up.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                    "train_config.yaml"]
    card = (up / "README.md").read_text()
    assert "hilovit.create_model('hf-hub:org/seg-demo')" in card and "| miou | 51.65 |" in card
    cfg = json.loads((up / "config.json").read_text())
    assert cfg["pretrained_cfg"]["test_scale"] == [96, 96] and cfg["pretrained_cfg"]["std"] == [0.3]
    _publish(server, up, "org/seg-demo")  # what was uploaded loads back as the run's model
    got = create_model("hf-hub:org/seg-demo")
    want, _ = read_checkpoint(run)
    assert all(torch.equal(v, want[k]) for k, v in got.state_dict().items())
    assert got.pretrained_cfg["label_names"] == ["background"] + FASHION
    for bad in ("org/", "a/b/c", "org name", ""):
        with pytest.raises(ValueError, match="repo_id must read 'org/name'"):
            hilovit.push_to_hub(run, bad)
    assert [c[0] for c in FakeHfApi.calls] == ["create_repo", "upload_folder"]  # nothing more was sent


# --------------------------------------------------------------------------- the command line
def _image(path: Path, size, channels: int) -> Path:
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, size=(*size, channels) if channels == 3 else size, dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


@pytest.mark.parametrize("task", list(RUNS))
def test_cli_export_hub_then_predict_from_the_folder(task, tmp_path, capsys, monkeypatch):
    run = _fake_run(tmp_path / "runs", task, *RUNS[task])
    image = _image(tmp_path / "img.png", (28, 28) if task == "classification" else (64, 48), 1)
    folder = tmp_path / "repo"
    assert main(["export", "--format", "hub", "--checkpoint", str(run), "--output", str(folder)]) == 0
    assert f"wrote {folder}" in capsys.readouterr().out
    assert (folder / "config.json").is_file()
    results = []
    for i, weights in enumerate((["--checkpoint", str(run)], ["--pretrained", f"local-dir:{folder}"],
                                 ["--checkpoint", str(folder)])):  # the folder read as a run, too
        out = tmp_path / f"pred{i}"
        extra = [] if task == "classification" else ["--output", str(out)]
        extra += ["--score-thr", "0.9"] if task == "detection" else []  # few boxes to draw; the JSON holds all
        assert main(["predict", str(image), *weights, "--json", *extra]) == 0
        results.append(json.loads(capsys.readouterr().out))
    a = results[0]
    for i, b in enumerate(results[1:], 1):
        if task == "classification":
            assert a == b and a[0]["predictions"][0]["label"] in FASHION
        elif task == "segmentation":
            assert a[0]["class_shares"] == b[0]["class_shares"]
            la, lb = (np.asarray(Image.open(tmp_path / f"pred{j}" / "img_labels.png")) for j in (0, i))
            assert np.array_equal(la, lb)
        else:
            assert a[0]["detections"] == b[0]["detections"]
            ja, jb = (json.loads((tmp_path / f"pred{j}" / "img_detections.json").read_text()) for j in (0, i))
            assert ja == jb and len(ja) > 0 and {r["category_id"] for r in ja} <= set(range(11, 21))


def test_cli_export_hub_options(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    run = _fake_run(tmp_path / "runs", "demo", *RUNS["classification"])
    assert main(["export", "--format", "hub", "--checkpoint", str(run), "--output", str(tmp_path / "r"),
                 "--img-size", "32"]) == 2
    assert "--img-size: not an option of export --format hub" in capsys.readouterr().err
    assert main(["export", "--format", "hub", "--checkpoint", str(run)]) == 2
    assert "--output DIR, --push ORG/NAME, or both" in capsys.readouterr().err
    assert main(["export", "--format", "hub", "--checkpoint", str(run), "--model", "swin_t",
                 "--output", str(tmp_path / "r")]) == 2
    assert "holds a 'litv2_nano' model, not 'swin_t'" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert main(["export", "--checkpoint", str(run), "--push", "org/x", "--output", str(tmp_path / "m.onnx")]) == 2
    assert "--push/--private: options of export --format hub" in capsys.readouterr().err
    FakeHfApi.calls, FakeHfApi.upload_to = [], str(tmp_path / "uploaded")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    assert main(["export", "--format", "hub", "--checkpoint", str(run), "--push", "org/fashion"]) == 0
    assert "uploaded to https://hub.example/org/fashion" in capsys.readouterr().out
    assert FakeHfApi.calls[0] == ("create_repo", "org/fashion", False, True, "model", None)
    assert (tmp_path / "uploaded" / "org" / "fashion" / "model.safetensors").is_file()
    assert publish.is_model_folder(tmp_path / "uploaded" / "org" / "fashion")
