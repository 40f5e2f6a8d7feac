"""Fine-tuning: starting weights (--pretrained), layer-wise rate decay, a frozen backbone, what the
summary records, TensorBoard scalars and the training lines through logging."""

import hashlib
import json
import logging

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from hilovit import create_model
from hilovit.cli import main
from hilovit.tasks.classification import ClassificationConfig
from hilovit.train import train
from hilovit.train.config import OptionError
from hilovit.train.optim import CosineWarmupSchedule, build_optimizer, build_param_groups

TINY = dict(model="litv2_nano", epochs=2, batch_size=32, eval_subset=16, progress="off", threads=1, base_lr=4e-3,
            warmup_epochs=0.5, amp="off", workers=0)  # 128 synthetic images: 4 steps per epoch


def opts(**changes):
    return {**TINY, **changes}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """An official-format file ({'model': state_dict}) of a litv2_nano for 1 channel and 10 classes."""
    torch.manual_seed(123)
    model = create_model("litv2_nano", in_chans=1, num_classes=10)
    path = tmp_path_factory.mktemp("weights") / "nano.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _backbone(sd):
    return {k: v for k, v in sd.items() if not k.startswith("head.")}


# ----------------------------------------------------------------------------- layer decay
def _expected_litv2_nano_layer(name):
    """Layer ids of litv2_nano (depths 1, 1, 2, 1: L = 5) written out by hand."""
    table = [("patch_embed.", 0), ("layers.0.blocks.0.", 1), ("layers.0.downsample.", 2), ("layers.1.blocks.0.", 2),
             ("layers.1.downsample.", 3), ("layers.2.blocks.0.", 3), ("layers.2.blocks.1.", 4),
             ("layers.2.downsample.", 5), ("layers.3.blocks.0.", 5), ("norm.", 6), ("head.", 6)]
    return next(i for prefix, i in table if name.startswith(prefix))


def test_layer_decay_rates_equal_the_formula_for_litv2():
    model = create_model("litv2_nano", num_classes=3)
    lr, decay = 1e-3, 0.75
    groups = build_param_groups(model, lr, 0.05, offset_lr_scale=0.01, layer_decay=decay)
    names = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for g in groups:
        for p in g["params"]:
            name = names[id(p)]
            seen.add(name)
            offset = 0.01 if name.endswith("conv_offset.weight") else 1.0
            expected = lr * offset * decay ** (5 + 1 - _expected_litv2_nano_layer(name))
            assert g["lr"] == pytest.approx(expected, rel=1e-12), name
            no_decay = p.ndim <= 1 or name.endswith(".bias")
            assert g["weight_decay"] == (0.0 if no_decay else 0.05), name
    assert seen == set(names.values())  # every parameter in exactly one group (count below)
    assert sum(len(g["params"]) for g in groups) == len(names)
    # the schedule keeps each group's scale at every step
    opt = build_optimizer(model, "adamw", lr, 0.05, offset_lr_scale=0.01, layer_decay=decay)
    sched = CosineWarmupSchedule(opt, lr, total_steps=10, warmup_steps=2, min_lr=1e-5, warmup_lr=1e-6)
    for step in (1, 5, 10):
        sched.step(step)
        for g in opt.param_groups:
            name = names[id(g["params"][0])]
            offset = 0.01 if name.endswith("conv_offset.weight") else 1.0
            layer = _expected_litv2_nano_layer(name)
            assert g["lr"] == pytest.approx(sched.lr_at(step) * offset * decay ** (6 - layer))


def test_layer_decay_counts_swin_blocks_through_its_stages():
    model = create_model("swin_t", num_classes=3)  # depths 2, 2, 6, 2: L = 12
    groups = build_param_groups(model, 1.0, 0.05, layer_decay=0.5)
    rate = {n: g["lr"] for g in groups for n, p in model.named_parameters() if any(p is q for q in g["params"])}
    assert rate["patch_embed.proj.weight"] == 0.5 ** 13
    assert rate["layers.0.blocks.0.attn.qkv.weight"] == 0.5 ** 12
    assert rate["layers.0.blocks.1.attn.qkv.weight"] == 0.5 ** 11
    assert rate["layers.0.downsample.reduction.weight"] == 0.5 ** 10  # feeds layers.1.blocks.0
    assert rate["layers.2.blocks.5.mlp.fc1.weight"] == 0.5 ** 3  # block 10 of 12
    assert rate["layers.3.blocks.1.mlp.fc2.weight"] == 0.5 ** 1
    assert rate["norm.weight"] == rate["head.weight"] == 1.0
    assert "layers.0.blocks.0.attn.relative_position_bias_table" in rate  # no-decay keyword group kept apart
    with pytest.raises(ValueError, match=r"layer_decay=1\.5"):
        build_param_groups(model, 1.0, 0.05, layer_decay=1.5)
    with pytest.raises(OptionError, match="layer_decay"):
        ClassificationConfig(layer_decay=0.0)


