"""ONNX export and its verification against PyTorch (``hilovit export``).

Exporter. ``torch.onnx.export(..., dynamo=False)``, the TorchScript-tracing exporter. The
dynamo-based exporter (the default since torch 2.9) needs the ``onnxscript`` package and goes
through ``torch.export``, which cannot trace the data-dependent window bookkeeping of
:class:`~hilovit.layers.attention.WindowAttention` (``nonzero`` over the window types); the tracing
exporter handles both families with nothing beyond ``onnx`` and ``onnxruntime`` (the ``export``
extra), and LITv2's deformable convolution (plain PyTorch ops: grid arithmetic, gathers, a matmul)
exports as ordinary ONNX operators.

Export form. While tracing, every :class:`~hilovit.layers.window_attention.WindowAttention` runs
its documented export formulation (:meth:`~hilovit.layers.window_attention.WindowAttention.forward_windows`:
pad, cyclic shift, window partition by reshapes, one attention call with bias and mask, reverse),
which computes the same function as its index-plan path with the batch left symbolic, and the
inference fast path stands aside (:func:`hilovit.layers.fast.why_not_fast`); nothing is patched.

Verification. The file is checked with ``onnx.checker`` and run with onnxruntime (CPU) on random
inputs: at batch sizes 1 and 3 when the batch is dynamic (the trace used 2), else at the traced
batch. The largest absolute difference from PyTorch must be at most ``atol`` (1e-4). The file is
written to a temporary name beside the output and renamed only after it passes, so ``output``
only ever holds a verified export; on failure nothing is left behind and
:class:`ExportVerificationError` says by how much it missed.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

__all__ = [
    "ExportResult",
    "ExportVerificationError",
    "export_onnx",
    "export_model",
    "verify_onnx",
    "DEFAULT_ATOL",
]

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_ATOL = 1e-4
DEFAULT_OPSET = 17


class ExportVerificationError(RuntimeError):
    """The exported file does not reproduce the PyTorch model within the tolerance."""


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and how well it matched PyTorch."""

    path: Path
    input_shape: Tuple[int, int, int]
    dynamic_batch: bool
    opset: int
    diffs: Dict[int, float] = field(default_factory=dict)  # batch size -> max |onnx - torch|
    seconds: float = 0.0
    size_bytes: int = 0

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


# --------------------------------------------------------------------------- verification
def verify_onnx(
    path: PathLike,
    model: nn.Module,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 3),
    seed: int = 0,
) -> Dict[int, float]:
    """Run ``path`` with onnxruntime (CPU) and ``model`` in PyTorch on the same random inputs.

    Returns ``{batch_size: max |onnx - torch|}``. ``model`` runs in eval mode without gradients.
    """
    onnx, ort = _require_onnx()
    onnx.checker.check_model(str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    diffs = {}
    try:
        for b in batch_sizes:
            x = torch.randn(b, *input_shape, generator=gen)
            with torch.no_grad():
                ref = model(x.to(device)).float().cpu()
            out = torch.from_numpy(session.run(None, {input_name: x.numpy()})[0])
            if tuple(out.shape) != tuple(ref.shape):
                raise ExportVerificationError(
                    f"{path}: onnxruntime output {tuple(out.shape)} differs in shape from PyTorch {tuple(ref.shape)} "
                    f"at batch {b}"
                )
            diffs[int(b)] = float((out - ref).abs().max()) if out.numel() else 0.0
    finally:
        model.train(was_training)
    return diffs


# --------------------------------------------------------------------------- export
def _input_shape(model: nn.Module, img_size: Optional[Union[int, Sequence[int]]]) -> Tuple[int, int, int]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    C, H, W = (int(v) for v in cfg.get("input_size", (getattr(model, "in_chans", 3), 224, 224)))
    if img_size is not None:
        sizes = [img_size] if isinstance(img_size, int) else list(img_size)
        if len(sizes) not in (1, 2) or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"img_size must be a positive int or (H, W), got {img_size!r}")
        H, W = (sizes[0], sizes[0]) if len(sizes) == 1 else (sizes[0], sizes[1])
    return C, H, W


