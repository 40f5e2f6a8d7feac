"""Every command for every task, fed bad input: a non-zero exit status, exactly one line on stderr, no
traceback, and nothing written or removed (the whole folder listed, sizes and times, before and after).

The table is data: :data:`TASKS` says how each task is trained, evaluated, predicted and exported (the
placeholders of the rows), :data:`ROWS` lists the bad inputs. A row for every task (``"*"``) runs once
per entry of :data:`TASKS`; a task's own rows name it. A new task is one entry in :data:`TASKS` and one
line per row of its own.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_coco_folder, make_image_folder, make_mask_folder
from hilovit.cli import main

SEG_NAMES = [f"c{i}" for i in range(11)]  # as many classes as fashion-scenes, other names
DET_CLASSES = 10  # the garments of fashion-scenes' instances (the background is no class)
BOMB_LIMIT = 2_000_000  # PIL.Image.MAX_IMAGE_PIXELS during the rows: Pillow refuses above twice it

COMMON = "--threads 1 --workers 0 --progress off --amp off"
TASKS = {  # how each task trains (valid options), its finished run, and the bad sizes and data of the rows
    "classification": {
        "train": "--model litv2_nano --data {photos} --img-size 32 --epochs 1 --batch-size 4 " + COMMON,
        "ckpt": "{root}/cls-run", "bare": "{root}/cls-bare", "named_ckpt": "{root}/cls-run",
        "other_data": "{other_names}", "huge_train": "--img-size 100000", "huge_eval": "--img-size 100000",
        "huge_export": "--img-size 100000", "predict_out": "",
    },
    "segmentation": {
        "train": "--model semfpn_litv2_nano --data {masks} --num-classes 3 --crop-size 32 --img-scale 64,32 "
                 "--epochs 1 --batch-size 4 --predictions 0 " + COMMON,
        "ckpt": "{root}/seg-run", "bare": "{root}/seg-bare", "named_ckpt": "{root}/seg-renamed",
        "other_data": "fashion-scenes --data-dir {idx}", "huge_train": "--crop-size 100000",
        "huge_eval": "--eval-scale 100000", "huge_export": "--sizes 9000,9000 64,64",
        "predict_out": "--output {root}/new",
    },
    "detection": {
        "train": "--model retinanet_litv2_nano --data fashion-scenes --data-dir {idx} --train-subset 8 "
                 "--eval-subset 2 --train-scale 64,64 --epochs 1 --batch-size 4 --warmup-iters 2 --predictions 0 "
                 + COMMON,
        "ckpt": "{root}/det-run", "bare": "{root}/det-bare", "named_ckpt": "{root}/det-renamed",
        "other_data": "{coco}", "huge_train": "--train-scale 100000,100000",
        "huge_eval": "--eval-scale 100000,100000", "huge_export": "--sizes 9000,9000 64,64",
        "predict_out": "--output {root}/new",
    },
}
# the finished runs the rows use: segmentation on fashion-scenes (grey, 11 named classes), made from idx_dir
RUNS = {
    "classification": "{train} --output {root}/cls-run",
    "segmentation": "--model semfpn_litv2_nano --data fashion-scenes --data-dir {idx} --train-subset 8 "
                    "--eval-subset 2 --crop-size 32 --img-scale 64,32 --epochs 1 --batch-size 4 --predictions 0 "
                    "--output {root}/seg-run " + COMMON,
    "detection": "{train} --output {root}/det-run",
}

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
ROWS = [
    # train: the user's folder is never written into, nor cleared by --overwrite
    ("*", "train", "{train} --output {root}/mine", ["neither empty nor a training run", "thesis.tex"]),
    ("*", "train", "{train} --output {root}/mixed --overwrite", ["neither empty nor a training run", "notes.txt"]),
    ("*", "train", "{train} --output {root}/notes.txt/run", ["notes.txt' is a file, not a folder"]),
    ("*", "train", "{train} --output {root}/new {huge_train}", ["tokens at the first stage", "4096x4096"]),
    ("segmentation", "train", "{train} --data {bad_masks} --output {root}/new --workers 1",
     ["s003.png", "36x30 (WxH) but its image", "is 36x36"]),
    # eval: an unreadable checkpoint says so; nothing recorded; other class names; absurd sizes
    ("*", "eval", "--task {task} --checkpoint {root}/junk.safetensors", ["cannot read", "junk.safetensors"]),
    ("*", "eval", "--checkpoint {bare}", ["records no dataset", "name the data"]),
    ("*", "eval", "--checkpoint {named_ckpt} --data {other_data}", ["was trained on the classes", "only in the data"]),
    ("*", "eval", "--checkpoint {ckpt} {huge_eval}", ["tokens at the first stage"]),
    # predict
    pytest.param("*", "predict", "{root}/photo.png --checkpoint {ckpt} --device cuda", ["'cuda' is not available"],
                 marks=NO_CUDA),
    ("*", "predict", "{root}/bomb.png --checkpoint {ckpt} {predict_out}",
     ["bomb.png", "4,200,000 pixels, above Pillow's limit of 4,000,000", "MAX_IMAGE_PIXELS"]),
    ("classification", "predict", "{root}/photo.png --checkpoint {ckpt} --mean 0.5,0.5 --std 0.5,0.5",
     ["--mean=(0.5, 0.5)", "3-channel model"]),
    ("classification", "predict", "{root}/photo.png --checkpoint {ckpt} --mean 0.5 --std 0", ["--std", "above 0"]),
    ("segmentation", "predict", "{root}/photo.png --checkpoint {ckpt} --mean 0.5 --std 0.5",
     ["not an option of predict for segmentation"]),
    ("segmentation", "predict", "{root}/wide.png --checkpoint {bare} --max-pixels 1000000 --output {root}/new",
     ["1500x1000 pixels is larger than 1,000,000", "--eval-scale"]),
    # export: never over a file, into a folder it cannot write, under a file; opsets and sizes it cannot do
    ("*", "export", "--checkpoint {ckpt} --output {root}/notes.txt", ["exists", "--overwrite"]),
    ("*", "export", "--checkpoint {ckpt} --output {read_only}/m.onnx", ["not writable"]),
    ("*", "export", "--checkpoint {ckpt} --output {root}/notes.txt/m.onnx", ["notes.txt' is a file, not a folder"]),
    ("*", "export", "--checkpoint {ckpt} --output {root}/new/m.onnx --opset 5", ["opset 5 is not supported"]),
    ("*", "export", "--checkpoint {ckpt} --output {root}/new/m.onnx {huge_export}", ["tokens at the first stage"]),
    # predict normalisation of a detector (appended here so that the ids of the rows above keep their numbers)
    ("detection", "predict", "{root}/photo.png --checkpoint {ckpt} --mean 0.5 --std 0",
     ["--std", "above 0"]),
    ("detection", "predict", "{root}/photo.png --checkpoint {ckpt} --mean 0.5,0.5 --std 0.5,0.5",
     ["not an option of predict for detection"]),
]


def _expand(rows):
    out = []
    for row in rows:
        marks = row.marks if hasattr(row, "marks") else ()
        values = row.values if hasattr(row, "values") else row
        tasks = list(TASKS) if values[0] == "*" else [values[0]]
        for task in tasks:
            label = f"{task}-{values[1]}-{values[2].split('{root}/')[-1].split()[0][:24]}-{len(out)}"
            out.append(pytest.param(task, *values[1:], marks=marks, id=label))
    return out


def _can_write(folder: Path) -> bool:
    probe = folder / f".probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


def read_only_folder(root: Path) -> Path:
    """A folder this process cannot write into: mode 0555, or, for root (whom modes do not stop), /sys,
    where no one can create a file."""
    folder = root.parent / f"{root.name}-read-only"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    if not _can_write(folder):
        return folder
    if Path("/sys").is_dir() and not _can_write(Path("/sys")):
        return Path("/sys")
    pytest.skip("no folder here refuses this process's writes")


@pytest.fixture(scope="module")
def world(tmp_path_factory, idx_dir):
    """The finished runs of :data:`RUNS`, copies of them that record no data (and no eval scale) or other class
    names, and the bad inputs."""
    root = tmp_path_factory.mktemp("cli-tasks")
    photos = root / "photos"
    make_image_folder(photos / "train", per_class=4)
    make_image_folder(photos / "val", per_class=2, seed=1)
    other = make_image_folder(root / "other", classes=("ant", "bee", "cow"), per_class=2)
    masks = make_mask_folder(root / "masks", n_train=8, n_val=2, size=36)
    bad = root / "bad-masks"
    shutil.copytree(masks, bad)
    Image.fromarray(np.zeros((30, 36), np.uint8)).save(bad / "train" / "masks" / "s003.png")
    coco = make_coco_folder(root / "coco", classes=("ant", "bee", "cow"))
    ctx = {"root": root, "photos": photos, "other_names": other, "masks": masks, "bad_masks": bad, "idx": idx_dir,
           "coco": coco}
    for task, run in RUNS.items():
        assert main(["train", *run.format(**{**ctx, "train": TASKS[task]["train"].format(**ctx)}).split()]) == 0
    from hilovit.models.checkpoint import read_checkpoint, save_safetensors

    for run, copy, change in (("cls-run", "cls-bare", {"dataset": None}),
                              ("seg-run", "seg-bare", {"dataset": None, "eval_scale": None}),
                              ("seg-run", "seg-renamed", {"classes": json.dumps(SEG_NAMES)}),
                              ("det-run", "det-bare", {"dataset": None, "eval_scale": None}),
                              ("det-run", "det-renamed", {"classes": json.dumps(SEG_NAMES[:DET_CLASSES])})):
        sd, meta = read_checkpoint(root / run / "model.safetensors")
        meta = {k: change.get(k, v) for k, v in meta.items() if change.get(k, v) is not None}
        (root / copy).mkdir()
        save_safetensors(sd, root / copy / "model.safetensors", metadata=meta)
    (root / "junk.safetensors").write_bytes(b"\x00" * 40)
    (root / "notes.txt").write_text("the user's notes\n")
    (root / "mine").mkdir()
    (root / "mine" / "thesis.tex").write_text("\\documentclass{article}\n")
    (root / "mixed").mkdir()
    (root / "mixed" / "last.pt").write_bytes(b"an old run")
    (root / "mixed" / "notes.txt").write_text("kept\n")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(root / "photo.png")
    Image.new("RGB", (2100, 2000), (90, 120, 30)).save(root / "bomb.png")  # 4.2 M pixels
    Image.new("RGB", (1500, 1000), (30, 20, 200)).save(root / "wide.png")  # 1.5 M pixels: below the limit
    ctx["read_only"] = read_only_folder(root)
    return ctx


def _listing(root: Path):
    """Every file and folder under ``root`` with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.stat()
            out[str(path.relative_to(root))] = (st.st_size if path.is_file() else -1, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("task, command, args, expected", _expand(ROWS))
def test_bad_input(world, task, command, args, expected, capfd, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", BOMB_LIMIT)
    monkeypatch.chdir(world["root"])  # defaults such as predictions/ would land here, and be seen
    ctx = {k: str(v) for k, v in world.items()}
    ctx.update(task=task)
    ctx.update({k: v.format(**ctx) for k, v in TASKS[task].items()})
    argv = [command, *args.format(**ctx).split()]
    before = _listing(world["root"])
    capfd.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    err = capfd.readouterr().err
    assert rc not in (0, None), (argv, err)
    assert "Traceback" not in err and "\x1b" not in err, err
    assert err.count("\n") == 1 and err.startswith(f"hilovit {command}"), err
    for text in expected:
        assert text in err, (text, err)
    assert _listing(world["root"]) == before, argv


def test_the_table_covers_every_command_of_every_task():
    covered = {(row.values[0], row.values[1]) for row in _expand(ROWS)}
    assert covered == {(task, command) for task in TASKS for command in ("train", "eval", "predict", "export")}


def test_a_segmentation_model_trains_as_segmentation_without_task(world):
    """RUNS gives no --task for semfpn_litv2_nano: the task follows from the model (it was trained as a
    classifier, and failed on the soft targets' shape)."""
    import json as _json

    summary = _json.loads((Path(world["root"]) / "seg-run" / "summary.json").read_text())
    assert summary["task"] == "segmentation" and "test_miou" in summary
    assert "--task" not in RUNS["segmentation"]
