"""The ``README.md`` model card of a model repository written by :func:`hilovit.save_pretrained`.

The card is read by people on the Hugging Face hub: a YAML header (library, licence, task tags,
data set) and sections saying what the model is (architecture, task, parameters, classes, input),
how to load it, and, for a training run, the data, the recipe (the run's ``config.yaml``), the
metrics of its ``summary.json`` and the commands that made them. Nothing is written here that
the run did not record.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence

__all__ = ["model_card", "metrics_of"]

PIPELINE_TAGS = {"classification": "image-classification", "segmentation": "image-segmentation",
                 "detection": "object-detection"}
# The recipe entries shown in the card's table (the whole recipe follows as YAML).
_RECIPE_KEYS = ("epochs", "batch_size", "lr", "base_lr", "optimizer", "weight_decay", "warmup_epochs", "amp",
                "label_smoothing", "drop_path", "crop_size", "eval_scale", "seed")


def metrics_of(summary: Mapping[str, Any]) -> Dict[str, float]:
    """The evaluation results of a run's ``summary.json``: its numbers named ``<eval_split>_*``
    (``test_top1``, ``test_miou``, ``test_ap50``, ...), in the order recorded."""
    prefix = f"{summary.get('eval_split') or 'test'}_"
    return {k: float(v) for k, v in summary.items()
            if k.startswith(prefix) and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def _header(config: Mapping[str, Any], task: Optional[str], dataset: Optional[str]) -> List[str]:
    pcfg = config.get("pretrained_cfg", {})
    lines = ["---", "library_name: hilovit"]
    if pcfg.get("license"):
        lines.append(f"license: {pcfg['license']}")
    tags = ["hilovit", "vision", str(config["architecture"])] + ([PIPELINE_TAGS[task]] if task in PIPELINE_TAGS
                                                                  else [])
    lines.append("tags:")
    lines += [f"- {t}" for t in tags]
    if task in PIPELINE_TAGS:
        lines.append(f"pipeline_tag: {PIPELINE_TAGS[task]}")
    if dataset:
        lines += ["datasets:", f"- {json.dumps(str(dataset))}"]
    lines.append("---")
    return lines


def _model_section(config: Mapping[str, Any], params: int, labels: Optional[Sequence[str]]) -> List[str]:
    pcfg = config.get("pretrained_cfg", {})
    rows = [("architecture", f"`{config['architecture']}`"), ("task", config.get("task") or "-"),
            ("parameters", f"{params / 1e6:.2f} M"), ("classes", str(config.get("num_classes", "-")))]
    if pcfg.get("input_size"):
        rows.append(("input (channels, height, width)", " x ".join(str(v) for v in pcfg["input_size"])))
    for key in ("mean", "std"):
        if pcfg.get(key):
            rows.append((f"normalisation {key}", ", ".join(_number(float(v)) for v in pcfg[key])))
    if config.get("model_args"):
        rows.append(("constructor arguments", f"`{json.dumps(config['model_args'], sort_keys=True)}`"))
    lines = ["## Model", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    if labels:
        lines += ["", "Classes, in the order of the model's outputs: " + ", ".join(f"`{n}`" for n in labels) + "."]
    return lines


def _use_section(source: str, task: Optional[str]) -> List[str]:
    lines = ["## Use", "", "```python", "import hilovit", "",
             f"model = hilovit.create_model({source!r})  # architecture, classes and preprocessing from config.json",
             "```", "", "```bash"] + (["pip install 'hilovit[hub]'"] if source.startswith("hf-hub:") else []) + [
             f"hilovit predict --pretrained {source} image.png"]
    return lines + ["```"]


def _run_sections(summary: Mapping[str, Any], recipe: Optional[str]) -> List[str]:
    lines: List[str] = []
    data = [(k, summary[k]) for k in ("dataset", "train_images", "eval_split", "eval_images") if summary.get(k)]
    if data:
        lines += ["## Data", "", "| | |", "|---|---|"] + [f"| {k.replace('_', ' ')} | {v} |" for k, v in data] + [""]
    cfg = summary.get("config") if isinstance(summary.get("config"), Mapping) else {}
    rows = [(k, cfg[k]) for k in _RECIPE_KEYS if cfg.get(k) is not None]
    rows += [(k, summary[k]) for k in ("epochs", "steps", "device", "processes", "wall_seconds")
             if summary.get(k) is not None and k not in cfg]
    if rows or recipe:
        lines += ["## Recipe", ""]
        if rows:
            lines += ["| | |", "|---|---|"] + [f"| {k.replace('_', ' ')} | {_number(v)} |" for k, v in rows] + [""]
        if recipe:
            lines += ["The whole recipe (the run's `config.yaml`, shipped as `train_config.yaml`):", "", "```yaml",
                      recipe.rstrip(), "```", ""]
    metrics = metrics_of(summary)
    if metrics:
        split = summary.get("eval_split") or "test"
        lines += ["## Metrics", "", f"Measured on the {split} split ({summary.get('eval_images', '?')} images) at the "
                  "end of training:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k[len(split) + 1:]} | {_number(v)} |" for k, v in metrics.items()] + [""]
    return lines


def model_card(config: Mapping[str, Any], params: int, *, summary: Optional[Mapping[str, Any]] = None,
               recipe: Optional[str] = None, source: Optional[str] = None, run: Optional[str] = None) -> str:
    """The card's Markdown.

    Args:
        config: the repository's ``config.json`` (as written by :func:`hilovit.save_pretrained`).
        params: the model's parameter count.
        summary: a training run's ``summary.json`` (data, recipe, metrics), if the model is a run's.
        recipe: the run's ``config.yaml`` text.
        source: how users load it (``'hf-hub:org/name'``; default ``'local-dir:PATH'``).
        run: the run folder, named in the commands that made the card.
    """
    pcfg = config.get("pretrained_cfg", {})
    task = config.get("task")
    dataset = (summary or {}).get("dataset") or pcfg.get("dataset")
    labels = pcfg.get("label_names")
    title = source.split(":", 1)[1] if source and source.startswith("hf-hub:") else config["architecture"]
    what = {"classification": "An image classifier", "segmentation": "A semantic segmentation model",
            "detection": "An object detector"}.get(task, "A model")
    lines = _header(config, task, dataset) + ["", f"# {title}", "",
                                              f"{what} made with hilovit: "
                                              f"`{config['architecture']}`"
                                              + (f", trained on {dataset}." if dataset else ".")]
    lines += [""] + _use_section(source or "local-dir:PATH", task) + [""] + _model_section(config, params, labels)
    lines.append("")
    if summary:
        lines += _run_sections(summary, recipe)
    if run is not None:
        lines += ["## How it was made", "", "```bash"]
        if recipe:
            lines.append(f"hilovit train --config train_config.yaml --output {run}  # the recipe above")
        lines += [f"hilovit export --format hub --checkpoint {run} --output DIR", "```", ""]
    return "\n".join(lines).rstrip() + "\n"
