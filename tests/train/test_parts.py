"""Pieces of the engine: schedule, parameter groups, configuration, batches, EMA, SyncBatchNormCPU."""

import copy
import math

import pytest
import torch
import torch.nn as nn

from hilovit import create_model
from hilovit.cli_support import options_from_cli
from hilovit.data import AugmentConfig
from hilovit.tasks.classification import ClassificationConfig
from hilovit.train import (
    CosineWarmupSchedule,
    ModelEma,
    SyncBatchNormCPU,
    TrainBatches,
    build_optimizer,
    build_param_groups,
    convert_sync_batchnorm,
    epoch_order,
    scale_lr,
)
from hilovit.train.config import list_recipes


def test_schedule_warmup_then_cosine():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr_scale": 1.0}, {"params": [nn.Parameter(torch.zeros(1))],
                                                              "lr_scale": 0.01}], lr=1.0)
    s = CosineWarmupSchedule(opt, base_lr=1.0, total_steps=110, warmup_steps=10, min_lr=0.01, warmup_lr=0.0)
    assert opt.param_groups[0]["lr"] == 0.0
    lrs = []
    for _ in range(110):
        s.step()
        lrs.append(s.get_last_lr())
    assert lrs[4] == pytest.approx(0.5) and lrs[9] == pytest.approx(1.0)
    assert lrs[59] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[-1] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert opt.param_groups[1]["lr"] == pytest.approx(0.01 * 0.01)
    s2 = CosineWarmupSchedule(opt, 1.0, 110, 10, 0.01)
    s2.load_state_dict(s.state_dict())
    assert s2.get_last_lr() == s.get_last_lr()


def test_linear_scaling_and_explicit_lr():
    assert scale_lr(5e-4, 1024) == pytest.approx(1e-3)
    lr, min_lr, warm = ClassificationConfig(batch_size=256, base_lr=1e-3, min_lr=1e-5, warmup_lr=1e-6).scaled_lr()
    assert (lr, min_lr, warm) == pytest.approx((5e-4, 5e-6, 5e-7))
    lr, min_lr, _ = ClassificationConfig(batch_size=256, lr=0.1, base_lr=1e-3, min_lr=1e-5).scaled_lr()
    assert (lr, min_lr) == pytest.approx((0.1, 1e-3))


def test_param_groups_no_decay_and_offset_rate():
    litv2 = create_model("litv2_nano", in_chans=1)
    groups = {g["name"]: g for g in build_param_groups(litv2, lr=1e-3, weight_decay=0.05)}
    names = {id(p): n for n, p in litv2.named_parameters()}
    decay = {names[id(p)] for p in groups["decay"]["params"]}
    no_decay = {names[id(p)] for p in groups["no_decay"]["params"]}
    assert not any(n.endswith(".bias") or "norm" in n for n in decay)
    assert "patch_embed.norm.weight" in no_decay and "head.bias" in no_decay
    offset = groups["offset"]
    assert offset["lr"] == pytest.approx(1e-5) and offset["lr_scale"] == 0.01
    assert all("conv_offset" in names[id(p)] for p in offset["params"])

    swin = create_model("swin_nano", in_chans=1, num_classes=10)
    opt = build_optimizer(swin, "adamw", lr=1e-3, weight_decay=0.05)
    names = {id(p): n for n, p in swin.named_parameters()}
    nd = [names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]]
    assert any("relative_position_bias_table" in n for n in nd)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(swin.parameters()))


