"""ONNX export of a segmenter with symbolic batch, height and width, verified in onnxruntime at two sizes.

The graph takes the normalised image ``input`` (batch, C, height, width) and gives ``logits``
(batch, num_classes, height, width), as ``model(images)``. It is traced with the TorchScript
exporter (window attention takes its traceable form by itself while tracing), then run in
onnxruntime against PyTorch at two input sizes and batch sizes; the file is written (atomically)
only when every difference is within ``atol``, so a model whose trace fixed a size is refused with
the sizes that failed instead of exported wrong.
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

__all__ = ["SegExportResult", "export_segmenter"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class SegExportResult:
    path: Path
    in_chans: int
    opset: int
    diffs: Dict[str, float] = field(default_factory=dict)  # "BxHxW" -> max |onnx - torch|
    size_bytes: int = 0
    seconds: float = 0.0

    @property
    def max_abs_diff(self) -> float:
        return max(self.diffs.values()) if self.diffs else 0.0


def _check_sizes(sizes) -> Tuple[Tuple[int, int], ...]:
    try:
        out = tuple((int(h), int(w)) for h, w in sizes)
    except (TypeError, ValueError):
        raise ValueError(f"export_segmenter: sizes={sizes!r}, expected (height, width) pairs") from None
    if len(out) < 2 or len(set(out)) < 2 or min(min(s) for s in out) < 1:
        raise ValueError(f"export_segmenter: sizes={sizes!r}, expected at least two different positive sizes")
    return out


def export_segmenter(
    source: Union[PathLike, nn.Module],
    output: PathLike,
    in_chans: Optional[int] = None,
    sizes: Sequence[Tuple[int, int]] = ((128, 128), (96, 160)),
    opset: int = 17,
    atol: float = 1e-4,
    model=None,
) -> SegExportResult:
    """Export a segmenter to ONNX with dynamic batch, height and width.

    Args:
        source: a segmentation checkpoint (``model.safetensors``, ``last.pt``, a training folder) or
            an ``nn.Module``.
        output: the ``.onnx`` file.
        in_chans: input channels (default: the checkpoint's; needed for a module).
        sizes: the (height, width) sizes verified (the first is traced); two different ones at least.
        opset, atol: ONNX opset; the largest accepted |onnxruntime - PyTorch|.
        model: for a checkpoint, the model (name, module or factory) if not the one it names.

    Raises:
        hilovit.export.ExportVerificationError: a size where onnxruntime differs (nothing written).
        ImportError: onnx / onnxruntime missing.
    """
    from hilovit.export import ExportVerificationError, _require_onnx

    onnx, ort = _require_onnx()
    sizes = _check_sizes(sizes)
    if isinstance(source, nn.Module):
        net = source
        if in_chans is None:
            raise ValueError("export_segmenter: give in_chans with a module")
    else:
        from hilovit.train.seg_eval import load_seg_checkpoint

        net, info = load_seg_checkpoint(source, model)
        in_chans = in_chans or info["in_chans"]
    output = Path(output)
    if output.suffix != ".onnx":
        raise ValueError(f"export_segmenter: output={str(output)!r}, expected a .onnx file")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    was_training = net.training
    net.eval()
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    try:
        dummy = torch.randn(2, in_chans, *sizes[0], generator=gen)
        axes = {"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net(dummy)
            torch.onnx.export(net, (dummy,), str(tmp), dynamo=False, opset_version=opset, input_names=["input"],
                              output_names=["logits"], dynamic_axes=axes, do_constant_folding=True)
        onnx.checker.check_model(str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        result = SegExportResult(path=output, in_chans=in_chans, opset=opset)
        for i, (h, w) in enumerate(sizes):
            b = 1 if i % 2 == 0 else 3
            x = torch.randn(b, in_chans, h, w, generator=gen)
            with torch.no_grad():
                ref = net(x).float()
            try:
                out = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
            except Exception as e:  # noqa: BLE001 - onnxruntime's own error, with the size that failed
                raise ExportVerificationError(f"the exported graph does not run at {b}x{h}x{w} (a size fixed by "
                                              f"the trace?): {e}") from e
            if tuple(out.shape) != tuple(ref.shape):
                raise ExportVerificationError(f"onnxruntime gives {tuple(out.shape)} at {b}x{h}x{w}, PyTorch "
                                              f"{tuple(ref.shape)}; {output} not written")
            result.diffs[f"{b}x{h}x{w}"] = float((out - ref).abs().max())
        if not result.max_abs_diff <= atol:
            raise ExportVerificationError(f"ONNX export does not match PyTorch: {result.diffs} > {atol:g}; "
                                          f"{output} not written")
        os.replace(tmp, output)
        result.size_bytes = output.stat().st_size
        result.seconds = time.perf_counter() - start
        return result
    finally:
        net.train(was_training)
        if tmp.exists():
            tmp.unlink()
