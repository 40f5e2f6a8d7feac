"""ONNX export and its verification against PyTorch, for every task (``hilovit export``).

Exporter. ``torch.onnx.export(..., dynamo=False)``, the TorchScript-tracing exporter. The
dynamo-based exporter (the default since torch 2.9) needs the ``onnxscript`` package and goes
through ``torch.export``, which cannot trace the data-dependent window bookkeeping of
:class:`~hilovit.layers.window_attention.WindowAttention` (``nonzero`` over the window types); the
tracing exporter handles both families with nothing beyond ``onnx`` and ``onnxruntime`` (the
``export`` extra), and LITv2's deformable convolution (plain PyTorch ops: grid arithmetic,
gathers, a matmul) exports as ordinary ONNX operators.

What is exported. Each task says (:meth:`hilovit.tasks.base.Task.export_spec`): a classifier with
its input size fixed in the graph and a symbolic batch; a segmenter with symbolic batch, height
and width, verified at sizes that are multiples of neither 32 nor the windows (every padding
path is traced, :func:`hilovit.layers.fast.tracing`). While tracing, every window attention runs its
documented export formulation and the inference fast path stands aside; nothing is patched.

Verification. The file is checked with ``onnx.checker`` and run with onnxruntime (CPU) on random
inputs at every size and batch the spec lists; the largest absolute difference from PyTorch must
be at most ``atol`` (1e-4). The file is written to a temporary name beside the output and renamed
only after it passes, so ``output`` only ever holds a verified export; on failure nothing is left
behind and :class:`ExportVerificationError` says by how much, and where, it missed. An existing
file is replaced only with ``overwrite``. A task may export several graphs at once (Mask R-CNN: the
network, and its RoI heads beside it in ``OUT.roi_heads.onnx``, :attr:`ExportSpec.companions`): each
is verified before any is renamed into place, and either all are written or none (a file replaced
with ``overwrite`` is put back when a later rename fails).
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from hilovit.io import check_writable_dir, missing_folders, remove_empty_folders
from hilovit.options import OptionError, check_image_size
from hilovit.tasks.base import ExportSpec, image_export_spec

__all__ = ["ExportResult", "ExportVerificationError", "export_graph", "export_onnx", "export_model", "verify_onnx",
           "check_output_file", "check_opset", "companion_path", "DEFAULT_ATOL", "DEFAULT_OPSET", "MIN_OPSET"]

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_ATOL = 1e-4
DEFAULT_OPSET = 17
MIN_OPSET = 14  # scaled_dot_product_attention, which every attention layer calls, needs opset 14


class ExportVerificationError(RuntimeError):
    """The exported file does not reproduce the PyTorch model within the tolerance."""


@dataclass
class ExportResult:
    """What :func:`export_graph` wrote and how well it matched PyTorch."""

    path: Path
    input_shape: Tuple[int, int, int]
    dynamic_batch: bool
    opset: int
    diffs: Dict[Any, float] = field(default_factory=dict)  # check label -> max |onnx - torch|
    seconds: float = 0.0
    size_bytes: int = 0
    dynamic_size: bool = False
    notes: Tuple[str, ...] = ()
    input_names: Tuple[str, ...] = ("input",)  # with their shapes: 'input (batch, 3, height, width)'
    companions: Tuple[ExportResult, ...] = ()  # the further files written with it (ExportSpec.companions)

    @property
    def max_abs_diff(self) -> float:
        return max(self.diffs.values()) if self.diffs else float("nan")


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise ImportError(
            f"ONNX export needs onnx and onnxruntime ({e.name} is missing): pip install 'hilovit[export]'"
        ) from e
    return onnx, onnxruntime


def check_opset(opset: Any) -> int:
    """An opset this torch can write: from :data:`MIN_OPSET` to the newest ``torch.onnx`` knows."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET as top
    except ImportError:  # pragma: no cover - older torch
        top = 20
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise OptionError(f"{{opset}}={opset!r} is not supported: choose one from {MIN_OPSET} (the first with "
                          f"scaled_dot_product_attention) to {top} (the newest this torch writes)")
    return opset


