"""``hilovit predict`` with a detector: boxes, labels and scores (and masks) drawn on each image, and the
detections as COCO-format JSON beside the picture.

Each image is read in the model's channels (RGB, or grey for a 1-channel model; EXIF orientation
applied), resized for the network as the model's ``test_scale`` (or ``eval_scale``) says, and the
detections come back in the image's own pixels. ``NAME_detections.json`` holds the COCO result
records (``image_id`` 0, ``file_name``, ``bbox`` ``[x, y, w, h]``, ``score``, ``category_id``,
``category``; ``segmentation`` as RLE for masks); ``NAME_detections.png`` the picture.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

__all__ = ["DetPredictor", "predict_files"]

PathLike = Union[str, "os.PathLike[str]"]


class DetPredictor:
    """A detector ready for image files: from a checkpoint (a run, ``model.safetensors``, an official
    ``.pth``) or published weights (``model`` with ``pretrained``)."""

    def __init__(self, checkpoint=None, model: Optional[str] = None, pretrained=None, device: str = "cpu",
                 eval_scale: Optional[Sequence[int]] = None, score_thr: float = 0.3) -> None:
        from hilovit.models._builder import load_model, pretrained_model
        from hilovit.train.distributed import resolve_device

        self.device = resolve_device(device)
        if pretrained is not None and pretrained is not False:
            if checkpoint is not None:
                raise ValueError("give a checkpoint, or a model name with pretrained weights")
            self.model: nn.Module = pretrained_model(model, pretrained, device=self.device)
            meta: Dict[str, Any] = {}
        else:
            if checkpoint is None:
                raise ValueError("give a detection checkpoint (or a model name with pretrained weights)")
            self.model, meta = load_model(checkpoint, model, device=self.device)
        if not 0.0 <= score_thr <= 1.0:
            raise ValueError(f"score_thr={score_thr!r}: expected a score in [0, 1]")
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        n = int(self.model.num_classes)
        self.classes = list(meta.get("classes") or cfg.get("label_names") or cfg.get("class_names")
                            or [str(i) for i in range(n)])
        ids = meta.get("category_ids") or cfg.get("category_ids")
        ids = ids.split(",") if isinstance(ids, str) else ids
        self.category_ids = [int(v) for v in ids] if ids else list(range(1, n + 1))
        self.scale = tuple(eval_scale) if eval_scale else None
        self.score_thr = float(score_thr)
        self.in_chans = int(self.model.in_chans)

    def _read(self, image: PathLike) -> torch.Tensor:
        from hilovit.data.folders import open_image

        pil = open_image(image, self.in_chans)
        arr = np.asarray(pil, dtype=np.uint8)
        arr = arr[:, :, None] if arr.ndim == 2 else arr
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    @torch.no_grad()
    def predict(self, image: Union[PathLike, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The detections of one image (a file or a uint8 ``(C, H, W)`` tensor), boxes in its pixels."""
        x = image if isinstance(image, torch.Tensor) else self._read(image)
        return self.model.predict([x.to(self.device)], resize=self.scale if self.scale else None)[0]

    def records(self, result: Dict[str, torch.Tensor], file_name: str) -> List[Dict[str, Any]]:
        from hilovit.tasks.detection_eval import detections_to_coco

        records = detections_to_coco([result], [0], self.category_ids)
        for rec, label in zip(records, result["labels"].tolist()):
            rec["file_name"] = file_name
            rec["category"] = self.classes[int(label)]
        return records

    def predict_file(self, image: PathLike, output: PathLike) -> Dict[str, Any]:
        """Detect in ``image``; write ``output/STEM_detections.png`` and ``output/STEM_detections.json``."""
        from hilovit.io import check_writable_dir
        from hilovit.train.state import write_json
        from hilovit.viz.detection import save_detection_picture

        x = self._read(image)
        result = self.predict(x)
        folder = check_writable_dir(output, "output folder")
        stem = Path(image).stem
        records = self.records(result, Path(image).name)
        json_path = write_json(folder / f"{stem}_detections.json", records)
        picture = save_detection_picture(x, result, folder / f"{stem}_detections.png", self.classes, self.score_thr)
        shown = [{"label": r["category"], "score": r["score"], "bbox": r["bbox"]} for r in records
                 if r["score"] >= self.score_thr]
        return {"image": str(image), "height": int(x.shape[1]), "width": int(x.shape[2]), "detections": shown,
                "picture": str(picture), "json": str(json_path)}


def predict_files(images: Sequence[PathLike], model=None, checkpoint=None, pretrained=None,
                  output: PathLike = "predictions", eval_scale: Optional[Tuple[int, int]] = None,
                  device: str = "cpu", score_thr: float = 0.3, **_: Any) -> List[Dict[str, Any]]:
    """``hilovit predict`` with a detector: each image's picture and COCO JSON in ``output``; an image that
    cannot be read gets ``error`` set and the others still run."""
    predictor = DetPredictor(checkpoint, model=model, pretrained=pretrained, device=device, eval_scale=eval_scale,
                             score_thr=score_thr)
    results: List[Dict[str, Any]] = []
    for image in images:
        try:
            results.append(predictor.predict_file(image, output))
        except (ValueError, OSError) as e:
            results.append({"image": str(image), "error": str(e)})
    return results
