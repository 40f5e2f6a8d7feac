"""``eval`` against the class names a checkpoint records, and the data it records, for every task.

A checkpoint whose classes are the data's in another order is scored by name: its results equal those of
the same weights saved in the data's order (computed without any mapping). Other names are refused,
naming both lists. Without ``--data`` each task evaluates on the data the run recorded.
"""

import json

import pytest
import torch

from conftest import make_coco_folder, make_image_folder
from hilovit import create_model
from hilovit.cli import main
from hilovit.models.checkpoint import read_checkpoint, save_safetensors
from hilovit.tasks.classification_eval import run_eval
from hilovit.tasks.eval_checks import class_order, recorded_data
from hilovit.tasks.segmentation_eval import run_seg_eval
from hilovit.train.output import RUN_FILES, clear_output

FAST = dict(threads=1, progress="off", workers=0)


def _permuted_copy(src, dst, order, names):
    """The weights of ``src`` with the classifier rows and the recorded names in ``order`` (old index per new)."""
    sd, meta = read_checkpoint(src)
    head = "decode_head.conv_seg" if "decode_head.conv_seg.weight" in sd else "head"
    index = torch.tensor(order)
    sd[f"{head}.weight"] = sd[f"{head}.weight"][index].clone()
    sd[f"{head}.bias"] = sd[f"{head}.bias"][index].clone()
    dst.mkdir()
    save_safetensors(sd, dst / "model.safetensors", metadata={**meta, "classes": json.dumps([names[i] for i in order])})
    return dst


# --------------------------------------------------------------------------- the rule
def test_class_order():
    assert class_order(["a", "b", "c"], ["a", "b", "c"], "ck", "data") is None
    assert class_order(None, ["a", "b"], "ck", "data") is None  # nothing recorded: nothing to compare
    assert class_order(["0", "1", "2"], ["x", "y", "z"], "ck", "data") is None  # indices are no names
    assert class_order(["x", "y", "z"], ["0", "1", "2"], "ck", "data") is None
    # data class i is the checkpoint's class order[i]
    assert class_order(["dog", "cat", "owl"], ["cat", "dog", "owl"], "ck", "data") == [1, 0, 2]
    with pytest.raises(ValueError, match=r"trained on the classes \['cat', 'dog'\], but the data folder:x has the "
                                         r"classes \['ant', 'dog'\] \(only in the checkpoint: \['cat'\]; only in "
                                         r"the data: \['ant'\]\)"):
        class_order(["cat", "dog"], ["ant", "dog"], "ck", "folder:x")
    with pytest.raises(ValueError, match="repeated"):
        class_order(["a", "a", "b"], ["a", "b", "a"], "ck", "data")


# --------------------------------------------------------------------------- classification
@pytest.fixture(scope="module")
def cls_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("names")
    data = make_image_folder(root / "val", classes=("cat", "dog", "owl"), per_class=4)
    torch.manual_seed(0)
    run = root / "run"
    run.mkdir()
    meta = {"task": "classification", "model": "litv2_nano", "dataset": f"folder:{data}", "img_size": "28",
            "in_chans": "3", "classes": json.dumps(["cat", "dog", "owl"]), "mean": "0.5,0.5,0.5",
            "std": "0.25,0.25,0.25"}
    save_safetensors(create_model("litv2_nano", num_classes=3).state_dict(), run / "model.safetensors", metadata=meta)
    return root, data, run


def test_classification_same_names_in_another_order_are_scored_by_name(cls_run, tmp_path):
    root, data, run = cls_run
    base = run_eval(checkpoint=run, data=str(data), **FAST)
    assert base["class_order"] == "as recorded" and base["model"] == "litv2_nano"  # the name read from the file
    shuffled = _permuted_copy(run / "model.safetensors", tmp_path / "shuffled", [2, 0, 1], ["cat", "dog", "owl"])
    got = run_eval(checkpoint=shuffled, data=str(data), **FAST)
    assert got["class_order"].startswith("by name")
    assert got["classes"] == ["cat", "dog", "owl"]
    assert got["confusion"] == base["confusion"] and got["per_class"] == base["per_class"]
    assert got["top1"] == base["top1"] and got["loss"] == pytest.approx(base["loss"], abs=1e-6)


