"""The tasks: one object each (:class:`~hilovit.tasks.base.Task`), the only task-specific code.

:func:`get_task` returns a task by name; :func:`resolve_task` finds the task of a command from
what it was given: an explicit name, a configuration, a recipe's ``task:``, the run being resumed,
a checkpoint's metadata or the model (each registered model belongs to one task). Importing this
package imports no task (and no torch) until one is asked for.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

__all__ = ["TASK_NAMES", "get_task", "resolve_task", "task_of_model", "task_of_checkpoint"]

# name -> module defining ``TASK`` (the task object)
_MODULES = {
    "classification": "hilovit.tasks.classification",
    "segmentation": "hilovit.tasks.segmentation",
    "detection": "hilovit.tasks.detection",
}
TASK_NAMES = tuple(_MODULES)
_LOADED: Dict[str, Any] = {}


def get_task(name: str):
    """The task object called ``name`` (ValueError naming the tasks for another name)."""
    if name not in _MODULES:
        raise ValueError(f"unknown task {name!r}: choose one of {', '.join(TASK_NAMES)}")
    if name not in _LOADED:
        _LOADED[name] = importlib.import_module(_MODULES[name]).TASK
    return _LOADED[name]


def task_of_model(name: str) -> Optional[str]:
    """The task a registered model belongs to (``semfpn_litv2_s`` -> ``'segmentation'``)."""
    from hilovit.models.registry import model_task

    return model_task(name)


def task_of_checkpoint(path) -> Optional[str]:
    """The task recorded with a checkpoint (a training output folder, ``model.safetensors``, ``last.pt``);
    None when it records none (older classification checkpoints and plain state dicts)."""
    from hilovit.models.checkpoint import read_metadata, resolve_checkpoint

    try:
        meta = read_metadata(resolve_checkpoint(path))
    except (OSError, ValueError):  # missing or unreadable: the task's own loader says so
        return None
    task = meta.get("task")
    if task is None and meta.get("format") == "hilovit-train":
        return "classification"  # written before runs recorded their task
    return task


def _recipe_task(recipe) -> Optional[str]:
    if recipe is None:
        return None
    from hilovit.train.config import load_recipe

    return load_recipe(recipe).get("task")


def _resumed_task(options: Mapping[str, Any]) -> Optional[str]:
    if not options.get("resume"):
        return None
    last = Path(str(options.get("output") or "runs/train")).expanduser() / "last.pt"
    if not last.is_file():
        return None  # the engine says there is no run to continue
    from hilovit.train.state import load_training_state

    return (load_training_state(last).get("config") or {}).get("task", "classification")


def resolve_task(task: Optional[str] = None, config: Any = None, recipe=None,
                 options: Optional[Mapping[str, Any]] = None, checkpoint=None, model: Optional[str] = None,
                 pretrained=None):
    """The task of a command, from the first of: ``task``; the configuration's class; the recipe's
    ``task:``; the run being resumed (``options['resume']``); the checkpoint's metadata; the model
    (``model`` or ``options['model']``), or without one the ``config.json`` of a model repository given
    as ``pretrained`` (``'hf-hub:org/name'``, ``'local-dir:PATH'``); else classification. When two
    sources disagree (``--task classification`` for a segmentation model), the error names both.
    """
    options = dict(options or {})
    found = []  # (task, where it was read)
    if task is not None:
        found.append((task, f"--task {task}"))
    if config is not None:
        found.append((type(config).task, f"the {type(config).__name__}"))
    recipe_task = _recipe_task(recipe)
    if recipe_task is not None:
        found.append((recipe_task, f"the recipe {recipe!r}"))
    resumed = _resumed_task(options)
    if resumed is not None:
        found.append((resumed, "the run being resumed"))
    if checkpoint is not None:
        recorded = task_of_checkpoint(checkpoint)
        if recorded is not None:
            found.append((recorded, f"the checkpoint {str(checkpoint)!r}"))
    name = model or options.get("model")
    if isinstance(name, str) and name:
        from hilovit.models.registry import is_model

        if is_model(name) and task_of_model(name) is not None:
            found.append((task_of_model(name), f"the model {name}"))
    elif isinstance(pretrained, str) and pretrained.startswith(("hf-hub:", "local-dir:")):
        from hilovit.models.repo import read_repo_config

        found.append((read_repo_config(pretrained).task, f"the repository {pretrained}"))
    if not found:
        return get_task("classification")
    chosen, where = found[0]
    get_task(chosen)  # an unknown name: ValueError naming the tasks
    for other, other_where in found[1:]:
        if other != chosen:
            raise ValueError(f"{where} says {chosen}, but {other_where} is {other}; leave one of them out")
    return get_task(chosen)
