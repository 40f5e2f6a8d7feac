"""What every ``hilovit`` command shares besides its options: one-line usage errors, checked numbers,
devices and opsets, and the library's errors put in the command's words (its flags, no internal names)."""

from __future__ import annotations

import argparse
import re
from typing import Dict

__all__ = ["OneLineParser", "add_finetune_options", "positive_int", "non_negative_int", "device_name", "onnx_opset",
           "command_parser", "user_message", "out_of_memory_hint"]


class OneLineParser(argparse.ArgumentParser):
    """Reports a bad command line in one line (the usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def device_name(text: str) -> str:
    """A device this machine has ('auto', 'cpu', 'cuda', 'cuda:N', 'mps'); kept as typed."""
    from hilovit.device import resolve_device

    try:
        resolve_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).replace(f"device={text!r}", repr(text), 1)) from None
    return text


_MIN_OPSET = 14  # scaled_dot_product_attention, which every attention layer calls, needs opset 14


def onnx_opset(text: str) -> int:
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET as top
    except ImportError:
        top = 20
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not _MIN_OPSET <= value <= top:
        raise argparse.ArgumentTypeError(f"opset {text} is not supported: choose one from {_MIN_OPSET} (the first "
                                         f"with scaled_dot_product_attention) to {top}")
    return value


def command_parser(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
    """The (sub-)parser of the command that ran, e.g. the one of ``hilovit bench models``."""
    node = parser
    while True:
        sub = next((a for a in node._actions if isinstance(a, argparse._SubParsersAction)), None)
        name = getattr(args, sub.dest, None) if sub is not None else None
        if name not in (sub.choices if sub is not None else {}):
            return node
        node = sub.choices[name]


def _flags(command: argparse.ArgumentParser) -> Dict[str, str]:
    """Option name as the library spells it (``batch_size``) -> the command's flag (``--batch-size``)."""
    flags = {}
    for action in command._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.dest not in flags:
            flags[action.dest] = longs[0]
    return flags


_INTERNAL_PREFIX = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*\.)*[A-Za-z_][A-Za-z0-9_]*: ")


def user_message(error: BaseException, command: argparse.ArgumentParser) -> str:
    """The library's message in the command's words, on one line.

    Options are named by their flags (``batch_size=8`` -> ``--batch-size=8``); the name of the
    library function or class that raised (``build_datasets: ...``) is dropped.
    """
    flags = _flags(command)
    render = getattr(error, "render", None)
    if callable(render):
        text = render(lambda name: flags.get(name, name))
    elif isinstance(error, OSError) and error.strerror and error.filename:
        text = f"{error.strerror}: {str(error.filename)!r}"  # not "[Errno 13] ..."
    else:
        text = str(error)
        prefix = _INTERNAL_PREFIX.match(text)
        if prefix:
            name = prefix.group(0)[:-2]
            text = (flags[name] + ": " if name in flags else "") + text[prefix.end():]
        names = "|".join(sorted((re.escape(n) for n in flags if n.isidentifier()), key=len, reverse=True))
        if names:
            text = re.sub(rf"(?<![\w.'\"/\\-])({names})=", lambda m: flags[m.group(1)] + "=", text)
            text = re.sub(rf"(?<![\w.'\"/\\-])({names})(?![\w='\"/(-])",
                          lambda m: flags[m.group(1)] if "_" in m.group(1) else m.group(1), text)
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def out_of_memory_hint(args) -> str:
    """What to do when a command other than training runs out of memory (training says it itself)."""
    for dest, flag in (("batch_size", "--batch-size"), ("batch", "--batch"), ("sweep_batch", "--sweep-batch")):
        value = getattr(args, dest, None)
        if isinstance(value, int):
            smaller = max(1, value // 4)
            return f"out of memory with {flag} {value}; use a smaller one (e.g. {flag} {smaller})"
    return "out of memory; use smaller inputs"


def _layer_decay(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def add_finetune_options(parser: argparse.ArgumentParser) -> None:
    """``hilovit train``'s fine-tuning options (unset when not given, so a recipe keeps its own)."""
    g = parser.add_argument_group("fine-tuning")
    g.add_argument("--pretrained", "--initial-checkpoint", dest="pretrained", metavar="NAME|PATH|URL",
                   help="start from these weights: a model with published weights (litv2_s, NAME.TAG; sets --model), "
                   "a weights file or training output folder, an http(s) URL or hf-hub:org/name; the head is "
                   "re-initialised for the data's classes. Ignored with --resume")
    g.add_argument("--layer-decay", type=_layer_decay, metavar="D",
                   help="layer-wise learning-rate decay: layer i of L blocks trains at lr * D**(L+1-i) (default off)")
    g.add_argument("--freeze-backbone-epochs", type=non_negative_int, metavar="N",
                   help="train only the classifier head for the first N epochs")
    g.add_argument("--log-tensorboard", action="store_true",
                   help="also write TensorBoard scalars into OUTPUT/tensorboard (pip install 'hilovit[tensorboard]')")
