"""Two processes (torchrun, Gloo on CPU) give the weights of one process with the same global batch.

What would make them differ is switched off or synchronised, as documented in the README:
augmentation, Mixup/CutMix and drop path draw per-process random numbers (``--no-augment
--mixup 0 --cutmix 0 --drop-path 0``), and LITv2's deformable token merging has BatchNorm, whose
statistics are per process unless ``--sync-bn`` (SyncBatchNormCPU on CPU).

The optimiser is SGD: with AdamW, a parameter whose true gradient is zero (LITv2's deformable-conv
bias, which the BatchNorm after it cancels) gets updates of about +-lr from the sign of float
rounding noise, which differs with the summation order of one or two processes, so those few
parameters drift apart by ~lr per step while every other one agrees.
"""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from hilovit import create_model
from hilovit.train import train

ARGS = dict(model="litv2_nano", epochs=1, batch_size=16, train_subset=64, eval_subset=16, mixup=0.0, cutmix=0.0,
            drop_path=0.0, amp="off", seed=3, warmup_epochs=0.0, base_lr=0.2, label_smoothing=0.1, optimizer="sgd")


def _flags(options: dict) -> list:
    out = []
    for key, value in options.items():
        out += [f"--{key.replace('_', '-')}", str(value)]
    return out


@pytest.mark.timeout(240)
def test_two_processes_match_one(idx_dir, tmp_path):
    one = tmp_path / "one"
    train(data=str(idx_dir), output=str(one), augment="none", progress="off", threads=1, **ARGS)

    two = tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONWARNINGS="ignore")
    # --standalone: the rendezvous store binds a free port itself (localhost:0) and the workers share it, so no
    # port is picked beforehand that another process could take
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           "-m", "hilovit", "train", "--data", str(idx_dir), "--output", str(two), "--no-augment", "--sync-bn",
           "--progress", "log", "--log-interval", "1", *_flags(ARGS)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Grad strides do not match" not in proc.stderr, proc.stderr[-3000:]
    # rank 0 alone prints and writes
    assert proc.stdout.count("epoch 1/1: train loss") == 1, proc.stdout
    assert "2 processes" in proc.stdout

    a, b = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    assert worst < 1e-5, worst
    # the weights did move (the engine seeds torch with --seed before building the model)
    torch.manual_seed(ARGS["seed"])
    init = create_model("litv2_nano", num_classes=10, in_chans=1, drop_path_rate=0.0).state_dict()
    moved = max(float((init[k].double() - a[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    assert moved > 100 * 1e-5, moved


def test_gradients_keep_their_parameters_strides():
    from hilovit.train.distributed import match_grad_strides

    torch.manual_seed(0)
    model = create_model("litv2_nano", num_classes=10, in_chans=1, drop_path_rate=0.0)
    twin = create_model("litv2_nano", num_classes=10, in_chans=1, drop_path_rate=0.0)
    twin.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 28, 28)
    twin(x).sum().backward()
    # the depth-wise convolutions of the ConvFFN get channels-last gradients for their (C, 1, 3, 3) weights
    odd = {n for n, p in twin.named_parameters() if p.grad.stride() != p.stride()}
    assert odd and all("dwconv" in n for n in odd), odd
    assert match_grad_strides(model) >= len(odd)
    for _ in range(2):  # the first gradient and an accumulated one
        model(x).sum().backward()
    grads = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        assert p.grad.stride() == p.stride(), name
        assert torch.equal(p.grad, 2 * grads[name].grad), name  # same values, only relabelled


def test_ddp_does_not_warn_about_grad_strides(tmp_path, recwarn):
    import torch.distributed as dist

    from hilovit.train.distributed import DistEnv, wrap_ddp

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = create_model("litv2_nano", num_classes=10, in_chans=1)
        ddp = wrap_ddp(model, DistEnv(0, 2, 0, torch.device("cpu"), "gloo"))  # as a process of two would
        assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
        ddp(torch.randn(2, 1, 28, 28)).sum().backward()
    finally:
        dist.destroy_process_group()
    assert not [w for w in recwarn if "Grad strides" in str(w.message)]