# ----------------------------------------------------------------------------- starting weights
def test_run_starts_from_the_file_and_records_it(idx_dir, weights_file, tmp_path, capsys):
    from types import SimpleNamespace

    from hilovit.tasks.classification import TASK
    from hilovit.train.finetune import resolve_weights

    def build_model(cfg, num_classes, in_chans, weights):
        return TASK.build_model(cfg, SimpleNamespace(num_classes=num_classes, in_chans=in_chans), weights, None), None

    cfg = ClassificationConfig(data=str(idx_dir), pretrained=str(weights_file), **opts(epochs=1))
    model, _ = build_model(cfg, 10, 1, resolve_weights(cfg))  # the engine's own construction
    file_sd = torch.load(weights_file, weights_only=True)["model"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, file_sd[k]), k  # same class count: the head loads too
    out = tmp_path / "run"
    summary = train(data=str(idx_dir), output=str(out), pretrained=str(weights_file), **opts(progress="log"))
    printed = capsys.readouterr().out
    digest = _sha256(weights_file)
    record = {"given": str(weights_file), "source": str(weights_file), "file": str(weights_file), "sha256": digest}
    assert summary["pretrained"] == record
    assert json.loads((out / "summary.json").read_text())["pretrained"] == record
    assert f"starting from {weights_file} (sha256 {digest[:12]}...)" in printed
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["pretrained"] == str(weights_file) and meta["pretrained_sha256"] == digest
    assert torch.load(out / "last.pt", weights_only=True)["weights"] == record
    # a run's output folder is a source too: its model.safetensors
    cfg = ClassificationConfig(data=str(idx_dir), pretrained=str(out), **opts(epochs=1))
    plan = resolve_weights(cfg)
    assert plan.given == str(out) and plan.path == out / "model.safetensors"
    model, _ = build_model(cfg, 10, 1, plan)
    trained = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())


