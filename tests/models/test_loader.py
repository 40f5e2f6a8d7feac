"""The one checkpoint reader and loader (read_checkpoint, load_model) and the atomic writer."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import warnings

import pytest
import torch

from hilovit import create_model
from hilovit.cli import main
from hilovit.data.idx import write_idx
from hilovit.io import atomic_write, temporary_name
from hilovit.models._builder import load_model
from hilovit.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_safetensors,
)
from hilovit.runtime import autocast_context
from hilovit.tasks.classification_predict import Predictor

META = {"model": "litv2_nano", "classes": json.dumps(["a", "b", "c"]), "img_size": "28", "in_chans": "1",
        "mean": "0.25", "std": "0.5", "dataset": "fashion-mnist"}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return create_model("litv2_nano", num_classes=3, in_chans=1).eval()


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


# --------------------------------------------------------------------------- reading
def test_metadata_round_trip(net, tmp_path):
    sd = net.state_dict()
    save_safetensors(sd, tmp_path / "model.safetensors", metadata=META)
    got, meta = read_checkpoint(tmp_path / "model.safetensors")
    _same(got, sd)
    assert meta == META
    torch.save({"model": sd, "epoch": 1, "metadata": {"model": "litv2_nano", "img_size": 28},
                "ema": {"module": {k: v + 1 for k, v in sd.items()}, "updates": 3}}, tmp_path / "last.pt")
    got, meta = read_checkpoint(tmp_path / "last.pt")
    _same(got, sd)
    assert meta == {"model": "litv2_nano", "img_size": 28}
    ema, _ = read_checkpoint(tmp_path / "last.pt", ema=True)
    _same(ema, {k: v + 1 for k, v in sd.items()})
    # a folder: its model.safetensors
    assert read_checkpoint(tmp_path)[1] == META
    with pytest.raises(CheckpointError, match="EMA"):
        read_checkpoint(tmp_path / "model.safetensors", ema=True)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        read_checkpoint(tmp_path / "nope.pt")


def test_load_model_sizes_and_names_itself(net, tmp_path):
    save_safetensors(net.state_dict(), tmp_path / "model.safetensors", metadata=META)
    model, info = load_model(tmp_path)  # the recorded model name
    assert type(model).__name__ == "LITv2" and model.num_classes == 3 and model.in_chans == 1
    assert info["classes"] == ["a", "b", "c"] and info["normalization"] == "checkpoint"
    assert model.pretrained_cfg["mean"] == (0.25,) and model.pretrained_cfg["input_size"] == (1, 28, 28)
    _same(model.state_dict(), net.state_dict())
    with pytest.raises(CheckpointError, match="holds a 'litv2_nano' model, not 'swin_nano'"):
        load_model(tmp_path, "swin_nano")
    bare = {k: v for k, v in net.state_dict().items()}
    with pytest.raises(CheckpointError, match="records no model name"):
        load_model(bare)


def test_a_classifier_that_does_not_fit_is_refused(net, tmp_path, capsys):
    sd = dict(net.state_dict())
    sd["head.weight"] = torch.zeros(3, 99)  # another feature width: today's predict left the head random
    save_safetensors(sd, tmp_path / "model.safetensors", metadata=META)
    with pytest.raises(CheckpointError, match=r"head.weight: checkpoint \(3, 99\) vs model \(3, 256\)"):
        load_model(tmp_path / "model.safetensors", "litv2_nano")
    with pytest.raises(CheckpointError, match="head.weight"):
        Predictor.from_checkpoint("litv2_nano", tmp_path / "model.safetensors")
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (28, 28), 128).save(img)
    assert main(["predict", str(img), "--model", "litv2_nano", "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors' does not fit litv2_nano" in err and "head.weight" in err
    # fine-tuning keeps its way: load_checkpoint re-initialises a classifier of another size, with a warning
    other = create_model("litv2_nano", num_classes=5, in_chans=1)
    with pytest.warns(UserWarning, match="classifier"):
        assert sorted(load_checkpoint(other, net.state_dict()).reinitialised) == ["head.bias", "head.weight"]


def test_a_checkpoint_of_another_family_is_named(tmp_path):
    swin = create_model("swin_nano", num_classes=3)
    with pytest.raises(CheckpointError, match="looks like a Swin Transformer checkpoint"):
        load_model(swin.state_dict(), "litv2_nano")
    lit = create_model("litv2_nano", num_classes=3)
    with pytest.raises(CheckpointError, match="looks like a LITv2 checkpoint"):
        load_checkpoint(create_model("swin_nano", num_classes=3), lit.state_dict())


def test_normalisation_is_said_and_can_be_chosen(net, tmp_path, capsys):
    torch.save({"model": net.state_dict()}, tmp_path / "bare.pt")
    with pytest.warns(UserWarning, match=r"records no normalisation: using litv2_nano's default mean=\(0.5,\)"):
        p = Predictor.from_checkpoint("litv2_nano", tmp_path / "bare.pt")
    assert p.cfg["mean"] == (0.5,)
    p = Predictor.from_checkpoint("litv2_nano", tmp_path / "bare.pt", mean=(0.2,), std=(0.3,))
    assert p.cfg["mean"] == (0.2,) and p.cfg["std"] == (0.3,)
    from PIL import Image

    img = tmp_path / "x.png"
    Image.new("L", (28, 28), 200).save(img)
    args = ["predict", str(img), "--model", "litv2_nano", "--checkpoint", str(tmp_path / "bare.pt"), "--json"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "note: checkpoint" in err and "--norm" in err and "mean=(0.5,)" in err
    assert main(args + ["--norm", "none"]) == 0
    out_none, err = capsys.readouterr()
    assert err == ""
    # mean 0 std 1 is another input than mean 0.5 std 0.5: other probabilities
    assert json.loads(out_none)[0]["predictions"] != json.loads(out)[0]["predictions"]
    assert main(args + ["--mean", "0.5"]) == 2
    assert "--mean and --std go together" in capsys.readouterr().err


# --------------------------------------------------------------------------- writing
def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target, "w") as f:
            f.write("half of the new")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    with pytest.raises(ValueError, match="mode='a'"):
        with atomic_write(target, "a"):
            pass


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    target = tmp_path / "last.pt"
    stale = temporary_name(target, dead_pid)
    live = temporary_name(target, os.getppid())  # a running process: its write may be in progress
    stale.write_bytes(b"x" * 100)
    live.write_bytes(b"y")
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    assert not stale.exists() and live.exists()


def test_outputs_are_0644_under_the_usual_umask(net, tmp_path):
    old = os.umask(0o022)
    try:
        save_safetensors(net.state_dict(), tmp_path / "model.safetensors")
        write_idx(tmp_path / "x.idx", torch.zeros(2, 3, dtype=torch.uint8).numpy())
        with atomic_write(tmp_path / "a.txt", "w") as f:
            f.write("a")
        os.umask(0o077)
        with atomic_write(tmp_path / "private.txt", "w") as f:
            f.write("p")
    finally:
        os.umask(old)
    for name in ("model.safetensors", "x.idx", "a.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600  # the umask is respected


def test_autocast_context_has_one_home():
    import hilovit.bench.attention as bench_attention
    import hilovit.bench.models as bench_models
    import hilovit.bench.seg as bench_seg
    import hilovit.train.engine as engine
    from hilovit.tasks import segmentation_eval

    assert engine.autocast_context is autocast_context and segmentation_eval.autocast_context is autocast_context
    assert all(m.autocast_context is autocast_context for m in (bench_attention, bench_models, bench_seg))
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast_context(torch.device("cpu"), torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
    with autocast_context("cpu", None):
        assert (a @ b).dtype == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float32 is full precision: no autocast (and no "not supported" warning)
        with autocast_context("cpu", torch.float32):
            assert (a @ b).dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
