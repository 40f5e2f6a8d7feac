"""Segmentation training, evaluation and prediction, with a tiny stand-in segmenter (a few convolutions)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from conftest import make_mask_folder
from hilovit.cli import main
from hilovit.models import registry
from hilovit.tasks.segmentation import SegmentationConfig
from hilovit.tasks.segmentation_eval import infer_logits, load_seg_checkpoint, normalize_images, seg_cross_entropy
from hilovit.tasks.segmentation_metrics import SegMetric
from hilovit.train import train
from hilovit.train.optim import PolySchedule

NUM_CLASSES = 3  # conftest.make_mask_folder's classes


class TinySeg(nn.Module):
    """(B, C, H, W) -> (B, K, H, W): two convolutions, a BatchNorm, and logits at half size resized up
    (as a real segmenter, whose logits the engine must bring to the label size)."""

    def __init__(self, num_classes: int = NUM_CLASSES, in_chans: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.cls = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        y = self.cls(F.relu(self.bn(self.conv(x))))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


@pytest.fixture
def tiny_registered():
    """'tiny_seg' in the model registry for the CLI tests, removed afterwards."""
    registry._load_families()

    def tiny_seg(num_classes=NUM_CLASSES, in_chans=3, **kw):
        return TinySeg(num_classes, in_chans)

    registry._ENTRYPOINTS["tiny_seg"] = tiny_seg
    yield "tiny_seg"
    registry._ENTRYPOINTS.pop("tiny_seg", None)


@pytest.fixture
def masks(tmp_path):
    return make_mask_folder(tmp_path / "data")


def fast_options(data, out, **kw):
    opts = dict(data=str(data), num_classes=NUM_CLASSES, output=str(out), epochs=2, batch_size=4, lr=0.05,
                crop_size=16, img_scale=(64, 16), photometric=False, amp="off", workers=0, progress="off",
                predictions=1, seed=3)
    opts.update(kw)
    return opts


# --------------------------------------------------------------------------- loss and schedule
def test_loss_ignores_255_pixels_and_equals_the_plain_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    labels = torch.randint(0, 4, (2, 5, 6), generator=g)
    labels[0, :2] = 255
    loss = seg_cross_entropy(logits, labels)
    # plain math: -log softmax at the label, averaged over the labelled pixels only
    logp = logits - logits.exp().sum(1, keepdim=True).log()
    keep = labels != 255
    picked = logp.permute(0, 2, 3, 1)[keep].gather(1, labels[keep].unsqueeze(1))
    assert torch.allclose(loss, -picked.mean(), atol=1e-6)
    assert torch.allclose(seg_cross_entropy(logits, labels, normalizer=7.0), -picked.sum() / 7.0, atol=1e-5)
    # whatever the logits say at ignored pixels changes nothing
    other = logits.clone()
    other[0, :, :2] = 100 * torch.randn(4, 2, 6, generator=g)
    assert torch.allclose(seg_cross_entropy(other, labels), loss, atol=1e-6)
    # no labelled pixel: 0, not NaN, and gradients still flow (as zeros)
    x = logits.clone().requires_grad_()
    empty = seg_cross_entropy(x, torch.full_like(labels, 255))
    empty.backward()
    assert empty.item() == 0 and torch.count_nonzero(x.grad) == 0
    # logits at half size are resized to the label size before the loss
    small = torch.randn(1, 3, 4, 4, generator=g)
    lab = torch.randint(0, 3, (1, 8, 8), generator=g)
    up = F.interpolate(small, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(seg_cross_entropy(small, lab), F.cross_entropy(up, lab), atol=1e-6)


def test_poly_schedule_is_mmcv_poly_with_warmup():
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1.0)
    s = PolySchedule(opt, 1e-4, total_steps=100, power=0.9, min_lr=1e-6, warmup_iters=10, warmup_ratio=0.1)
    for t in (0, 5, 10, 50, 99, 100):
        s.step(t)
        poly = (1e-4 - 1e-6) * (1 - t / 100) ** 0.9 + 1e-6
        if t < 10:
            poly *= 1 - (1 - t / 10) * (1 - 0.1)
        assert math.isclose(opt.param_groups[0]["lr"], poly, rel_tol=1e-12)
    assert SegmentationConfig().lr == 1e-4 and SegmentationConfig().weight_decay == 1e-4  # official ADE20K


# --------------------------------------------------------------------------- training
def test_training_lowers_the_loss_and_summary_equals_recomputed_metric(masks, tmp_path):
    out = tmp_path / "run"
    s = train(task="segmentation", model=TinySeg, **fast_options(masks, out, epochs=3, eval_scale=(24, 24)))
    rows = list(__import__("csv").DictReader(open(out / "metrics.csv")))
    losses = [float(r["train_loss"]) for r in rows]
    assert len(losses) == 3 and losses[-1] < 0.7 * losses[0], losses
    assert s["test_miou"] > 50  # the shades tell the classes apart
    for key in ("test_miou", "test_macc", "test_aacc"):
        assert key in s
    # recompute from the saved weights: whole-image inference at the images' own size (eval_scale 24x24 keeps
    # them) with the saved mean/std, SegMetric over the val split
    model, info = load_seg_checkpoint(out / "model.safetensors", TinySeg)
    assert info["classes"] == ["0", "1", "2"] and info["in_chans"] == 3
    metric = SegMetric(NUM_CLASSES)
    for p in sorted((masks / "val" / "images").iterdir()):
        img = torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
        lab = torch.from_numpy(np.array(Image.open(masks / "val" / "masks" / p.name))).long()
        with torch.no_grad():
            logits = model(normalize_images(img[None], info["mean"], info["std"]))
        metric.update(logits.argmax(1), lab[None])
    ref = metric.compute()
    assert s["test_miou"] == pytest.approx(100 * ref["miou"], abs=1e-9)
    assert s["test_aacc"] == pytest.approx(100 * ref["aacc"], abs=1e-9)
    assert list(s["per_class_iou"]) == ["0", "1", "2"]
    assert [s["per_class_iou"][c] for c in "012"] == pytest.approx([100 * v for v in ref["iou"]], abs=1e-9)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["test_miou"] == s["test_miou"] and saved["task"] == "segmentation"
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["task"] == "segmentation" and json.loads(meta["classes"]) == ["0", "1", "2"]
    assert Image.open(out / "predictions.png").size[0] > 100


def test_resume_after_one_epoch_equals_two_epochs_straight(masks, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(task="segmentation", model=TinySeg, **fast_options(masks, a))
    first = train(task="segmentation", model=TinySeg, **fast_options(masks, b, stop_at_epoch=1))
    assert not first["finished"] and not (b / "model.safetensors").exists()
    train(task="segmentation", model=TinySeg, output=str(b), resume=True, progress="off")
    wa = torch.load(a / "last.pt", weights_only=True)
    wb = torch.load(b / "last.pt", weights_only=True)
    assert wa["step"] == wb["step"] == 2 * (24 // 4)
    for k in wa["model"]:
        assert torch.equal(wa["model"][k], wb["model"][k]), k
    with pytest.raises(ValueError, match="batch_size=8 \\(the run's: 4\\)"):
        train(task="segmentation", model=TinySeg, output=str(b), resume=True, batch_size=8, progress="off")


def test_a_kill_between_the_checkpoint_and_the_metrics_file_is_repaired_on_resume(masks, tmp_path, monkeypatch,
                                                                                 kill_metrics_write):
    import csv

    import hilovit.train.engine as seg_task

    out = tmp_path / "run"
    real = kill_metrics_write(seg_task, "write_metrics_csv")
    with pytest.raises(KeyboardInterrupt):
        train(task="segmentation", model=TinySeg, **fast_options(masks, out))
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 1
    monkeypatch.setattr(seg_task, "write_metrics_csv", real)
    train(task="segmentation", model=TinySeg, output=str(out), resume=True, progress="off")
    assert [r["epoch"] for r in csv.DictReader((out / "metrics.csv").open())] == ["1", "2"]


def test_fashion_scenes_with_its_recipe(idx_dir, tmp_path):
    s = train(task="segmentation", model=TinySeg, data="fashion-scenes", data_dir=str(idx_dir),
              output=str(tmp_path / "f"), epochs=1, train_subset=8, eval_subset=4, batch_size=4, threads=None,
              amp="off", progress="off", predictions=0)
    cfg = s["config"]
    assert cfg["crop_size"] == [128, 128] and cfg["poly_power"] == 1.0  # from the packaged fashion-scenes recipe
    assert s["eval_images"] == 4 and len(s["per_class_iou"]) == 11
    assert list(s["per_class_iou"])[0] == "background"


# --------------------------------------------------------------------------- CLI
def test_cli_train_eval_predict(masks, tmp_path, capsys, tiny_registered):
    out = tmp_path / "cli"
    args = ["train", "--task", "segmentation", "--model", tiny_registered, "--data", str(masks), "--num-classes", "3",
            "--output", str(out), "--epochs", "2", "--batch-size", "4", "--lr", "0.05", "--no-photometric",
            "--crop-size", "16", "--img-scale", "64,16", "--amp", "off", "--workers", "0", "--progress", "off",
            "--predictions", "0"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert f"mIoU {summary['test_miou']:.2f}%" in capsys.readouterr().out
    assert main(["eval", "--task", "segmentation", "--checkpoint", str(out), "--data", str(masks), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["miou"] == pytest.approx(summary["test_miou"], abs=1e-9)
    assert res["per_class_iou"] == pytest.approx(summary["per_class_iou"])
    assert main(["eval", "--task", "segmentation", "--checkpoint", str(out), "--data", str(masks)]) == 0
    assert f"mIoU {summary['test_miou']:.2f}%" in capsys.readouterr().out
    # predict: the checkpoint's metadata sends it to segmentation without --task
    img = sorted((masks / "val" / "images").iterdir())[0]
    assert main(["predict", str(img), "--checkpoint", str(out / "model.safetensors"), "--output",
                 str(tmp_path / "pred")]) == 0
    written = Image.open(tmp_path / "pred" / f"{img.stem}_labels.png")
    assert written.mode == "P" and written.size == Image.open(img).size
    from hilovit.tasks.segmentation_predict import SegPredictor

    labels = SegPredictor(out).predict(img)
    assert labels.shape == (24, 24) and np.array_equal(np.array(written), labels.numpy())
    assert Image.open(tmp_path / "pred" / f"{img.stem}_overlay.png").size == (24, 24)
    if __import__("importlib").util.find_spec("onnxruntime") is not None:
        assert main(["export", "--checkpoint", str(out), "--output", str(tmp_path / "m.onnx"), "--sizes", "24,24",
                     "16,40"]) == 0
        assert "3x16x40" in capsys.readouterr().out and (tmp_path / "m.onnx").is_file()


def test_cli_bad_input_gives_one_clear_line(masks, tmp_path, capsys, tiny_registered):
    base = ["train", "--task", "segmentation", "--model", tiny_registered, "--output", str(tmp_path / "x")]
    assert main([*base, "--data", "no-such-data"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-data" in err[0] and "fashion-scenes" in err[0]
    assert main([*base, "--data", str(masks)]) == 2  # a mask folder needs --num-classes
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--num-classes" in err[0] and str(masks) in err[0]
    assert main([*base, "--data", str(masks), "--model", "semfpn_nothing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'semfpn_nothing'" in err[0]
    # a recipe saying `task: segmentation` goes to segmentation without --task
    assert main(["train", "--config", "fashion-scenes", "--model", "nope", "--output", str(tmp_path / "x")]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: one line, exit 2
        main(["train", "--task", "captioning"])
    assert "invalid choice: 'captioning'" in capsys.readouterr().err
    assert not (tmp_path / "x" / "last.pt").exists()


def test_whole_image_inference_resizes_logits_to_the_label():
    model = TinySeg().eval()
    img = torch.randint(0, 256, (1, 3, 20, 30), dtype=torch.uint8)
    logits = infer_logits(model, img, (0.5,) * 3, (0.25,) * 3, out_size=(20, 30), eval_scale=(20, 10))
    # the image is rescaled to fit (20, 10): 10x15, run, and the logits are stretched back to 20x30
    small = F.interpolate(img.float(), size=(10, 15), mode="bilinear", align_corners=False).round().clamp(0, 255)
    with torch.no_grad():
        ref = F.interpolate(model(normalize_images(small.to(torch.uint8), (0.5,) * 3, (0.25,) * 3)), size=(20, 30),
                            mode="bilinear", align_corners=False)
    assert logits.shape == (1, 3, 20, 30) and torch.allclose(logits, ref, atol=1e-5)


def test_segmentation_figure(tmp_path):
    from hilovit.viz.segmentation import colorize, save_segmentation_figure, seg_palette

    pal = seg_palette(11)
    assert len({tuple(c) for c in pal}) == 11 and tuple(pal[0]) == (0, 0, 0)
    lab = torch.tensor([[0, 1], [2, 255]])
    col = colorize(lab, 3)
    assert tuple(col[0, 1]) == tuple(pal[1]) and tuple(col[1, 1]) == (255, 255, 255)
    with pytest.raises(ValueError, match="outside"):
        colorize(torch.tensor([[5]]), 3)
    path = save_segmentation_figure(torch.zeros(1, 8, 8, dtype=torch.uint8), torch.zeros(8, 8, dtype=torch.long),
                                    torch.ones(8, 8, dtype=torch.long), tmp_path / "fig.png", ["bg", "a", "b"])
    assert path.is_file() and Image.open(path).size[0] >= 300


# --------------------------------------------------------------------------- two processes
class PlainSeg(nn.Module):
    """No BatchNorm: its statistics would be per process (the weights are then comparable exactly)."""

    def __init__(self, num_classes: int = NUM_CLASSES, in_chans: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 6, 3, padding=1)
        self.cls = nn.Conv2d(6, num_classes, 1)

    def forward(self, x):
        return self.cls(torch.tanh(self.conv(x)))


SCRIPT = """
import sys
sys.path[:0] = [{tests!r}, {tests_root!r}]  # this file, and conftest.py which it imports
from test_segmentation_task import PlainSeg
from hilovit.models import registry
from hilovit.cli import main
registry._load_families()
registry._ENTRYPOINTS["plain_seg"] = lambda num_classes=3, in_chans=3, **kw: PlainSeg(num_classes, in_chans)
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # two processes under torchrun: ~30 s with their start-up
@pytest.mark.timeout(240)
def test_two_processes_match_one(masks, tmp_path):
    """torchrun with 2 processes (Gloo) gives one process's weights and mIoU: the loss is normalised by the labelled
    pixels of the global batch, the augmentation depends on (seed, epoch, index) only, the metric is summed."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    opts = fast_options(masks, tmp_path / "one", epochs=1, batch_size=8, predictions=0, photometric=True)
    one = train(task="segmentation", model=PlainSeg, **opts)
    script = tmp_path / "run_plain.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), tests_root=str(Path(__file__).parents[1])))
    flags = ["--model", "plain_seg", "--data", str(masks), "--num-classes", "3", "--output", str(tmp_path / "two"),
             "--epochs", "1", "--batch-size", "8", "--lr", "0.05", "--crop-size", "16", "--img-scale", "64,16",
             "--amp", "off", "--workers", "0", "--progress", "log", "--predictions", "0", "--seed", "3",
             "--threads", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")]))
    # --standalone: the rendezvous binds a free port itself (no port picked beforehand that another process could take)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           str(script), "train", "--task", "segmentation", *flags]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 processes" in proc.stdout and proc.stdout.count("epoch 1/1: train loss") == 1
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["processes"] == 2 and two["eval_images"] == one["eval_images"] == 6
    assert two["test_miou"] == pytest.approx(one["test_miou"], abs=1e-6)


# --------------------------------------------------------------------------- ONNX
def test_export_segmenter_dynamic_height_width(tmp_path):
    pytest.importorskip("onnxruntime")
    from hilovit.export import ExportVerificationError, export_onnx

    res = export_onnx(TinySeg(), tmp_path / "seg.onnx", sizes=((32, 32), (24, 40)))
    assert res.path.is_file() and set(res.diffs) == {"1x32x32", "3x24x40"} and res.max_abs_diff < 1e-4

    class FixedSize(TinySeg):  # a trace that freezes the output size must be refused, nothing written
        def forward(self, x):
            y = self.cls(F.relu(self.bn(self.conv(x))))
            return F.interpolate(y, size=(int(x.shape[-2]), int(x.shape[-1])), mode="bilinear", align_corners=False)

    with pytest.raises(ExportVerificationError):
        export_onnx(FixedSize(), tmp_path / "bad.onnx", sizes=((32, 32), (24, 40)))
    assert not (tmp_path / "bad.onnx").exists()


# --------------------------------------------------------------------------- large images
class Coarse(nn.Module):
    """Logits at 1/8 of the input size (as a Semantic FPN head): the label map is a large upsampling."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 8, stride=8)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("out_size, rows", [((203, 157), 16), ((64, 2000), 7), ((1000, 40), 10)])
