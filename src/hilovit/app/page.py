"""The ``hilovit app`` page (Gradio): drop an image, see what the checkpoint predicts.

Gradio is imported only when a page is built (:func:`build_page`, :func:`serve`), so ``hilovit
--help`` and the rest of the package work without it; without it :func:`serve` says to run
``pip install 'hilovit[app]'``. What the page shows comes from :class:`~hilovit.app.predictions.AppPredictor`.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Optional, Tuple

from hilovit.app.predictions import AppPredictor, AppResult

__all__ = ["import_gradio", "build_page", "page_outputs", "serve"]

INSTALL_HINT = "hilovit app needs Gradio: pip install 'hilovit[app]'"
TASK_TEXT = {
    "classification": "the top-5 classes",
    "segmentation": "the segmentation overlaid on the image",
    "detection": "the detected boxes (and masks) drawn on the image",
}


def import_gradio():
    """The ``gradio`` module; an ImportError saying how to install it when it is missing. Gradio's usage
    reports are off unless ``GRADIO_ANALYTICS_ENABLED`` says otherwise (the page is local)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from None
    return gradio


def page_outputs(result: Optional[AppResult]) -> Tuple[str, Any, Any, Any]:
    """The page's four outputs for ``result`` (None: the upload was cleared): the status text (Markdown),
    the top classes (``{label: probability}`` or None), the picture and the HiLo picture (arrays or None)."""
    if result is None:
        return "Drop an image above.", None, None, None
    if not result.ok:
        return f"**Error:** {result.error}", None, None, None
    lines = [f"### {result.source}"]
    if result.top:
        label, p = next(iter(result.top.items()))
        lines.append(f"Predicted: **{label}** ({p:.1%})")
    lines += [result.details, *(f"*Note: {n}*" for n in result.notes)]
    return "\n\n".join(line for line in lines if line), result.top or None, result.picture, result.hilo


def _handler(predictor: AppPredictor):
    def predict(path: Optional[str]):
        if not path:
            return page_outputs(None)
        try:
            return page_outputs(predictor.predict(path))
        except Exception as e:  # the page shows one line; the server log keeps the trace
            traceback.print_exc(file=sys.stderr)
            return f"**Error:** {type(e).__name__}: {e}", None, None, None

    return predict


def build_page(predictor: AppPredictor):
    """The Gradio ``Blocks`` page for ``predictor``: a file drop, the status text (``#status``), the top
    classes (``#top``, classifiers), the picture (``#picture``) and HiLo's picture (``#hilo``, LITv2
    classifiers)."""
    gr = import_gradio()
    task = predictor.task
    with gr.Blocks(title=f"hilovit: {predictor.name}", analytics_enabled=False) as page:
        gr.Markdown(f"## hilovit · {predictor.title}\n{task.capitalize()}: drop an image to see "
                    f"{TASK_TEXT[task]}" + (", and what HiLo's Hi-Fi and Lo-Fi branches see." if predictor.has_hilo
                                            else "."))
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image (any format Pillow reads)", file_count="single", type="filepath",
                                 elem_id="upload")
                status = gr.Markdown("Drop an image above.", elem_id="status")
                top = gr.Label(num_top_classes=predictor.topk, label=f"Top-{predictor.topk} classes", elem_id="top",
                               visible=task == "classification")
            with gr.Column(scale=2):
                picture = gr.Image(label="Input" if task == "classification" else "Prediction", type="numpy",
                                   interactive=False, elem_id="picture")
                gr.Markdown("**HiLo: what the Hi-Fi and Lo-Fi branches see** (hilovit viz hilo)",
                            visible=predictor.has_hilo)
                hilo = gr.Image(show_label=False, type="numpy", interactive=False, elem_id="hilo",
                                visible=predictor.has_hilo)  # no label over the picture's own title
        upload.change(_handler(predictor), inputs=upload, outputs=[status, top, picture, hilo])
    return page


def serve(source, model: Optional[str] = None, host: str = "127.0.0.1", port: Optional[int] = None,
          device: str = "cpu", hilo_size=None, block: bool = True):
    """``hilovit app``: load ``source`` (a run, a checkpoint file or a model name, see
    :class:`AppPredictor`) and serve its page on ``http://host:port`` (``port`` None: Gradio's first
    free port from 7860). ``hilo_size``: the HiLo picture's input size (see :class:`AppPredictor`). ``block``
    False returns the running page (``page.close()`` stops it)."""
    gr = import_gradio()  # before the model is loaded: a missing extra is said at once
    predictor = AppPredictor(source, model=model, device=device, hilo_size=hilo_size)
    page = build_page(predictor)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: the page works offline
    page.launch(server_name=host, server_port=port, prevent_thread_lock=not block, show_error=False, ssr_mode=False,
                theme=theme, footer_links=[])
    return page
