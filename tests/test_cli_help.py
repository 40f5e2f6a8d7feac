"""The command line against its documentation and the library: every option in ``--help``, every option a task
takes reachable as a flag, every flag the README uses accepted, ``hilovit models`` with and without a pattern,
and the loader the README names working on a segmentation run."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from hilovit.cli import build_parser, main
from hilovit.tasks import TASK_NAMES, get_task

README = Path(__file__).resolve().parents[1] / "README.md"
COMMANDS = ("train", "eval", "predict", "export")


def _subparsers(parser: argparse.ArgumentParser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def _command(*names: str) -> argparse.ArgumentParser:
    node = build_parser()
    for name in names:
        node = _subparsers(node)[name]
    return node


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_every_option(command):
    parser = _command(command)
    text = " ".join(parser.format_help().split())
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert options
    for action in options:
        assert action.help is not argparse.SUPPRESS, action.option_strings
        for flag in action.option_strings:
            assert flag in text, (command, flag)
    assert "--task" in text
    if command == "export":
        assert "--sizes" in text and "--img-size" in text


# options a task takes from Python only (the command sets them itself)
INTERNAL = {"eval": {"default_output"}, "predict": set()}


@pytest.mark.parametrize("task", TASK_NAMES)
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_every_option_of_a_task_is_a_flag(task, command):
    dests = {a.dest for a in _command(command)._actions}
    taken = getattr(get_task(task), f"{command}_options")
    missing = sorted(set(taken) - dests - INTERNAL[command])
    assert not missing, f"{task} {command} takes {missing}, which no flag sets"


@pytest.mark.parametrize("task", TASK_NAMES)
def test_every_task_names_its_command_functions(task):
    """eval and predict reach each task's functions through the task's ``entry_points`` strings."""
    t = get_task(task)
    assert set(t.entry_points) == {"run_eval", "format_eval", "predict_files"}
    for name in t.entry_points:
        assert callable(t._entry(name)), f"{task}: {t.entry_points[name]} is not a function"


def _readme_commands():
    """``(command words, flags)`` of every ``hilovit ...`` line in the README's shell blocks."""
    text = README.read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            words = shlex.split(line, comments=True) if line else []
            if "hilovit" not in words:
                continue
            words = words[words.index("hilovit") + 1:]
            names = [w for w in words[:2] if not w.startswith("-")]
            if names and names[0] in ("viz", "bench"):
                names = names[:2]
            else:
                names = names[:1]
            flags = [w.split("=")[0] for w in words if w.startswith("--")]
            out.append((tuple(names), flags))
    return out


def test_every_flag_in_the_readme_exists():
    commands = _readme_commands()
    assert len(commands) > 20
    for names, flags in commands:
        parser = _command(*names)
        known = {s for a in parser._actions for s in a.option_strings}
        unknown = [f for f in flags if f not in known]
        assert not unknown, (names, unknown)
    # the training options listed in prose, too
    prose = README.read_text(encoding="utf-8").split("Options (all in `hilovit train --help`")[1].split("\n\n")[0]
    listed = set(re.findall(r"`(--[a-z0-9-]+)", prose))
    known = {s for a in _command("train")._actions for s in a.option_strings}
    assert len(listed) > 20 and not listed - known, sorted(listed - known)


# --------------------------------------------------------------------------- hilovit models
def _rows(out: str):
    return [line.split("|")[1].strip() for line in out.splitlines()[2:] if line.startswith("|")]


def test_models_without_a_pattern(capsys):
    from hilovit.models.registry import list_models

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert rows == sorted(list_models())  # every registered model, segmentation and detection included
    semfpn_swin = next(line for line in out.splitlines() if line.startswith("| semfpn_swin_t "))
    assert semfpn_swin.split("|")[3].strip() == "-"  # no FLOPs formula for it: shown as "-", not an error


def test_models_with_a_plain_word(capsys):
    from hilovit.models.registry import list_models

    assert main(["models", "litv2"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows == sorted(n for n in list_models() if "litv2" in n) and "litv2_s" in rows and "semfpn_litv2_s" in rows
    assert main(["models", "no_such_family"]) == 1
    assert "no model matches 'no_such_family'" in capsys.readouterr().err


# --------------------------------------------------------------------------- the README's loader
def test_load_model_reads_a_segmentation_run(tmp_path, idx_dir):
    import torch

    from hilovit import load_model
    from hilovit.train import train

    out = tmp_path / "seg"
    train(model="semfpn_litv2_nano", data="fashion-scenes", data_dir=str(idx_dir), train_subset=4, eval_subset=1,
          crop_size=32, img_scale=(64, 32), epochs=1, batch_size=4, predictions=0, threads=1, workers=0,
          progress="off", amp="off", output=str(out))
    model, info = load_model(out)  # the folder of the run, as the README shows for runs/seg
    assert type(model).__name__ == "EncoderDecoder" and info["task"] == "segmentation"
    assert info["num_classes"] == 11 and info["in_chans"] == 1 and info["classes"][0] == "background"
    x = torch.rand(1, 1, 40, 56)
    with torch.no_grad():
        assert model(x).shape == (1, 11, 40, 56)
    from hilovit.models.checkpoint import read_checkpoint

    sd, _ = read_checkpoint(out / "model.safetensors")
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
