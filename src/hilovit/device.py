"""Which device to run on: one check for every entry point (training, evaluation, prediction, benchmarks).

:func:`resolve_device` turns ``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'mps'`` into a
:class:`torch.device` and refuses, with a ``ValueError`` naming the value, a name torch does not
know (``'gpu'``) or a device this machine lacks (``'cuda'`` on a CPU-only build).
:func:`is_out_of_memory` recognises the ways PyTorch reports an allocation that failed.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

__all__ = ["resolve_device", "is_out_of_memory", "DEVICE_NAMES"]

DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_EXPECTED = "expected " + ", ".join(repr(n) for n in DEVICE_NAMES[:-1]) + f" or {DEVICE_NAMES[-1]!r}"


def _cuda_missing() -> str:
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is built without CUDA"
    return "no CUDA device is visible (driver missing, or CUDA_VISIBLE_DEVICES empty)"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: Optional[Union[str, torch.device]] = "auto", local_rank: int = 0) -> torch.device:
    """The :class:`torch.device` that ``device`` names, checked against this machine.

    Args:
        device: ``'auto'`` (or None): ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU;
            ``'cpu'``; ``'cuda'`` (``cuda:LOCAL_RANK``) or ``'cuda:N'``; ``'mps'`` (Apple GPUs);
            or a :class:`torch.device`.
        local_rank: the CUDA device a bare ``'cuda'`` means (one per process under ``torchrun``).

    Raises:
        TypeError: ``device`` is neither a string nor a ``torch.device``.
        ValueError: an unknown name (``'gpu'``), or a device that is not available here.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None:
        device = "auto"
    if isinstance(device, torch.device):
        dev = device
        given = str(device)
    elif isinstance(device, str):
        given = device
        name = device.strip().lower()
        if name == "auto":
            return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
        hint = " (an NVIDIA GPU is 'cuda')" if name in ("gpu", "nvidia") else ""
        try:
            dev = torch.device(name)
        except (RuntimeError, ValueError):
            raise ValueError(f"device={given!r} is not a device name; {_EXPECTED}{hint}") from None
        if dev.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device={given!r} is not supported; {_EXPECTED}")
    else:
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {type(device).__name__}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={given!r} is not available: {_cuda_missing()}; use 'cpu' or 'auto'")
        count = torch.cuda.device_count()
        index = local_rank if dev.index is None else dev.index
        if index >= count:
            raise ValueError(f"device={given!r} is not available: this machine has {count} CUDA "
                             f"device{'' if count == 1 else 's'} (cuda:0 to cuda:{count - 1})")
        return torch.device("cuda", index)
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"device={given!r} is not available: this machine or PyTorch build has no MPS "
                         "(Apple GPU) support; use 'cpu' or 'auto'")
    return dev


def is_out_of_memory(error: BaseException) -> bool:
    """True when ``error`` is PyTorch (or Python) failing to allocate memory on any device.

    CUDA raises ``torch.OutOfMemoryError``; the CPU allocator raises a ``RuntimeError`` saying
    "can't allocate memory"; Python raises ``MemoryError``.
    """
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    if isinstance(error, RuntimeError):
        text = str(error).lower()
        return "can't allocate memory" in text or "out of memory" in text
    return False