def test_banded_labels_equal_the_full_resize_except_at_near_ties(out_size, rows):
    from hilovit.tasks.segmentation_eval import infer_labels

    torch.manual_seed(0)
    model = Coarse().eval()
    image = torch.randint(0, 256, (1, 3, 64, 48), dtype=torch.uint8)
    mean, std = (0.5,) * 3, (0.25,) * 3
    got = infer_labels(model, image, mean, std, out_size, rows_per_chunk=rows)
    with torch.no_grad():  # the reference: the whole logits map resized at once, then the argmax
        small = model((image.float() / 255 - 0.5) / 0.25)
        full = F.interpolate(small, size=out_size, mode="bilinear", align_corners=False)
    want = full.argmax(1)
    assert got.shape == want.shape == (1, *out_size) and got.dtype == torch.int64
    differ = got != want
    top2 = full.topk(2, dim=1).values
    gap = (top2[:, 0] - top2[:, 1])[differ]
    assert differ.float().mean() < 1e-3 and (gap <= 1e-5 * full.abs().amax()).all(), (int(differ.sum()), gap)
    # and where they differ, the banded label is one of the tied classes
    chosen = full.gather(1, got[:, None])[:, 0][differ]
    assert torch.allclose(chosen, top2[:, 0][differ], atol=1e-5 * float(full.abs().amax()))


def test_a_large_image_without_eval_scale_is_refused(masks, tmp_path, tiny_registered):
    from hilovit.tasks.segmentation_predict import SegPredictor

    out = tmp_path / "run"
    train(task="segmentation", model=tiny_registered, **fast_options(masks, out, epochs=1, predictions=0))
    big = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000), (130, 130, 130)).save(big)
    predictor = SegPredictor(out, max_pixels=1_000_000)
    predictor.eval_scale = None  # as for weights that record no test scale
    with pytest.raises(ValueError, match=r"3000x2000 pixels is larger than 1,000,000 pixels .*--eval-scale"):
        predictor.predict(big)
    predictor.eval_scale = (600, 400)  # rescaled for the network: the labels come back at the image's size
    assert predictor.predict(big).shape == (2000, 3000)
