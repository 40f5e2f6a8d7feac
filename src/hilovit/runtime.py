"""Process-level settings: a faster allocator for CPU work, the one autocast helper, and the choice of the
autocast dtype (:func:`resolve_amp`, on the one check of native bfloat16, :func:`native_bf16`).

glibc serves every large allocation (a stage-1 activation of a batch is tens of MB) with a
fresh ``mmap`` and returns it on free, so each pass pays page faults for all of its activations
again. :func:`tune_allocator` tells glibc to keep freed memory for reuse instead (the effect
jemalloc/tcmalloc give). The first hilovit model built in a process calls it (so does the
``hilovit`` command). On this project's 2-core AVX2 CPU it makes a LITv2-S training step
(batch 16, 224) 1.27x faster (4.3 s against 5.4-5.7 s) and a 77 MB element-wise pass 8x faster;
inference about 1.1x (1.26 s against 1.42 s; ``benchmarks/library_path.md`` has the committed run,
where the gaps were smaller), and cold torch.compile times are the same
either way (85 s and 85 s against 76 s and 89 s for ``swin_nano``). The cost: memory freed after a
peak stays with the process for reuse. ``HILOVIT_NO_MALLOPT=1`` makes it a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from typing import Optional, Union

import torch

__all__ = ["tune_allocator", "autocast_context", "native_bf16", "resolve_amp"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done = None


def tune_allocator() -> bool:
    """Keep freed heap memory for reuse (glibc ``mallopt``); True when applied. Idempotent."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("HILOVIT_NO_MALLOPT") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _done


def autocast_context(device: Union[torch.device, str], dtype: Optional[torch.dtype]):
    """``torch.autocast`` on ``device``'s type with ``dtype``, or a no-op context when ``dtype`` is None
    or float32 (full precision: nothing to cast to)."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=dtype)


def native_bf16(device: Union[torch.device, str] = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively: CUDA, or a CPU whose oneDNN has bfloat16
    instructions (AVX512-BF16/AMX). Elsewhere bfloat16 products are emulated and slower than float32."""
    if torch.device(device).type == "cuda":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_amp(amp: str, device: Union[torch.device, str]) -> Optional[torch.dtype]:
    """The autocast dtype for ``amp`` on ``device``: ``'off'`` None; ``'auto'`` float16 on CUDA, and on
    CPU bfloat16 where it is native (:func:`native_bf16`), float32 (None) elsewhere."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if amp == "auto":
        if torch.device(device).type == "cuda":
            return torch.float16
        return torch.bfloat16 if native_bf16(device) else None
    raise ValueError(f"amp={amp!r}: choose one of auto, bf16, fp16, off")