def test_config_precedence_recipe_then_flags(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 7\nbatch-size: 64\naugment:\n  hflip: false\n  scale: [0.5, 1.0]\n")
    cfg = ClassificationConfig.from_sources(recipe, epochs=3, augment={"random_erasing": 0.25})
    assert cfg.epochs == 3 and cfg.batch_size == 64
    assert cfg.augment.hflip is False and cfg.augment.scale == (0.5, 1.0) and cfg.augment.random_erasing == 0.25
    assert ClassificationConfig.from_sources(recipe, augment="none").augment is None
    assert "fashion-mnist" in list_recipes()
    assert ClassificationConfig.from_sources("fashion-mnist").model == "litv2_nano"
    with pytest.raises(FileNotFoundError, match="fashion-mnist"):
        ClassificationConfig.from_sources("no-such-recipe")
    opts = options_from_cli({"epochs": 2, "hflip": False, "crop_scale": [0.4, 1.0], "config": "x", "json": True})
    assert opts == {"epochs": 2, "augment": {"hflip": False, "scale": (0.4, 1.0)}}
    assert isinstance(ClassificationConfig.from_dict(opts).augment, AugmentConfig)


def test_batches_split_over_processes_like_one_process():
    ds = _InMemory(torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1), torch.arange(50))
    one = TrainBatches(ds, batch_size=8, seed=1)
    parts = [TrainBatches(ds, batch_size=8, seed=1, rank=r, world_size=2) for r in range(2)]
    for epoch in (0, 1):
        for b in [one, *parts]:
            b.set_epoch(epoch)
        whole = [y for _, y in one]
        halves = [[y for _, y in p] for p in parts]
        assert len(whole) == 6  # 50 // 8, the incomplete batch dropped
        for s, y in enumerate(whole):
            assert torch.equal(torch.cat([halves[0][s], halves[1][s]]), y)
    assert torch.equal(epoch_order(50, 1, 3), epoch_order(50, 1, 3))
    assert not torch.equal(epoch_order(50, 1, 3), epoch_order(50, 1, 4))


class _InMemory:
    def __init__(self, images, targets):
        self.images, self.targets = images, targets

    def __len__(self):
        return len(self.targets)


def test_ema_follows_weights():
    model = nn.Linear(2, 2)
    ema = ModelEma(model, decay=0.5, warmup=False)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert torch.allclose(ema.module.weight, model.weight - 0.5)
    assert ModelEma(model, 0.9999).current_decay() == pytest.approx(0.1)  # warm-up: (1 + 0) / (10 + 0)


def test_sync_batchnorm_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-1, 1)
    ref = copy.deepcopy(model)
    synced = convert_sync_batchnorm(model, torch.device("cpu"))
    assert isinstance(synced[1], SyncBatchNormCPU) and synced.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(synced(x), ref(x), atol=1e-6)
    assert torch.allclose(synced[1].running_var, ref[1].running_var)


def test_counts_in_the_output_agree_with_their_nouns():
    from hilovit.train import format_summary
    from hilovit.train.report import plural

    assert [plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    one = format_summary({"epochs": 1, "steps": 1, "train_images_per_second": 10.0, "wall_seconds": 3.0})
    assert one.startswith("1 epoch, 1 step, 10 training images/s") and "1 epochs" not in one
    two = format_summary({"epochs": 2, "steps": 8, "train_images_per_second": None, "wall_seconds": 3.0})
    assert two.startswith("2 epochs, 8 steps, n/a training images/s")


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    import os
    import subprocess
    import sys

    from hilovit.train.state import remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # this process has ended
    live_pid = os.getppid()  # alive while this test runs
    for name in (f".last.pt.tmp-{dead_pid}", f".metrics.csv.tmp-{dead_pid}", f".write-test-{dead_pid}",
                 f".last.pt.tmp-{os.getpid()}", f".last.pt.tmp-{live_pid}", "last.pt", ".hidden", "x.tmp-12"):
        (tmp_path / name).write_bytes(b"x")
    removed = sorted(p.name for p in remove_stale_temporaries(tmp_path))
    assert removed == sorted([f".last.pt.tmp-{dead_pid}", f".metrics.csv.tmp-{dead_pid}", f".write-test-{dead_pid}",
                              f".last.pt.tmp-{os.getpid()}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".last.pt.tmp-{live_pid}", "last.pt", ".hidden",
                                                                  "x.tmp-12"])