def test_head_is_reinitialised_for_other_classes_in_one_line(tmp_path, weights_file, capsys):
    from PIL import Image

    for c in ("a", "b", "c"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(12):
            Image.new("L", (28, 28), 40 + 60 * "abc".index(c) + i).save(tmp_path / "data" / c / f"{i}.png")
    summary = train(data=str(tmp_path / "data"), val_split=0.25, in_chans=1, output=str(tmp_path / "run"),
                    pretrained=str(weights_file), **opts(batch_size=9, epochs=1, eval_subset=None, progress="log"))
    printed = capsys.readouterr().out
    lines = [ln for ln in printed.splitlines() if "classifier" in ln]
    assert len(lines) == 1 and "head.weight" in lines[0] and "newly initialised" in lines[0], printed
    assert summary["pretrained"]["sha256"] == _sha256(weights_file)


def test_state_dict_in_memory_is_recorded_without_a_hash(idx_dir, tmp_path):
    torch.manual_seed(5)
    sd = create_model("litv2_nano", in_chans=1, num_classes=10).state_dict()
    summary = train(data=str(idx_dir), output=str(tmp_path / "run"), pretrained=sd, **opts(epochs=1))
    assert summary["pretrained"] == {"given": "state dict (in memory)", "source": None, "file": None, "sha256": None}
    assert summary["config"]["pretrained"] == "state dict (in memory)"


@pytest.mark.parametrize("args, needle", [
    (["--pretrained", "no/such/weights.pth"], "--pretrained='no/such/weights.pth': no such file"),
    (["--pretrained", "litv2_nano"], "no pretrained weights are published for 'litv2_nano'"),
    (["--model", "swin_t", "--pretrained", "litv2_s"], "--pretrained='litv2_s' names weights of litv2_s, but --model"),
    (["--initial-checkpoint", "http://127.0.0.1:9/litv2_s.pth"], "downloads are off"),
])
def test_a_source_that_cannot_be_used_is_refused_in_one_line(idx_dir, tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.setenv("HILOVIT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    rc = main(["train", "--data", str(idx_dir), "--output", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "o" / "last.pt").exists()


def test_a_name_sets_the_model_and_the_recipe_ships():
    cfg = ClassificationConfig.from_sources("finetune", pretrained="litv2_s.alpha_0_5", data="DIR")
    assert cfg.model == "litv2_s.alpha_0_5" and cfg.layer_decay == 0.75 and cfg.warmup_epochs == 1
    assert cfg.scaled_lr()[0] == pytest.approx(2.5e-4 * 64 / 512)
    assert ClassificationConfig.from_dict({"initial_checkpoint": "w.pth"}).pretrained == "w.pth"
    assert ClassificationConfig.from_dict({"pretrained": "w.pth"}).model == "litv2_nano"  # a file keeps the model


def test_resume_keeps_its_weights_and_refuses_other_ones(idx_dir, weights_file, tmp_path):
    own = tmp_path / "own.pth"
    own.write_bytes(weights_file.read_bytes())
    out = tmp_path / "run"
    train(output=str(out), stop_at_epoch=1, **opts(data=str(idx_dir), pretrained=str(own)))
    with pytest.raises(OptionError, match=r"pretrained='other\.pth' \(the run's: '.*own\.pth'\)"):
        train(output=str(out), resume=True, pretrained="other.pth")
    own.unlink()  # a resumed run continues from last.pt: the starting file is not read again
    summary = train(output=str(out), resume=True)
    assert summary["epochs"] == 2 and summary["pretrained"]["sha256"] == _sha256(weights_file)


# ----------------------------------------------------------------------------- frozen backbone
def test_frozen_backbone_stays_put_and_the_resumed_run_is_exact(idx_dir, weights_file, tmp_path, capsys):
    run = opts(data=str(idx_dir), pretrained=str(weights_file), freeze_backbone_epochs=1, progress="log",
               log_interval=100)
    file_sd = torch.load(weights_file, weights_only=True)["model"]
    half = tmp_path / "half"
    train(output=str(half), stop_at_epoch=1, **run)
    printed = capsys.readouterr().out
    assert "backbone frozen for the first 1 epoch: only the classifier head trains" in printed
    after_one = torch.load(half / "last.pt", weights_only=True)
    for k, v in _backbone(after_one["model"]).items():
        assert torch.equal(v, file_sd[k]), k  # not moved, not even by weight decay
    assert not torch.equal(after_one["model"]["head.weight"], file_sd["head.weight"])
    train(output=str(half), resume=True, progress="log")
    assert "backbone unfrozen at epoch 2" in capsys.readouterr().out
    straight = tmp_path / "straight"
    train(output=str(straight), **run)
    a = torch.load(half / "last.pt", weights_only=True)["model"]
    b = torch.load(straight / "last.pt", weights_only=True)["model"]
    assert any(not torch.equal(a[k], file_sd[k]) for k in _backbone(a))  # the backbone trained in epoch 2
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------- logging, TensorBoard
def test_lines_go_through_logging(idx_dir, tmp_path, capsys, caplog):
    log = logging.getLogger("hilovit.train")
    old = log.level
    try:
        log.setLevel(logging.WARNING)
        train(data=str(idx_dir), output=str(tmp_path / "quiet"), **opts(progress="log", epochs=1))
        assert "epoch 1/1" not in capsys.readouterr().out
        log.setLevel(logging.INFO)
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        log.addHandler(handler)
        try:
            train(data=str(idx_dir), output=str(tmp_path / "loud"), **opts(progress="log", epochs=1))
        finally:
            log.removeHandler(handler)
        assert "epoch 1/1" not in capsys.readouterr().out  # the plain handler steps aside for the user's
        messages = [r.getMessage() for r in records]
        assert all(r.name == "hilovit.train" and r.levelno == logging.INFO for r in records)
        assert any(m.startswith("epoch 1/1: train loss") for m in messages), messages
        assert any(m.startswith("litv2_nano: ") for m in messages)
    finally:
        log.setLevel(old)


def test_cli_output_is_unchanged(idx_dir, tmp_path, capsys):
    rc = main(["train", "--data", str(idx_dir), "--output", str(tmp_path / "o"), "--epochs", "1", "--batch-size",
               "32", "--eval-subset", "16", "--progress", "log", "--threads", "1", "--amp", "off", "--workers", "0"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and out[0].startswith("litv2_nano: ") and any(ln.startswith("epoch 1/1: train loss") for ln in out)


def test_tensorboard_scalars(idx_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator

    out = tmp_path / "run"
    summary = train(data=str(idx_dir), output=str(out), log_tensorboard=True, **TINY)
    acc = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "eval/top1", "eval/top5", "eval/loss"} <= tags, tags
    top1 = acc.Scalars("eval/top1")
    assert [e.step for e in top1] == [1, 2]
    assert top1[-1].value == pytest.approx(summary["test_top1"], rel=1e-6)
    rows = json.loads((out / "summary.json").read_text())["files"]
    assert rows["tensorboard"] == str(out / "tensorboard")


def test_tensorboard_missing_names_the_extra(idx_dir, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import fails as when not installed
    with pytest.raises(OptionError, match=r"pip install 'hilovit\[tensorboard\]'"):
        train(data=str(idx_dir), output=str(tmp_path / "run"), log_tensorboard=True, **TINY)
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.slow  # two torchrun processes: ~40 s on a shared 2-core machine
@pytest.mark.timeout(240)
def test_frozen_then_thawed_backbone_under_torchrun_matches_one_process(idx_dir, weights_file, tmp_path):
    """DDP registers the parameters that need gradients when it wraps the model: the engine wraps it again
    when the backbone thaws, so two processes still give the weights of one (SGD, synchronised BatchNorm;
    see test_distributed.py for why)."""
    import os
    import subprocess
    import sys

    args = dict(model="litv2_nano", epochs=2, batch_size=16, train_subset=64, eval_subset=16, mixup=0.0, cutmix=0.0,
                drop_path=0.0, amp="off", seed=3, warmup_epochs=0.0, base_lr=0.2, optimizer="sgd",
                freeze_backbone_epochs=1, pretrained=str(weights_file))
    train(data=str(idx_dir), output=str(tmp_path / "one"), augment="none", progress="off", threads=1, **args)
    flags = [x for k, v in args.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", PYTHONWARNINGS="ignore")
    # --standalone: the rendezvous binds a free port itself (no port picked beforehand that another process could take)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
           "-m", "hilovit", "train", "--data", str(idx_dir),
           "--output", str(tmp_path / "two"), "--no-augment", "--sync-bn", "--progress", "log", *flags]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("backbone unfrozen at epoch 2") == 1, proc.stdout
    one, two = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" /
                                                                                      "model.safetensors"))
    start = torch.load(weights_file, weights_only=True)["model"]
    assert not torch.equal(one["layers.0.blocks.0.mlp.fc1.weight"], start["layers.0.blocks.0.mlp.fc1.weight"])
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-5, msg=k)


def test_a_tagged_name_picks_its_file_and_the_variant(monkeypatch, tmp_path):
    from hilovit.models import hub
    from hilovit.train.finetune import resolve_weights

    fetched = []
    monkeypatch.setattr(hub, "fetch", lambda source, **kw: fetched.append((source, kw)) or tmp_path / "w.pth")
    for cfg in (ClassificationConfig.from_dict({"pretrained": "litv2_s.alpha_0_5"}),
                ClassificationConfig(model="litv2_s", pretrained="litv2_s.alpha_0_5")):
        plan = resolve_weights(cfg)
        assert plan.model == "litv2_s.alpha_0_5" and plan.given == "litv2_s.alpha_0_5"
        assert plan.source.endswith("/v1.1/alpha_0.5.pth") and plan.path == tmp_path / "w.pth"
    assert fetched[-1][1]["file_name"] == "litv2_s-alpha_0_5.pth"
    plan = resolve_weights(ClassificationConfig(model="swin_t", pretrained=True))  # True: the model's default weights
    assert plan.model == "swin_t" and plan.source.endswith("swin_tiny_patch4_window7_224.pth")
