"""Distributed training helpers: process-group set-up from torchrun's environment, reductions, SyncBatchNorm.

``torchrun --nproc_per_node=N -m hilovit train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and joins the group
(NCCL on CUDA, Gloo on CPU). Without them everything runs in one process and every helper
here is a no-op.

PyTorch's :class:`torch.nn.SyncBatchNorm` runs on accelerators only; :class:`SyncBatchNormCPU`
does the same on any device (two differentiable all-reduces of the per-channel sums), so
``--sync-bn`` also works with Gloo on CPU.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from hilovit.device import resolve_device

__all__ = [
    "DistEnv",
    "init_distributed",
    "cleanup_distributed",
    "all_reduce_sum",
    "broadcast_object",
    "barrier",
    "SyncBatchNormCPU",
    "convert_sync_batchnorm",
    "match_grad_strides",
    "wrap_ddp",
    "resolve_device",
]


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: ``rank`` of ``world_size`` processes, its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError as e:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from e


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistEnv:
    """Join the process group described by torchrun's environment variables (if any).

    Args:
        device: ``'auto'``, ``'cpu'``, ``'cuda'`` (each process takes ``cuda:LOCAL_RANK``).
        timeout_s: collective timeout.

    Returns:
        A :class:`DistEnv`. With ``WORLD_SIZE`` unset or 1 no group is created.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistEnv(0, 1, 0, dev, None)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, dev, backend)


def cleanup_distributed(wait: bool = True) -> None:
    """Leave the process group. With ``wait``, a barrier first: with Gloo, a process that exits while
    another still talks to it sometimes aborts the whole job. After an error, ``wait=False``: the
    other processes may never reach the barrier."""
    if dist.is_available() and dist.is_initialized():
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes (in place; returns it). Identity in one process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj, src: int = 0):
    """Send a picklable object from ``src`` to every process (identity in one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]
    return obj


class SyncBatchNormCPU(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation with statistics over the whole distributed batch, on any device.

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm{1,2,3}d``. In training mode
    with more than one process, the per-channel count, sum and squared deviations are summed
    over all processes with differentiable all-reduces, so outputs and gradients equal those of
    one process holding the whole batch (up to summation order). Otherwise it is plain batch norm.

    Shape:
        x: (B, C, *) -> same shape.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"SyncBatchNormCPU: expected at least 2-D input (B, C, ...), got {input.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        sync = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not sync:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        stats = torch.cat([count, xf.sum(dims)])
        stats = all_reduce(stats)  # differentiable: gradients flow back to every process
        n, mean = stats[0], stats[1:] / stats[0]
        centred = xf - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n  # biased variance, as batch norm uses
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var.detach() * (n / (n - 1)) if float(n) > 1 else var.detach()
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm by a synchronised one: PyTorch's on CUDA, :class:`SyncBatchNormCPU` elsewhere.

    Parameters and buffers are moved over (state-dict keys unchanged). Returns the model (or a
    new root module when the model itself is a BatchNorm).
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def convert(module: nn.Module) -> nn.Module:
        out = module
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNormCPU):
            out = SyncBatchNormCPU(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats)
            if module.affine:
                with torch.no_grad():
                    out.weight = module.weight
                    out.bias = module.bias
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            out.train(module.training)
        for name, child in module.named_children():
            out.add_module(name, convert(child))
        return out

    return convert(model)



def match_grad_strides(model: nn.Module) -> int:
    """Give each parameter's gradient the parameter's own strides where they differ only in size-1 dimensions.

    A depth-wise convolution weight ``(C, 1, kh, kw)`` fed channels-last activations (every
    hilovit model keeps tokens as ``(B, H, W, C)``) receives its gradient with channels-last
    strides ``(kh*kw, 1, kw, 1)`` while the weight has ``(kh*kw, kh*kw, kw, 1)``. Both address the
    same elements in the same order (the dimension of size 1 has a single index), so autograd
    accepts the gradient as it is; DistributedDataParallel compares strides exactly and warns
    "Grad strides do not match bucket view strides" in every process. A hook on each such
    parameter re-labels the incoming gradient with the parameter's strides: a view of the same
    memory, so nothing is copied and no value changes.

    Returns:
        The number of parameters hooked (those with a dimension of size 1).
    """
    import weakref

    hooked = 0
    for p in model.parameters():
        if not p.requires_grad or 1 not in p.shape or p.layout != torch.strided:
            continue
        ref = weakref.ref(p)

        def restride(grad: torch.Tensor, ref=ref) -> Optional[torch.Tensor]:
            param = ref()
            if param is None or grad.layout != torch.strided or grad.stride() == param.stride():
                return None
            if grad.shape != param.shape or any(n != 1 and a != b for n, a, b in
                                                zip(grad.shape, grad.stride(), param.stride())):
                return None  # a truly different layout: leave it to autograd and DDP
            return grad.as_strided(param.shape, param.stride(), grad.storage_offset())

        p.register_hook(restride)
        hooked += 1
    return hooked


def wrap_ddp(model: nn.Module, env: DistEnv) -> nn.Module:
    """``DistributedDataParallel(model)`` for a distributed run (gradients laid out as DDP expects), else ``model``."""
    if not env.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    match_grad_strides(model)
    return DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