def check_output_file(output: PathLike, overwrite: bool = False, suffix: str = ".onnx") -> Path:
    """The file an export writes: its folder exists and is writable, or can be created (it is created only
    when the verified file is written), and an existing file is replaced only with ``overwrite``.
    Nothing is created or changed here.

    Raises:
        OptionError: a directory, an existing file without ``overwrite``, a file on the way to the folder,
            or a folder that cannot be written (each named).
    """
    from hilovit.io import check_creatable_dir

    output = Path(output).expanduser()
    if output.is_dir():
        raise OptionError(f"{{output}}={str(output)!r} is a directory; give a file name such as model{suffix}")
    if output.exists() and not overwrite:
        raise OptionError(f"{{output}}={str(output)!r} exists; give another file name or {{overwrite}} to replace it")
    for parent in [output.parent, *output.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise OptionError(f"{{output}}={str(output)!r}: {str(parent)!r} is a file, not a folder")
            break
    try:
        check_creatable_dir(output.parent, "folder of the output file")
    except ValueError as e:
        raise OptionError(f"{{output}}={str(output)!r}: {e}") from None
    return output


# --------------------------------------------------------------------------- verification
@contextlib.contextmanager
def _in_eval_mode(module: nn.Module):
    """``module`` in eval mode, then every submodule back in its own mode (a wrapper made for the export
    starts in training mode; restoring only its flag would put the model it wraps in training mode)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def _as_inputs(x: Any) -> Tuple[torch.Tensor, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _outputs(module: nn.Module, xs: Tuple[torch.Tensor, ...]):
    with torch.no_grad():
        out = module(*xs)
    return [t.float().cpu() for t in (out if isinstance(out, (tuple, list)) else (out,))]


def verify_onnx(path: PathLike, module: nn.Module, checks: Dict[Any, Any]) -> Dict[Any, float]:
    """Run ``path`` with onnxruntime (CPU) and ``module`` in PyTorch on each of ``checks``
    (``{label: input}``, an input a tensor or, for a graph of several inputs, a tuple of them in the
    graph's order); returns ``{label: max |onnx - torch|}`` over every output.

    Raises:
        ExportVerificationError: the graph fails to run at an input, or gives other shapes.
    """
    onnx, ort = _require_onnx()
    onnx.checker.check_model(str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    # onnxruntime's own log lines (coloured with ANSI escapes even into a file or a pipe) stay silent: a graph
    # that fails to run raises, and the error says it once, in the words below
    options.log_severity_level = 4
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    input_names = [i.name for i in session.get_inputs()]
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    diffs: Dict[Any, float] = {}
    with _in_eval_mode(module):
        for label, x in checks.items():
            xs = _as_inputs(x)
            shapes = ", ".join(str(tuple(t.shape)) for t in xs)
            if len(xs) != len(input_names):
                raise ValueError(f"checks[{label!r}] holds {len(xs)} inputs for a graph of {len(input_names)} "
                                 f"({input_names})")
            refs = _outputs(module, tuple(t.to(device) for t in xs))
            try:
                outs = session.run(None, {n: t.cpu().numpy() for n, t in zip(input_names, xs)})
            except Exception as e:  # noqa: BLE001 - onnxruntime's own error, with the input that failed
                raise ExportVerificationError(f"the exported graph does not run at input {shapes} (a size "
                                              f"fixed by the trace?): {str(e).splitlines()[0]}") from e
            worst = 0.0
            for ref, out in zip(refs, outs):
                out = torch.from_numpy(out)
                if tuple(out.shape) != tuple(ref.shape):
                    raise ExportVerificationError(
                        f"{path}: onnxruntime output {tuple(out.shape)} differs in shape from PyTorch "
                        f"{tuple(ref.shape)} at input {shapes}")
                if out.numel():
                    worst = max(worst, float((out.float() - ref).abs().max()))
            diffs[label] = worst
    return diffs


# --------------------------------------------------------------------------- export
def companion_path(output: PathLike, suffix: str) -> Path:
    """The file of a companion graph beside ``output``: its name with a final ``.onnx`` replaced by
    ``suffix`` (``det.onnx`` + ``'.roi_heads.onnx'`` -> ``det.roi_heads.onnx``)."""
    output = Path(output).expanduser()
    base = output.name[:-5] if output.name.lower().endswith(".onnx") else output.name
    return output.with_name(base + suffix)


def _describe_inputs(spec: ExportSpec) -> Tuple[str, ...]:
    """``'name (K, 64, 7, 7)'`` for each input, symbolic sizes by their names."""
    out = []
    for name, x in zip(spec.input_names, _as_inputs(spec.example)):
        axes = spec.dynamic_axes.get(name, {})
        out.append(f"{name} ({', '.join(str(axes.get(d, n)) for d, n in enumerate(x.shape))})")
    return tuple(out)


def _write_verified(spec: ExportSpec, path: Path, tmp: Path, opset: int, verify: bool, atol: float) -> ExportResult:
    """Trace ``spec`` into ``tmp`` and verify it; ``path`` is the name it will have."""
    onnx, _ = _require_onnx()
    module = spec.module
    start = time.perf_counter()
    with _in_eval_mode(module):
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        example = tuple(t.to(device) for t in _as_inputs(spec.example))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python values taken from shapes
            torch.onnx.export(module, example, str(tmp), dynamo=False, opset_version=opset,
                              input_names=spec.input_names, output_names=spec.output_names,
                              dynamic_axes=spec.dynamic_axes or None, do_constant_folding=True)
        result = ExportResult(path=path, input_shape=spec.input_shape, opset=opset, notes=tuple(spec.notes),
                              dynamic_batch=any(0 in axes for axes in spec.dynamic_axes.values()),
                              dynamic_size=any(2 in axes for axes in spec.dynamic_axes.values()),
                              input_names=tuple(_describe_inputs(spec)))
        if verify:
            result.diffs = verify_onnx(tmp, module, spec.checks)
            if not result.max_abs_diff <= atol:  # also catches NaN
                raise ExportVerificationError(
                    f"ONNX export of {type(module).__name__} does not match PyTorch: max |onnx - torch| = "
                    f"{result.max_abs_diff:.3g} > {atol:g} (per input: {result.diffs}); {path} not written")
        else:
            onnx.checker.check_model(str(tmp))
        result.seconds = time.perf_counter() - start
        return result


def _place(pairs: Sequence[Tuple[Path, Path]]) -> None:
    """Rename each verified temporary file onto its output: one file atomically; several all or none (an
    output replaced is kept aside until every rename has succeeded, and put back otherwise)."""
    if len(pairs) == 1:
        os.replace(*pairs[0])
        return
    kept: list = []
    placed: list = []
    try:
        for tmp, out in pairs:
            if out.exists():
                aside = out.with_name(f".{out.name}.old-{os.getpid()}")
                os.replace(out, aside)
                kept.append((aside, out))
            os.replace(tmp, out)
            placed.append(out)
    except BaseException:
        for out in placed:
            out.unlink(missing_ok=True)
        for aside, out in kept:
            os.replace(aside, out)
        raise
    for aside, _ in kept:
        aside.unlink(missing_ok=True)


def export_graph(spec: ExportSpec, output: PathLike, opset: int = DEFAULT_OPSET, verify: bool = True,
                 atol: float = DEFAULT_ATOL, overwrite: bool = False) -> ExportResult:
    """Trace ``spec.module`` to an ONNX file at ``output`` and verify it at ``spec.checks``; each of
    ``spec.companions`` likewise to :func:`companion_path` ``(output, suffix)`` (listed in the result's
    ``companions``). Every file is verified before any is written; a failure writes none of them.

    Raises:
        ExportVerificationError: a difference above ``atol`` or a check the graph cannot run
            (no file is written).
        ImportError: onnx / onnxruntime are not installed (``pip install 'hilovit[export]'``).
        OptionError: a bad opset or output file (see :func:`check_output_file`).
    """
    _require_onnx()
    check_opset(opset)
    output = check_output_file(output, overwrite)
    jobs = [(spec, output)] + [(sub, check_output_file(companion_path(output, suffix), overwrite))
                               for suffix, sub in spec.companions.items()]
    created = missing_folders(output.parent)
    pairs = [(path.with_name(f".{path.name}.tmp-{os.getpid()}"), path) for _, path in jobs]
    try:
        check_writable_dir(output.parent, "folder of the output file")  # made now, removed again on failure
        results = [_write_verified(s, path, tmp, opset, verify, atol) for (s, path), (tmp, _) in zip(jobs, pairs)]
        _place(pairs)
        for result in results:
            result.size_bytes = result.path.stat().st_size
        results[0].companions = tuple(results[1:])
        return results[0]
    finally:
        for tmp, _ in pairs:
            if tmp.exists():
                tmp.unlink()
        if not output.exists():
            remove_empty_folders(created)  # nothing written: the folders made for it go too


def _sizes(img_size: Optional[Union[int, Sequence[int]]], model: nn.Module) -> Tuple[int, int, int]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    C, H, W = (int(v) for v in cfg.get("input_size", (getattr(model, "in_chans", 3), 224, 224)))
    if img_size is not None:
        sizes = [img_size] if isinstance(img_size, int) else list(img_size)
        if len(sizes) not in (1, 2) or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"img_size must be a positive int or (H, W), got {img_size!r}")
        H, W = (sizes[0], sizes[0]) if len(sizes) == 1 else (sizes[0], sizes[1])
        check_image_size((H, W), "img_size")
    return C, H, W


def export_onnx(model: nn.Module, output: PathLike, img_size: Optional[Union[int, Sequence[int]]] = None,
                dynamic_batch: bool = True, opset: int = DEFAULT_OPSET, verify: bool = True,
                atol: float = DEFAULT_ATOL, seed: int = 0, sizes: Optional[Sequence[Tuple[int, int]]] = None,
                overwrite: bool = False) -> ExportResult:
    """Export an image model (a classifier, a segmenter: ``(B, C, H, W)`` in, one tensor out) to ONNX.

    Args:
        model: the module; exported in eval mode.
        output: the ``.onnx`` file; written atomically, and only once verified.
        img_size: the size ``H`` or ``(H, W)`` fixed in the graph (default: ``pretrained_cfg['input_size']``).
        dynamic_batch: leave the batch symbolic (checked at batches 1 and 3).
        sizes: instead of ``img_size``, symbolic height and width, traced at the first size and
            verified at each (two different ones at least).
        opset, verify, atol, seed: the ONNX opset (17), whether to run onnxruntime, the largest
            accepted difference, the seed of the random inputs.
        overwrite: replace an existing ``output``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    C, H, W = _sizes(img_size, model)
    if sizes is not None:
        sizes = _check_sizes(sizes)
        spec = image_export_spec(model, C, sizes, dynamic_batch, True, "logits", seed)
    else:
        name = "logits" if getattr(model, "num_classes", 1) else "features"
        spec = image_export_spec(model, C, [(H, W)], dynamic_batch, False, name, seed)
    return export_graph(spec, output, opset, verify, atol, overwrite)


def _check_sizes(sizes) -> Tuple[Tuple[int, int], ...]:
    try:
        out = tuple((int(h), int(w)) for h, w in sizes)
    except (TypeError, ValueError):
        raise ValueError(f"sizes={sizes!r}, expected (height, width) pairs") from None
    if len(out) < 2 or len(set(out)) < 2 or min(min(s) for s in out) < 1:
        raise ValueError(f"sizes={sizes!r}, expected at least two different positive sizes")
    for size in out:
        check_image_size(size, "sizes")
    return out


def export_model(model: Optional[str], output: PathLike, checkpoint: Optional[PathLike] = None,
                 format: str = "onnx", img_size: Optional[Union[int, Sequence[int]]] = None,
                 dynamic_batch: bool = True, opset: int = DEFAULT_OPSET, verify: bool = True,
                 atol: float = DEFAULT_ATOL, sizes: Optional[Sequence[Tuple[int, int]]] = None,
                 task: Optional[str] = None, overwrite: bool = False) -> ExportResult:
    """``hilovit export``: the model of ``checkpoint`` (or the registered ``model``, randomly initialised)
    exported as its task says (:meth:`hilovit.tasks.base.Task.export_spec`).

    ``img_size`` fixes a classifier's input size; ``sizes`` are the sizes a dense model is verified
    at (the task's defaults include sizes that are multiples of neither 32 nor the windows)."""
    from hilovit.models._builder import create_model, load_model
    from hilovit.tasks import resolve_task

    if format != "onnx":
        raise ValueError(f"--format {format!r} is not supported; the supported format is 'onnx'")
    _require_onnx()
    check_opset(opset)
    check_output_file(output, overwrite)
    the_task = resolve_task(task, checkpoint=checkpoint, model=model)
    if checkpoint is not None:
        net, _ = load_model(checkpoint, model, device="cpu")
    elif model is not None:
        net = create_model(model).eval()
    else:
        raise ValueError("give a --model or a --checkpoint to export")
    if img_size is not None:
        C, H, W = _sizes(img_size, net)
        sizes = [(H, W)]
    in_chans = int(getattr(net, "in_chans", 3))
    spec = the_task.export_spec(net, None if sizes is None else _sizes_list(sizes), dynamic_batch, in_chans)
    return export_graph(spec, output, opset, verify, atol, overwrite)


def _sizes_list(sizes) -> Tuple[Tuple[int, int], ...]:
    try:
        out = tuple((int(h), int(w)) for h, w in sizes)
    except (TypeError, ValueError):
        raise ValueError(f"sizes={sizes!r}, expected (height, width) pairs") from None
    for size in out:
        check_image_size(size, "sizes")
    return out
