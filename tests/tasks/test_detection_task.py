"""Detection as the third task of the one engine: training, resume, COCO evaluation, predict, export, transfer."""

import copy
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from hilovit import create_model
from hilovit.cli import main
from hilovit.train import train

TINY = dict(model="retinanet_litv2_nano", data="fashion-scenes", epochs=2, batch_size=4, train_subset=8,
            eval_subset=6, lr=1e-3, warmup_iters=2, train_scale=(96, 96), amp="off", workers=0, threads=1,
            progress="off", predictions=1, seed=1)


def _weights(run):
    return torch.load(run / "last.pt", weights_only=True)["model"]


def test_step_schedule_is_mmcv_step_with_warmup():
    from hilovit.train.optim import StepSchedule

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = StepSchedule(opt, 1e-3, total_steps=120, milestones=[80, 110], gamma=0.1, warmup_iters=10, warmup_ratio=0.01)
    for t, want in ((0, 1e-3 * 0.01), (5, 1e-3 * (1 - 0.5 * 0.99)), (10, 1e-3), (79, 1e-3), (80, 1e-4),
                    (109, 1e-4), (110, 1e-5)):
        s.step(t)
        assert math.isclose(opt.param_groups[0]["lr"], want, rel_tol=1e-12), t


def test_training_resumes_exactly_and_the_summary_is_cocoeval(idx_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    full = train(output=str(a), data_dir=str(idx_dir), **TINY)
    assert full["task"] == "detection" and full["finished"]
    for key in ("test_ap", "test_ap50", "test_ap75", "test_ap_small", "test_ap_medium", "test_ap_large"):
        assert 0.0 <= full[key] <= 100.0, key
    assert len(full["per_class_ap"]) == 10 and (a / "predictions.png").is_file()
    first = train(output=str(b), data_dir=str(idx_dir), stop_at_epoch=1, **TINY)
    assert not first["finished"] and not (b / "model.safetensors").exists()
    train(output=str(b), resume=True, progress="off")
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # the summary's AP is COCOeval of the saved model's detections on the same test scenes
    from hilovit.data.detection import build_det_datasets
    from hilovit.models._builder import load_model
    from hilovit.tasks.detection_eval import evaluate_detection

    model, meta = load_model(a)
    assert meta["task"] == "detection" and meta["classes"] == list(full["per_class_ap"])
    _, eval_ds, _ = build_det_datasets("fashion-scenes", seed=1, data_dir=str(idx_dir), num_test=6)
    again = evaluate_detection(model, eval_ds, batch_size=3)
    assert again["ap"] == pytest.approx(full["test_ap"], abs=1e-9)
    assert again["ap50"] == pytest.approx(full["test_ap50"], abs=1e-9)


def test_cli_train_eval_predict_export(idx_dir, tmp_path, capsys):
    out = tmp_path / "run"
    # the task follows from the model (retinanet_* is detection): no --task
    args = ["train", "--model", "retinanet_litv2_nano", "--data-dir", str(idx_dir), "--output", str(out),
            "--epochs", "1", "--batch-size", "4", "--train-subset", "8", "--eval-subset", "4", "--train-scale", "96,96",
            "--warmup-iters", "2", "--amp", "off", "--threads", "1", "--progress", "off", "--predictions", "0"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "detection" and f"box AP {summary['test_ap']:.2f}" in capsys.readouterr().out
    # the data recorded with the run (its first 4 test scenes, as in training)
    assert main(["eval", "--checkpoint", str(out), "--json", "--threads", "1", "--eval-subset", "4"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["ap"] == pytest.approx(summary["test_ap"], abs=1e-9) and res["images"] == 4
    assert (out / "eval" / "eval.json").is_file()
    scene = tmp_path / "scene.png"
    from hilovit.data.fashion_scenes import FashionSceneInstances

    image, _ = FashionSceneInstances("test", num_scenes=1, seed=1, root=str(idx_dir))[0]
    Image.fromarray(image[0].numpy()).save(scene)
    assert main(["predict", str(scene), "--checkpoint", str(out), "--output", str(tmp_path / "pred"),
                 "--score-thr", "0"]) == 0
    records = json.loads((tmp_path / "pred" / "scene_detections.json").read_text())
    assert (tmp_path / "pred" / "scene_detections.png").is_file()
    for r in records:
        x, y, w, h = r["bbox"]
        assert 1 <= r["category_id"] <= 10 and r["category"] and 0 <= r["score"] <= 1
        assert -1 <= x and -1 <= y and x + w <= 129 and y + h <= 129  # in the image's own pixels
    if __import__("importlib").util.find_spec("onnxruntime") is not None:
        assert main(["export", "--checkpoint", str(out), "--output", str(tmp_path / "det.onnx"),
                     "--sizes", "96,96", "100,70", "77,129"]) == 0
        printed = capsys.readouterr().out
        assert "3x100x70" in printed and "1x77x129" in printed and "predict_by_feat" in printed


def test_onnx_outputs_decode_to_the_same_detections(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from hilovit.export import export_model

    torch.manual_seed(0)
    model = create_model("retinanet_litv2_nano", num_classes=10, in_chans=1).eval()
    with torch.no_grad():  # a prior that lets some boxes through the 0.05 threshold
        model.bbox_head.retina_cls.bias.fill_(-2.0)
    ckpt = tmp_path / "m.safetensors"
    from hilovit.models.checkpoint import save_safetensors

    save_safetensors(model.state_dict(), ckpt, metadata={"model": "retinanet_litv2_nano", "task": "detection",
                                                         "num_classes": "10", "in_chans": "1"})
    export_model(None, tmp_path / "det.onnx", checkpoint=ckpt)
    image = torch.randint(0, 256, (1, 90, 110), dtype=torch.uint8)
    inputs, metas = model.data_preprocessor([image], "rgb")
    session = ort.InferenceSession(str(tmp_path / "det.onnx"), providers=["CPUExecutionProvider"])
    outs = [torch.from_numpy(o) for o in session.run(None, {"input": inputs.numpy()})]
    levels = len(outs) // 2
    got = model.bbox_head.predict_by_feat(outs[:levels], outs[levels:], metas)[0]
    want = model.predict([image], resize=False)[0]
    assert len(want["boxes"]) > 0 and torch.equal(got["labels"], want["labels"])
    torch.testing.assert_close(got["boxes"], want["boxes"], atol=1e-3, rtol=0)
    torch.testing.assert_close(got["scores"], want["scores"], atol=1e-5, rtol=0)


def _mask_rcnn_with_detections():
    torch.manual_seed(0)
    model = create_model("mask_rcnn_litv2_nano").eval()
    with torch.no_grad():  # a background prior that lets a few RoIs per image (4 to 32) through score_thr 0.05
        model.roi_head.bbox_head.fc_cls.bias[-1] = 3.0
    return model


def _same_detections(got, want, probs):
    """Same boxes/labels/scores; a mask pixel may differ only where its probability is within 1e-4 of 0.5."""
    assert torch.equal(got["labels"], want["labels"])
    torch.testing.assert_close(got["boxes"], want["boxes"], atol=1e-4, rtol=0)
    torch.testing.assert_close(got["scores"], want["scores"], atol=1e-4, rtol=0)
    assert got["masks"].shape == want["masks"].shape and got["masks"].dtype == torch.bool
    flipped = got["masks"] != want["masks"]
    assert bool(((probs[flipped] - 0.5).abs() <= 1e-4).all())


def test_mask_rcnn_onnx_graphs_give_the_same_detections_and_masks(tmp_path):
    """The network graph (RPN maps + FPN maps) and the heads graph, through mask_rcnn_from_onnx, detect as
    model.predict: a batch of two sizes as it is, and one resized (scale factors), masks pasted in the images."""
    ort = pytest.importorskip("onnxruntime")
    from hilovit.export import export_graph
    from hilovit.models.det_preprocessor import resize_keep_ratio
    from hilovit.tasks.detection_export import detector_export_spec, mask_rcnn_from_onnx, onnx_roi_heads

    model = _mask_rcnn_with_detections()
    result = export_graph(detector_export_spec(model, 1, [(96, 96), (100, 70)]), tmp_path / "det.onnx")
    assert not any(m.training for m in model.modules())  # the export leaves the model in eval mode, as it was
    heads_file = tmp_path / "det.roi_heads.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.onnx", "det.roi_heads.onnx"]
    assert set(result.diffs) == {"1x96x96", "3x100x70"} and result.max_abs_diff <= 1e-4
    (heads,) = result.companions
    assert heads.path == heads_file and set(heads.diffs) == {"K=1,M=4", "K=5,M=1", "K=2,M=3"}
    assert heads.max_abs_diff <= 1e-4
    net = ort.InferenceSession(str(tmp_path / "det.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in net.get_outputs()]
    assert names == [f"{k}_{lv}" for k in ("rpn_cls_score", "rpn_bbox_pred", "feat") for lv in range(4)]
    run_heads = onnx_roi_heads(heads_file)
    box_in, mask_in = torch.randn(1, 64, 7, 7), torch.randn(6, 64, 14, 14)
    with torch.no_grad():
        cls_score, bbox_pred = model.roi_head.bbox_head(box_in)
        mask_logits = model.roi_head.mask_head(mask_in)
    got = run_heads(box_in, mask_in)
    for ref, out in zip((cls_score, bbox_pred, mask_logits), got):
        assert out.shape == ref.shape and (out - ref).abs().max() <= 1e-4
    empty = run_heads(torch.zeros(0, 64, 7, 7), None)
    assert empty[0].shape == (0, 11) and empty[1].shape == (0, 40) and empty[2] is None
    # end to end, against model.predict; its twin pastes the mask probabilities (>= 0.5: the masks), which say
    # the pixels that may flip
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (1, 90, 110), dtype=torch.uint8, generator=g),
              torch.randint(0, 256, (1, 70, 64), dtype=torch.uint8, generator=g)]
    soft = copy.deepcopy(model)
    soft.roi_head.test_cfg["mask_thr_binary"] = None
    for resize in (False, (80, 64)):
        if resize:
            pairs = [resize_keep_ratio(img, resize) for img in images]
            metas = [{"ori_shape": tuple(img.shape[1:]), "scale_factor": f} for img, (_, f) in zip(images, pairs)]
            inputs, metas = model.data_preprocessor([im for im, _ in pairs], "rgb", metas)
        else:
            inputs, metas = model.data_preprocessor(images, "rgb")
        outs = net.run(None, {"input": inputs.numpy()})
        found = mask_rcnn_from_onnx(model, outs, run_heads, metas)
        for img, got, want in zip(images, found, soft.predict(images, resize=resize)):
            assert len(want["boxes"]) > 0 and got["masks"].shape[1:] == img.shape[1:]
            _same_detections(got, dict(want, masks=want["masks"] >= 0.5), want["masks"])
    with pytest.raises(ValueError, match=r"network_outputs must be the network graph's 12 outputs"):
        mask_rcnn_from_onnx(model, outs[:-1], run_heads, metas)
    with pytest.raises(TypeError, match="two-stage"):
        mask_rcnn_from_onnx(torch.nn.Linear(1, 1), outs, run_heads, metas)


def test_a_classifier_backbone_starts_the_detector(tmp_path):
    from hilovit.models.checkpoint import CheckpointError, save_safetensors

    torch.manual_seed(0)
    cls = create_model("litv2_nano", in_chans=1, num_classes=10, patch_size=4, img_size=56, local_ws=[0, 0, 2, 1])
    path = tmp_path / "cls.safetensors"
    save_safetensors(cls.state_dict(), path)
    with pytest.warns(UserWarning, match=r"backbone loaded from the checkpoint.*head.*norm.*left out.*"
                                         r"backbone.norm1.*bbox_head, neck"):
        det = create_model("retinanet_litv2_nano", num_classes=10, in_chans=1, pretrained=str(path))
    own = det.state_dict()
    for k, v in cls.state_dict().items():
        if not k.startswith(("head.", "norm.")):
            assert torch.equal(own["backbone." + k], v), k
    # a stem of another patch size is refused, naming both shapes: never half-loaded
    other = create_model("litv2_nano", in_chans=1, num_classes=10)  # patch 2
    save_safetensors(other.state_dict(), tmp_path / "p2.safetensors")
    with pytest.raises(CheckpointError, match=r"backbone.patch_embed.proj.weight: checkpoint \(32, 1, 2, 2\) vs model "
                                              r"\(32, 1, 4, 4\)"):
        create_model("retinanet_litv2_nano", num_classes=10, in_chans=1, pretrained=str(tmp_path / "p2.safetensors"))


def test_coco_folder_trains_with_colour_images(tmp_path):
    """A COCO-format folder: 3-channel images, boxes from the annotation file, AP from the same file."""
    root = tmp_path / "coco"
    rng = np.random.default_rng(0)
    cats = [{"id": 3, "name": "square"}, {"id": 7, "name": "bar"}]
    for split, n in (("train2017", 8), ("val2017", 4)):
        (root / split).mkdir(parents=True)
        images, anns = [], []
        for i in range(n):
            img = np.zeros((70, 90, 3), np.uint8)
            x, y = int(rng.integers(5, 40)), int(rng.integers(5, 30))
            img[y:y + 20, x:x + 20] = (250, 30, 30)
            img[50:60, 10:80] = (30, 250, 30)
            Image.fromarray(img).save(root / split / f"{i}.png")
            images.append({"id": i + 1, "file_name": f"{i}.png", "height": 70, "width": 90})
            anns += [{"id": len(anns) + 1, "image_id": i + 1, "category_id": 3, "bbox": [x, y, 20, 20], "area": 400,
                      "iscrowd": 0},
                     {"id": len(anns) + 2, "image_id": i + 1, "category_id": 7, "bbox": [10, 50, 70, 10], "area": 700,
                      "iscrowd": 0}]
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))
    s = train(model="retinanet_litv2_nano", data=str(root), output=str(tmp_path / "run"), epochs=1, batch_size=4,
              train_scale=(96, 96), warmup_iters=1, amp="off", workers=0, threads=1, progress="off", predictions=0)
    assert s["dataset"].startswith("coco:") and list(s["per_class_ap"]) == ["square", "bar"]
    assert s["eval_images"] == 4 and 0.0 <= s["test_ap50"] <= 100.0


def test_mask_rcnn_trains_evaluates_predicts_masks_and_exports(idx_dir, tmp_path, capsys, monkeypatch):
    """Mask R-CNN through the same task: the garments' masks reach its loss (a mask part in the metrics),
    the run is scored for boxes and masks, eval of the run gives the same mask AP, predict writes
    each detection's mask as COCO RLE that decodes to the image's size, and export writes the network and
    its RoI heads (or, when the second misses the tolerance, neither)."""
    from pycocotools import mask as mask_utils

    out = tmp_path / "mrcnn"
    assert main(["train", "--model", "mask_rcnn_litv2_nano", "--data-dir", str(idx_dir), "--output", str(out),
                 "--epochs", "1", "--batch-size", "4", "--train-subset", "8", "--eval-subset", "3",
                 "--train-scale", "96,96", "--warmup-iters", "2", "--amp", "off", "--threads", "1", "--progress",
                 "off", "--predictions", "0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "detection" and "test_mask_ap" in summary and "test_ap" in summary
    rows = (out / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    assert float(last[header.index("train_loss_mask")]) > 0  # the mask head was trained
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--json", "--threads", "1", "--eval-subset", "3"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["mask_ap"] == pytest.approx(summary["test_mask_ap"], abs=1e-9)
    from hilovit.data.fashion_scenes import FashionSceneInstances

    image, _ = FashionSceneInstances("test", num_scenes=1, seed=1, root=str(idx_dir))[0]
    scene = tmp_path / "scene.png"
    Image.fromarray(image[0].numpy()).save(scene)
    assert main(["predict", str(scene), "--checkpoint", str(out), "--output", str(tmp_path / "pred"),
                 "--score-thr", "0"]) == 0
    records = json.loads((tmp_path / "pred" / "scene_detections.json").read_text())
    assert records and all("segmentation" in r for r in records)
    decoded = mask_utils.decode([r["segmentation"] for r in records])
    assert decoded.shape[:2] == (image.shape[1], image.shape[2])
    if __import__("importlib").util.find_spec("onnxruntime") is None:
        return
    import hilovit.export as ex

    export = ["export", "--checkpoint", str(out), "--output", str(tmp_path / "onnx" / "det.onnx"),
              "--sizes", "96,96", "100,70"]
    real_verify = ex.verify_onnx
    monkeypatch.setattr(ex, "verify_onnx", lambda path, module, checks: {
        k: v + (1.0 if "roi_heads" in str(path) else 0.0) for k, v in real_verify(path, module, checks).items()})
    capsys.readouterr()
    assert main(export) == 1
    assert "det.roi_heads.onnx not written" in capsys.readouterr().err and not (tmp_path / "onnx").exists()
    monkeypatch.setattr(ex, "verify_onnx", real_verify)
    assert main(export) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["det.onnx", "det.roi_heads.onnx"]
    assert f"wrote {tmp_path / 'onnx' / 'det.onnx'} (" in printed and "3x100x70" in printed
    assert f"wrote {tmp_path / 'onnx' / 'det.roi_heads.onnx'} (" in printed and "K=5,M=1" in printed
    assert "mask_rcnn_from_onnx" in printed and ".roi_heads.onnx" in printed
