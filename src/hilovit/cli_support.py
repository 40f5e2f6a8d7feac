"""What every ``hilovit`` command shares besides its options: one-line usage errors, checked numbers,
devices and opsets, and the library's errors put in the command's words (its flags, no internal names)."""

from __future__ import annotations

import argparse
import math
import re
from typing import Dict

__all__ = ["OneLineParser", "positive_int", "non_negative_int", "device_name", "onnx_opset",
           "command_parser", "user_message", "out_of_memory_hint", "positive_float", "int_pair", "float_pair", "floats",
           "options_from_cli", "CLI_AUGMENT_FLAGS", "positive_floats"]


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


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_EXPECTED_DEVICE = "expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def device_name(text: str) -> str:
    """A device this machine has ('auto', 'cpu', 'cuda', 'cuda:N', 'mps'); kept as typed. A name that is not
    a device is refused without importing torch; whether a CUDA or MPS device exists is asked of torch."""
    name = text.strip().lower()
    if not _DEVICE.match(name):
        hint = " (an NVIDIA GPU is 'cuda')" if name in ("gpu", "nvidia") else ""
        raise argparse.ArgumentTypeError(f"{text!r} is not a device name; {_EXPECTED_DEVICE}{hint}")
    if name in ("auto", "cpu"):
        return text
    from hilovit.device import resolve_device

    try:
        resolve_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).replace(f"device={text!r}", repr(text), 1)) from None
    return text


_MIN_OPSET = 14  # scaled_dot_product_attention, which every attention layer calls, needs opset 14


def onnx_opset(text: str) -> int:
    """An ONNX opset from 14 (the first with scaled_dot_product_attention) to the newest torch.onnx writes
    (asked of torch only for a number that passes the lower bound)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET as top
    except ImportError:
        top = 20
    if not _MIN_OPSET <= value <= top:
        raise argparse.ArgumentTypeError(f"opset {text} is not supported: choose one from {_MIN_OPSET} (the first "
                                         f"with scaled_dot_product_attention) to {top} (the newest this torch "
                                         "writes)")
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
# torch re-raises an error of a DataLoader worker with the worker's traceback in the message
_WORKER_TRACEBACK = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\s*Original Traceback")
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*\.)*[A-Za-z_][A-Za-z0-9_]*(?:Error|Exception|Warning)"
                             r"(?:: |$)")


def _without_worker_traceback(text: str) -> str:
    """The message of an error raised in a DataLoader worker: the traceback's last entry, without its type."""
    if not _WORKER_TRACEBACK.match(text):
        return text
    lines = text.splitlines()
    start = max((i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line)), default=len(lines) - 1)
    message = "\n".join(lines[start:]).strip()
    return message.split(": ", 1)[1] if ": " in message.splitlines()[0] else message


def _without_internal_prefix(text: str, flags: Dict[str, str]) -> str:
    """``text`` without a leading ``build_datasets: `` (the function or class that raised); a prefix that
    names an option becomes its flag."""
    prefix = _INTERNAL_PREFIX.match(text)
    if not prefix:
        return text
    name = prefix.group(0)[:-2]
    return (flags[name] + ": " if name in flags else "") + text[prefix.end():]


def user_message(error: BaseException, command: argparse.ArgumentParser) -> str:
    """The library's message in the command's words, on one line.

    Options are named by their flags (``batch_size=8`` -> ``--batch-size=8``); the name of the
    library function or class that raised (``build_datasets: ...``) is dropped.
    """
    flags = _flags(command)
    render = getattr(error, "render", None)
    if callable(render):
        text = _without_internal_prefix(render(lambda name: flags.get(name, name)), flags)
    elif isinstance(error, OSError) and error.strerror and error.filename:
        text = f"{error.strerror}: {str(error.filename)!r}"  # not "[Errno 13] ..."
    else:
        text = _without_internal_prefix(_without_worker_traceback(str(error)), flags)
        names = "|".join(sorted((re.escape(n) for n in flags if n.isidentifier()), key=len, reverse=True))
        if names:
            text = re.sub(rf"(?<![\w.'\"/\\-])({names})=", lambda m: flags[m.group(1)] + "=", text)
            text = re.sub(rf"(?<![\w.'\"/\\-])({names})(?![\w='\"/(-])",
                          lambda m: flags[m.group(1)] if "_" in m.group(1) else m.group(1), text)
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def int_pair(text: str):
    """``512`` or ``512,512`` (also ``512x512``) -> ``[512, 512]``."""
    try:
        values = [int(t) for t in text.replace("x", ",").split(",") if t.strip()]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected one or two positive integers, got {text!r} (e.g. 512 or 512,512)")
    return values if len(values) == 2 else values * 2


def float_pair(text: str):
    """``LOW,HIGH`` -> ``[low, high]``."""
    try:
        lo, hi = (float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two comma-separated numbers LOW,HIGH, got {text!r}") from None
    return [lo, hi]


def floats(text: str):
    """Comma- or space-separated finite numbers -> a tuple."""
    try:
        values = tuple(float(v) for v in text.replace(" ", ",").split(",") if v)
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, got {text!r}")
    return values


def positive_floats(text: str):
    """Comma- or space-separated numbers above 0 (a standard deviation) -> a tuple."""
    values = floats(text)
    if min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers above 0, got {text!r}")
    return values


# Command-line flags that set fields of a classification run's ``augment`` (flag dest -> AugmentConfig field).
CLI_AUGMENT_FLAGS = {
    "crop": "random_resized_crop",
    "crop_scale": "scale",
    "hflip": "hflip",
    "rand_augment": "rand_augment",
    "rand_augment_m": "rand_augment_m",
    "random_erasing": "random_erasing",
}


def options_from_cli(values) -> Dict[str, object]:
    """Turn parsed ``hilovit train`` flags into training options.

    Flags listed in :data:`CLI_AUGMENT_FLAGS` become fields of ``augment``; ``no_augment`` turns
    augmentation off; ``config`` (the recipe) and None values are dropped.
    """
    out: Dict[str, object] = {}
    augment: Dict[str, object] = {}
    for key, value in values.items():
        if value is None or key in ("config", "func", "command", "version", "json", "task"):
            continue
        if key in CLI_AUGMENT_FLAGS:
            augment[CLI_AUGMENT_FLAGS[key]] = tuple(value) if isinstance(value, list) else value
        elif key == "no_augment":
            if value:
                out["augment"] = "none"
        else:
            out[key] = value
    if augment:
        if out.get("augment") == "none":
            raise ValueError("--no-augment contradicts the augmentation flags given "
                             f"({', '.join('--' + k.replace('_', '-') for k in augment)})")
        out["augment"] = augment
    return out


def out_of_memory_hint(args) -> str:
    """What to do when a command other than training runs out of memory (training says it itself)."""
    for dest, flag in (("batch_size", "--batch-size"), ("batch", "--batch"), ("sweep_batch", "--sweep-batch")):
        value = getattr(args, dest, None)
        if isinstance(value, int):
            smaller = max(1, value // 4)
            return f"out of memory with {flag} {value}; use a smaller one (e.g. {flag} {smaller})"
    return "out of memory; use smaller inputs"
