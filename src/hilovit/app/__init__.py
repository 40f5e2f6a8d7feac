"""``hilovit app``: a local page (Gradio, the optional extra ``hilovit[app]``) to look at what a checkpoint
predicts: the top-5 classes, the segmentation overlay or the detections, and HiLo's Hi-Fi/Lo-Fi pictures.

:class:`AppPredictor` (no Gradio) computes what the page shows; :func:`serve` builds and serves the
page. Importing this package imports neither Gradio nor a model.
"""

from hilovit.app.page import build_page, serve
from hilovit.app.predictions import AppPredictor, AppResult

__all__ = ["AppPredictor", "AppResult", "build_page", "serve"]