def test_classification_other_names_are_refused(cls_run, tmp_path, capsys):
    root, data, run = cls_run
    other = make_image_folder(tmp_path / "other", classes=("ant", "bee", "cow"), per_class=1)
    with pytest.raises(ValueError, match=r"\['cat', 'dog', 'owl'\].*\['ant', 'bee', 'cow'\]"):
        run_eval(checkpoint=run, data=str(other), **FAST)
    assert main(["eval", "--checkpoint", str(run), "--data", str(other), "--progress", "off"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'ant', 'bee', 'cow'" in err and "'cat', 'dog', 'owl'" in err
    assert not (run / "eval").exists()  # nothing written


def test_cli_eval_says_the_classes_were_matched(cls_run, tmp_path, capsys):
    root, data, run = cls_run
    shuffled = _permuted_copy(run / "model.safetensors", tmp_path / "shuffled", [1, 2, 0], ["cat", "dog", "owl"])
    assert main(["eval", "--checkpoint", str(shuffled), "--data", str(data), "--progress", "off",
                 "--threads", "1", "--workers", "0"]) == 0
    assert "classes matched by name" in capsys.readouterr().out
    assert json.loads((shuffled / "eval" / "eval.json").read_text())["class_order"].startswith("by name")


# --------------------------------------------------------------------------- segmentation
SCENE_NAMES = ["background"] + [str(i) for i in range(10)]  # fashion-scenes made from idx_dir's garments


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory, idx_dir):
    root = tmp_path_factory.mktemp("seg-names")
    torch.manual_seed(0)
    net = create_model("semfpn_litv2_nano", num_classes=11, in_chans=1)
    run = root / "run"
    run.mkdir()
    meta = {"task": "segmentation", "model": "semfpn_litv2_nano", "num_classes": "11", "in_chans": "1",
            "classes": json.dumps(SCENE_NAMES), "dataset": "fashion-scenes", "mean": "0.2", "std": "0.3",
            "eval_scale": "128,128", "ignore_index": "255"}
    save_safetensors(net.state_dict(), run / "model.safetensors", metadata=meta)
    (run / "config.yaml").write_text(f"model: semfpn_litv2_nano\ndata: fashion-scenes\ndata_dir: {idx_dir}\nseed: 5\n")
    return root, run


def test_segmentation_same_names_in_another_order_are_scored_by_name(seg_run, tmp_path):
    root, run = seg_run
    base = run_seg_eval(run, eval_subset=2, threads=1)  # no data named: the recorded fashion-scenes
    assert base["dataset"] == "fashion-scenes" and base["class_order"] == "as recorded"
    order = [3, 0, 1, 2, 10, 9, 8, 7, 6, 5, 4]
    shuffled = _permuted_copy(run / "model.safetensors", tmp_path / "shuffled", order, SCENE_NAMES)
    (shuffled / "config.yaml").write_text((run / "config.yaml").read_text())
    got = run_seg_eval(shuffled, eval_subset=2, threads=1)
    assert got["class_order"].startswith("by name")
    for key in ("miou", "macc", "aacc", "per_class_iou", "per_class_acc"):
        assert got[key] == pytest.approx(base[key], abs=1e-9), key
    assert got["loss"] == pytest.approx(base["loss"], rel=1e-5)


def test_segmentation_other_names_are_refused(seg_run, tmp_path, idx_dir):
    root, run = seg_run
    renamed = _permuted_copy(run / "model.safetensors", tmp_path / "renamed", list(range(11)),
                             [f"c{i}" for i in range(11)])
    with pytest.raises(ValueError, match=r"trained on the classes \['c0', 'c1'.*but the data fashion-scenes has the "
                                         r"classes \['background', '0'"):
        run_seg_eval(renamed, data="fashion-scenes", data_dir=str(idx_dir), eval_subset=2, output=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_segmentation_eval_defaults_to_the_recorded_data(seg_run, tmp_path, idx_dir):
    root, run = seg_run
    sd, meta = read_checkpoint(run / "model.safetensors")
    assert recorded_data(run / "model.safetensors", meta) == {"data": "fashion-scenes", "data_dir": str(idx_dir),
                                                                "seed": 5}
    # the recorded seed picks the scenes: the same as naming everything by hand
    given = run_seg_eval(run, data="fashion-scenes", data_dir=str(idx_dir), seed=5, eval_subset=2, threads=1)
    assert run_seg_eval(run, eval_subset=2, threads=1)["miou"] == given["miou"]
    bare = tmp_path / "bare"
    bare.mkdir()
    save_safetensors(sd, bare / "model.safetensors", metadata={k: v for k, v in meta.items() if k != "dataset"})
    with pytest.raises(ValueError, match="records no dataset"):
        run_seg_eval(bare)
    meta_only = tmp_path / "meta-only"  # no config.yaml: the metadata's dataset entry
    meta_only.mkdir()
    save_safetensors(sd, meta_only / "model.safetensors", metadata={**meta, "dataset": "masks:/data/streets"})
    assert recorded_data(meta_only / "model.safetensors", read_checkpoint(meta_only / "model.safetensors")[1]) == \
        {"data": "/data/streets"}


def test_segmentation_eval_of_a_mask_folder_run_uses_that_folder(tmp_path):
    from conftest import make_mask_folder

    masks = make_mask_folder(tmp_path / "streets", n_train=2, n_val=2, size=24)
    torch.manual_seed(0)
    run = tmp_path / "run"
    run.mkdir()
    meta = {"task": "segmentation", "model": "semfpn_litv2_nano", "num_classes": "3", "in_chans": "3",
            "classes": json.dumps(["0", "1", "2"]), "dataset": f"masks:{masks}", "mean": "0.5,0.5,0.5",
            "std": "0.2,0.2,0.2", "eval_scale": "32,32"}
    net = create_model("semfpn_litv2_nano", num_classes=3, in_chans=3)
    save_safetensors(net.state_dict(), run / "model.safetensors", metadata=meta)
    got = run_seg_eval(run, threads=1)  # not fashion-scenes: the folder the run records
    assert got["dataset"] == f"masks:{masks}" and got["eval_split"] == "val" and got["images"] == 2


# --------------------------------------------------------------------------- --overwrite
def test_overwrite_removes_only_the_run_files(tmp_path):
    for name in RUN_FILES:
        (tmp_path / name).write_text("old")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "eval.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("the user's")
    removed = clear_output(tmp_path)
    assert sorted(removed) == sorted([*RUN_FILES, "eval"])
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


# --------------------------------------------------------------------------- detection
def _det_checkpoint(folder, model, names, coco):
    folder.mkdir()
    meta = {"format": "hilovit-train", "task": "detection", "model": "retinanet_litv2_nano",
            "num_classes": str(len(names)), "in_chans": "3", "classes": json.dumps(list(names)),
            "dataset": f"coco:{coco}", "model_kwargs": "{}"}
    save_safetensors(model.state_dict(), folder / "model.safetensors", metadata=meta)
    return folder


def test_detection_same_names_in_another_order_are_scored_by_name(tmp_path):
    """The same detector with its classes saved in another order (the logits of each anchor permuted, the
    names with them) gives the same AP per class name: its labels are mapped to the data's categories by name."""
    from hilovit.tasks.detection_eval import run_det_eval

    names = ("ant", "bee", "cow")
    coco = make_coco_folder(tmp_path / "coco", classes=names, per_split=3)
    torch.manual_seed(0)
    net = create_model("retinanet_litv2_nano", num_classes=3, in_chans=3)
    with torch.no_grad():  # scores well above the test threshold, differing per class
        net.bbox_head.retina_cls.bias.normal_(0.0, 1.0)
    plain = _det_checkpoint(tmp_path / "plain", net, names, coco)
    perm = [1, 2, 0]  # new label j is the old label perm[j]
    cls = net.bbox_head.retina_cls
    anchors = cls.out_channels // 3
    index = torch.tensor([a * 3 + perm[j] for a in range(anchors) for j in range(3)])
    with torch.no_grad():
        cls.weight.copy_(cls.weight[index].clone())
        cls.bias.copy_(cls.bias[index].clone())
    moved = _det_checkpoint(tmp_path / "moved", net, [names[p] for p in perm], coco)
    a = run_det_eval(plain, eval_scale=(64, 64), threads=1, output=str(tmp_path / "a"), progress="off")
    b = run_det_eval(moved, eval_scale=(64, 64), threads=1, output=str(tmp_path / "b"), progress="off")
    assert a["detections"] > 0 and any(v for v in a["per_class_ap"].values())
    assert a["class_order"] == "as recorded" and b["class_order"].startswith("by name")
    assert b["per_class_ap"] == a["per_class_ap"] and b["ap"] == a["ap"]


def test_detection_other_names_are_refused(tmp_path):
    from hilovit.tasks.detection_eval import run_det_eval

    coco = make_coco_folder(tmp_path / "coco", classes=("ant", "bee", "cow"))
    net = create_model("retinanet_litv2_nano", num_classes=3, in_chans=3)
    ckpt = _det_checkpoint(tmp_path / "other", net, ("ant", "bee", "dog"), coco)
    with pytest.raises(ValueError, match=r"only in the checkpoint: \['dog'\]; only in the data: \['cow'\]"):
        run_det_eval(ckpt, threads=1, output=str(tmp_path / "out"), progress="off")
    assert not (tmp_path / "out").exists()
