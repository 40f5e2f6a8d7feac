"""Which options a resumed run may change, and how the learning-rate schedule follows a new length.

A resumed run keeps the options saved in its ``last.pt``. Only those in :data:`RESUMABLE` may be
given new values: they change how long the run goes (``epochs``, ``stop_at_epoch``), where the
data lies (``data_dir``) and how the work is done and reported (``workers``, ``threads``,
``progress``, ``log_interval``, ``eval_interval``, ``log_tensorboard``, ``compile``), never what is computed.
``pretrained`` is
fixed like the others: a resumed run continues from its own weights, whatever it started from. Any other option
given with a value other than the run's own is refused, naming the option and both values.

A new ``epochs`` re-plans the schedule: the warm-up and cosine decay are laid out over the new
total as if it had been planned from the start, and the run continues from its current step on
that plan (the rate is a function of the step and the total alone, so a later resume finds the
same plan). :func:`describe_replan` states what that does to the rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from hilovit.train.config import IN_MEMORY, OptionError, TrainConfig, load_recipe, merge_options
from hilovit.train.report import plural
from hilovit.train.state import load_training_state

__all__ = ["RESUMABLE", "resolve_run", "describe_changes", "describe_replan"]

RESUMABLE = ("epochs", "stop_at_epoch", "data_dir", "workers", "threads", "progress", "log_interval",
             "eval_interval", "log_tensorboard", "compile")
# Options that say which run this is, not what it computes: never compared.
_RUN_KEYS = ("resume", "overwrite", "output")


def resolve_run(task, config: Optional[TrainConfig], recipe, overrides: Dict[str, Any]
                ) -> Tuple[TrainConfig, Dict[str, Any], List[Tuple[str, Any, Any]]]:
    """The configuration of this run, the state to resume from (``{}`` for a new run) and the changes.

    Args:
        task: the :class:`~hilovit.tasks.base.Task` (its ``config_class`` reads the options).
        config: a whole configuration (then ``recipe`` and ``overrides`` must be empty).
        recipe: a recipe path or packaged recipe name, or None (the task's default recipe, if any).
        overrides: keyword options (None values are ignored).

    Returns:
        ``(config, state, changes)``; ``changes`` lists ``(option, saved value, new value)`` for
        each :data:`RESUMABLE` option given a new value (``stop_at_epoch`` excluded: it applies
        to one invocation only, and is dropped when not given).

    Raises:
        OptionError: an option outside :data:`RESUMABLE` differs from the run's own, or the new
            ``epochs`` is not beyond the epochs already trained.
    """
    cls = task.config_class
    if config is not None:
        if recipe is not None or overrides:
            raise TypeError("train: pass either a configuration or recipe/keyword options, not both")
        explicit = config.to_dict()
    else:
        if recipe is None and not overrides.get("resume"):
            recipe = task.default_recipe(overrides)
        explicit = merge_options(load_recipe(recipe) if recipe is not None else {}, overrides)
    explicit = _weights_as_written(explicit)
    explicit.pop("task", None)
    if not explicit.get("resume"):
        return (config if config is not None else cls.from_dict(explicit)), {}, []
    if explicit.get("overwrite"):
        raise OptionError("{resume} and {overwrite} contradict each other; choose one")
    output = str(explicit.get("output", cls.output))
    out = Path(output).expanduser()
    state = load_training_state(out / "last.pt")
    saved_options = dict(state.get("config") or {})
    saved_task = saved_options.pop("task", "classification")
    if saved_task != task.name:
        raise OptionError(f"cannot resume the run in {str(out)!r} as {task.name}: it is a {saved_task} run")
    saved = cls.from_dict({**saved_options, "resume": False, "overwrite": False, "stop_at_epoch": None}).to_dict()
    given = {k: v for k, v in explicit.items() if k not in _RUN_KEYS and v is not None}
    wanted = merge_options(saved, given)
    unknown = set(given) - set(saved)
    if not unknown:  # each value as the configuration stores it (tuples, nested options) before comparing
        wanted = cls.from_dict({**wanted, "resume": False, "overwrite": False, "stop_at_epoch": None}).to_dict()
        wanted["stop_at_epoch"] = given.get("stop_at_epoch")
    differing = [k for k in given if k in saved and _norm(wanted[k]) != _norm(saved[k]) and k != "stop_at_epoch"]
    refused = [k for k in differing if k not in RESUMABLE]
    if refused:
        parts = [f"{{{k}}}={_show(wanted[k])} (the run's: {_show(saved[k])})" for k in refused]
        allowed = ", ".join(f"{{{k}}}" for k in RESUMABLE)
        raise OptionError(
            f"cannot resume the run in {str(out)!r} with other options than its own: {'; '.join(parts)}. "
            f"Only {allowed} may change on resume; leave the others out, or train into another {{output}}"
        )
    done = int(state["epoch"])
    if "epochs" in differing and wanted["epochs"] <= done:
        raise OptionError(f"{{epochs}}={wanted['epochs']}: the run in {str(out)!r} has already trained {done} "
                          f"{plural(done, 'epoch', bare=True)}; give more to continue it, or leave {{epochs}} out")
    wanted.update(resume=True, overwrite=False, output=output,
                  stop_at_epoch=given.get("stop_at_epoch"))
    for key in unknown:  # unknown options: from_dict names them
        wanted[key] = given[key]
    wanted.pop("task", None)
    changes = [(k, saved[k], wanted[k]) for k in differing]
    return cls.from_dict(wanted), state, changes


def _weights_as_written(options: Dict[str, Any]) -> Dict[str, Any]:
    """``initial_checkpoint`` (timm's name) as ``pretrained``; a state dict as the config writes it down."""
    out = dict(options)
    if out.get("initial_checkpoint") is not None and out.get("pretrained") is None:
        out["pretrained"] = out.pop("initial_checkpoint")
    if out.get("resume") and isinstance(out.get("pretrained"), Mapping):
        out["pretrained"] = IN_MEMORY
    return out


def describe_changes(changes: List[Tuple[str, Any, Any]]) -> Optional[str]:
    """One line listing the options changed on resume (None when there are none)."""
    if not changes:
        return None
    return "changed on resume: " + ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, a, b in changes)


def describe_replan(lr_at_old, lr_at_new, step: int, old_epochs: int, new_epochs: int, steps_per_epoch: int,
                    min_lr: float) -> str:
    """One line: the schedule re-planned for ``new_epochs`` and what the rate does at ``step``."""
    total = new_epochs * steps_per_epoch
    return (f"epochs {old_epochs} -> {new_epochs}: the learning-rate schedule is re-planned over {new_epochs} "
            f"{plural(new_epochs, 'epoch', bare=True)} ({total} steps); at step {step} the rate is "
            f"{lr_at_new(step):.3g} (the {old_epochs}-epoch plan had {lr_at_old(step):.3g}) and decays to "
            f"{min_lr:.3g} at step {total}")


def _show(v: Any) -> str:
    return "unset" if v is None else repr(v)


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, str) and v.strip().lower() in ("fashion_mnist", "fashionmnist"):
        return "fashion-mnist"
    return v
