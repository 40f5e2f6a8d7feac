"""``hilovit predict`` for every task: each image goes to the task of the model that predicts it.

The task comes from the checkpoint's metadata (a training run records it) or the model's name;
the task's predictor decodes the images (:func:`hilovit.data.folders.open_image`: any Pillow mode),
prepares them as the model's ``pretrained_cfg`` says and writes or returns its results (a
classifier's top-k classes; a segmenter's label map and overlay; ...).

Example::

    >>> from hilovit.predict import predict_files
    >>> results = predict_files(["shoe.png"], model="litv2_nano", checkpoint="runs/demo", topk=3)  # doctest: +SKIP
    >>> results = predict_files(["scene.png"], checkpoint="runs/seg", output="out/")              # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence, Union

__all__ = ["predict_files"]

PathLike = Union[str, "os.PathLike[str]"]


def predict_files(images: Sequence[PathLike], model: Optional[str] = None, checkpoint: Optional[PathLike] = None,
                  pretrained: Union[bool, str, os.PathLike, None] = None, task: Optional[str] = None,
                  **options: Any) -> List[Any]:
    """``hilovit predict``: the task of ``checkpoint`` (or of ``model``) predicts every image, each
    error reported on its own result. ``options`` are the task's (classification: ``topk``,
    ``batch_size``, ``device``, ``mean``, ``std``; segmentation: ``output``, ``device``, ``eval_scale``)."""
    from hilovit.tasks import resolve_task

    if not images:
        raise ValueError("no images given")
    the_task = resolve_task(task, checkpoint=checkpoint, model=model)
    return the_task.predict_files(list(images), model=model, checkpoint=checkpoint, pretrained=pretrained,
                                  **options)