def export_onnx(
    model: nn.Module,
    output: PathLike,
    img_size: Optional[Union[int, Sequence[int]]] = None,
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
) -> ExportResult:
    """Export ``model`` to an ONNX file at ``output`` and verify it against PyTorch.

    Args:
        model: a classifier taking ``(B, C, H, W)`` images (LITv2, Swin, ...); exported in eval mode.
        output: the ``.onnx`` file; written atomically, and only once verified.
        img_size: the image size ``H`` or ``(H, W)`` fixed in the graph (default: the model's
            ``pretrained_cfg['input_size']``).
        dynamic_batch: leave the batch dimension symbolic (``'batch'``); checked at batches 1 and 3.
        opset: ONNX opset (17 by default).
        verify: run onnxruntime against PyTorch; ``False`` only checks the file with ``onnx.checker``.
        atol: the largest absolute difference accepted.
        seed: seed of the random inputs.

    Returns:
        :class:`ExportResult` with the per-batch differences.

    Raises:
        ExportVerificationError: the difference exceeds ``atol`` (``output`` is not written).
        ImportError: onnx / onnxruntime are not installed (``pip install 'hilovit[export]'``).
    """
    onnx, _ = _require_onnx()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    output = Path(output)
    if output.is_dir():
        raise ValueError(f"--output {str(output)!r} is a directory; give a file name such as model.onnx")
    output.parent.mkdir(parents=True, exist_ok=True)
    shape = _input_shape(model, img_size)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    trace_batch = 2 if dynamic_batch else 1
    dummy = torch.randn(trace_batch, *shape, generator=torch.Generator().manual_seed(seed)).to(device)
    num_classes = getattr(model, "num_classes", 1)
    output_name = "logits" if num_classes else "features"
    axes = {"input": {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints taken from shapes (sizes are fixed)
            torch.onnx.export(
                model, (dummy,), str(tmp), dynamo=False, opset_version=opset, input_names=["input"],
                output_names=[output_name], dynamic_axes=axes, do_constant_folding=True,
            )
        model.train(was_training)
        result = ExportResult(path=output, input_shape=shape, dynamic_batch=dynamic_batch, opset=opset)
        if verify:
            result.diffs = verify_onnx(tmp, model, shape, (1, 3) if dynamic_batch else (1,), seed=seed + 1)
            if not result.max_abs_diff <= atol:  # also catches NaN
                raise ExportVerificationError(
                    f"ONNX export of {type(model).__name__} does not match PyTorch: max |onnx - torch| = "
                    f"{result.max_abs_diff:.3g} > {atol:g} (per batch size: {result.diffs}); {output} not written"
                )
        else:
            onnx.checker.check_model(str(tmp))
        os.replace(tmp, output)
        result.size_bytes = output.stat().st_size
        result.seconds = time.perf_counter() - start
        return result
    finally:
        model.train(was_training)
        if tmp.exists():
            tmp.unlink()


def export_model(
    model: str,
    output: PathLike,
    checkpoint: Optional[PathLike] = None,
    format: str = "onnx",
    img_size: Optional[Union[int, Sequence[int]]] = None,
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    atol: float = DEFAULT_ATOL,
) -> ExportResult:
    """``hilovit export``: build the registered ``model`` (sized for ``checkpoint``, see
    :func:`hilovit.predict.load_model`) and export it with :func:`export_onnx`."""
    if format != "onnx":
        raise ValueError(f"--format {format!r} is not supported; the supported format is 'onnx'")
    _require_onnx()
    from hilovit.predict import load_model

    net, _ = load_model(model, checkpoint, device="cpu")
    return export_onnx(net, output, img_size=img_size, dynamic_batch=dynamic_batch, opset=opset, verify=verify,
                       atol=atol)
