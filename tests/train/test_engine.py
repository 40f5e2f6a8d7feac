"""hilovit train: a short real training, resume equality, atomic checkpoints, bad input."""

import csv
import json
import time

import pytest
import torch
from safetensors.torch import load_file

from hilovit import CheckpointError, create_model, load_checkpoint
from hilovit.cli import main
from hilovit.tasks.classification import ClassificationConfig
from hilovit.train import state as state_mod
from hilovit.train import train

TINY = dict(model="litv2_nano", epochs=2, batch_size=32, eval_subset=16, progress="off", threads=1, base_lr=4e-3,
            warmup_epochs=0.5)


# ----------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def fashion_run(fashion_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fashion") / "run"
    t0 = time.perf_counter()
    summary = train(model="litv2_nano", data="fashion-mnist", data_dir=str(fashion_dir), epochs=1, batch_size=64,
                    train_subset=3000, eval_subset=2000, lr=1e-3, warmup_epochs=0.2, threads=1, progress="log",
                    log_interval=1000, output=str(out))
    return out, summary, time.perf_counter() - t0


def test_short_training_beats_chance(fashion_run):
    out, summary, _ = fashion_run
    # 10 classes: chance is 10%; one epoch on 3000 images reaches ~60-70%
    assert summary["test_top1"] > 40.0, summary
    assert summary["test_top5"] > summary["test_top1"]
    for key in ("test_top1", "test_top5", "epochs", "train_images_per_second", "wall_seconds"):
        assert key in summary
    assert summary["epochs"] == 1 and summary["finished"]
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["test_top1"] == pytest.approx(summary["test_top1"])
    for name in ("last.pt", "model.safetensors", "metrics.csv", "summary.json", "curves.png", "config.yaml"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 1
    for col in ("train_loss", "train_top1", "eval_top1", "lr", "images_per_second"):
        assert float(rows[0][col]) > 0
    assert not list(out.glob(".*tmp*")), "temporary files left behind"
    # final weights load with the library's loader into a fresh model
    model = create_model("litv2_nano", in_chans=1, num_classes=10)
    load_checkpoint(model, out / "model.safetensors")


# ----------------------------------------------------------------------------- resume
def test_resume_gives_the_same_weights(idx_dir, tmp_path):
    # augmentation, Mixup/CutMix, drop path and EMA on: every random stream must resume exactly
    opts = dict(TINY, data=str(idx_dir), mixup=0.5, cutmix=0.5, model_ema=True, model_ema_decay=0.9, seed=7)
    straight = tmp_path / "straight"
    train(output=str(straight), **opts)

    resumed = tmp_path / "resumed"
    part = train(output=str(resumed), stop_at_epoch=1, **opts)
    assert not part["finished"] and not (resumed / "model.safetensors").exists()
    assert torch.load(resumed / "last.pt", weights_only=True)["epoch"] == 1
    torch.manual_seed(12345)  # disturb the global generators: resuming must not depend on them
    done = train(output=str(resumed), resume=True, progress="off")  # the other options come from last.pt
    assert done["finished"] and done["epochs"] == 2

    for name in ("model.safetensors", "model_ema.safetensors"):
        a, b = load_file(str(straight / name)), load_file(str(resumed / name))
        worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
        assert worst <= 1e-6, (name, worst)
    rows_a = list(csv.DictReader((straight / "metrics.csv").open()))
    rows_b = list(csv.DictReader((resumed / "metrics.csv").open()))
    assert [r["train_loss"] for r in rows_a] == [r["train_loss"] for r in rows_b]


def test_a_kill_between_the_checkpoint_and_the_metrics_file_is_repaired_on_resume(idx_dir, tmp_path, monkeypatch,
                                                                                 kill_metrics_write):
    """last.pt is written before metrics.csv: a run killed in between leaves a checkpoint of the
    finished epoch and a metrics file one row short; resuming rewrites the file from the checkpoint."""
    import hilovit.train.engine as engine

    out = tmp_path / "run"
    real = kill_metrics_write(engine, "write_metrics_csv")
    with pytest.raises(KeyboardInterrupt):
        train(output=str(out), data=str(idx_dir), **TINY)
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 1  # the state the kill leaves
    monkeypatch.setattr(engine, "write_metrics_csv", real)
    done = train(output=str(out), resume=True, progress="off")  # nothing left to train
    assert done["finished"] and done["epochs"] == 2
    history = torch.load(out / "last.pt", weights_only=True)["history"]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert [float(r["train_loss"]) for r in rows] == pytest.approx([h["train_loss"] for h in history], rel=1e-5)


def test_resume_refuses_other_identity_options(idx_dir, tmp_path):
    out = tmp_path / "run"
    train(output=str(out), data=str(idx_dir), **dict(TINY, epochs=2), stop_at_epoch=1)
    with pytest.raises(ValueError, match=r"batch_size=16 \(the run's: 32\)"):
        train(output=str(out), resume=True, batch_size=16, progress="off")


# ----------------------------------------------------------------------------- atomic checkpoints
def test_atomic_save_keeps_previous_file_on_crash(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    state_mod.atomic_torch_save({"epoch": 1, "model": {"w": torch.ones(3)}}, path)
    real_save = torch.save

    def crash_halfway(obj, f, *args, **kwargs):
        import io

        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        state_mod.atomic_torch_save({"epoch": 2, "model": {"w": torch.zeros(3)}}, path)
    monkeypatch.setattr(torch, "save", real_save)
    kept = torch.load(path, weights_only=True)
    assert kept["epoch"] == 1 and torch.equal(kept["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_kill_during_training_leaves_last_epoch_and_resumes(idx_dir, tmp_path, monkeypatch):
    from hilovit.train import engine

    out = tmp_path / "run"
    real = engine._train_one_epoch

    def dies_in_epoch_two(task, run, ctx, epoch, reporter):
        if epoch == 1:
            raise KeyboardInterrupt("killed")
        return real(task, run, ctx, epoch, reporter)

    monkeypatch.setattr(engine, "_train_one_epoch", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(output=str(out), data=str(idx_dir), **TINY)
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["step"] == 4
    monkeypatch.setattr(engine, "_train_one_epoch", real)
    summary = train(output=str(out), resume=True, progress="off")
    assert summary["finished"] and summary["steps"] == 8


# ----------------------------------------------------------------------------- bad input
class _ModelBuilt(BaseException):
    """Raised by the patched model builder (a BaseException, so that no ``except Exception`` swallows it)."""


def _refuse_model_builds(monkeypatch) -> None:
    """Replace the builder of the model to train (the task's ``build_model``, which the engine calls) by one
    that raises :class:`_ModelBuilt`."""
    from hilovit.tasks import TASK_NAMES, get_task

    def refuse(*args, **kwargs):
        raise _ModelBuilt("the model was built")

    for name in TASK_NAMES:
        monkeypatch.setattr(type(get_task(name)), "build_model", refuse)


@pytest.fixture
def fails_fast(monkeypatch):
    """``fails_fast(match, **options)``: ``train(**options)`` must raise the error matching ``match`` before the
    model to train is built. Returns the message."""
    _refuse_model_builds(monkeypatch)

    def run(match, **options):
        try:
            with pytest.raises((ValueError, FileNotFoundError), match=match) as err:
                train(**options)
        except _ModelBuilt:
            pytest.fail(f"the model was built before the error matching {match!r}")
        return str(err.value)

    return run


def test_valid_options_reach_the_refused_builder(idx_dir, tmp_path, monkeypatch):
    """The check above is live: with good options, training gets as far as the patched builder."""
    _refuse_model_builds(monkeypatch)
    with pytest.raises(_ModelBuilt):
        train(**TINY, data=str(idx_dir), output=str(tmp_path / "o"))


def test_unknown_model_lists_choices(idx_dir, tmp_path, fails_fast):
    msg = fails_fast("unknown model", **dict(TINY, model="litv2_nanoo"), data=str(idx_dir), output=str(tmp_path / "o"))
    assert "litv2_nano" in msg and "swin_nano" in msg
    assert not (tmp_path / "o" / "last.pt").exists()


def test_unknown_dataset_lists_choices(tmp_path, fails_fast):
    msg = fails_fast("neither a known dataset", **TINY, data="mnist-fashion", output=str(tmp_path / "o"))
    assert "fashion-mnist" in msg


def test_missing_data_folder(tmp_path, fails_fast):
    missing = tmp_path / "no-such-folder"
    msg = fails_fast("no-such-folder", **TINY, data=str(missing), output=str(tmp_path / "o"))
    assert "folder" in msg


def test_batch_larger_than_dataset(idx_dir, tmp_path, fails_fast):
    fails_fast(r"batch_size=64 is larger than the training set: 50 images",
                **dict(TINY, batch_size=64), train_subset=50, data=str(idx_dir), output=str(tmp_path / "o"))
    assert not (tmp_path / "o" / "last.pt").exists()


def test_unwritable_output_folder(idx_dir, tmp_path, fails_fast):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    fails_fast("output folder .* (not writable|not a directory|is a file, not a folder)", **TINY, data=str(idx_dir),
                output=str(blocker / "run"))
    fails_fast("exists and is not a directory", **TINY, data=str(idx_dir), output=str(blocker))


def test_existing_run_needs_resume_or_overwrite(idx_dir, tmp_path, fails_fast):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"x")
    fails_fast("already holds a training run", **TINY, data=str(idx_dir), output=str(out))
    fails_fast("not a readable training checkpoint", **TINY, data=str(idx_dir), output=str(out), resume=True)
    fails_fast("does not exist", **TINY, data=str(idx_dir), output=str(tmp_path / "empty"), resume=True)


def test_bad_options_name_the_flag():
    with pytest.raises(ValueError, match="^epochs=0: expected a positive integer"):
        ClassificationConfig(epochs=0)
    with pytest.raises(ValueError, match="^amp='fp8'"):
        ClassificationConfig(amp="fp8")
    with pytest.raises(ValueError, match="unknown training option"):
        ClassificationConfig.from_dict({"epochz": 3})


def test_cli_reports_errors_in_one_line(idx_dir, tmp_path, capsys):
    rc = main(["train", "--model", "nope", "--data", str(idx_dir), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("hilovit train: error: unknown model 'nope'") and "litv2_nano" in err
    rc = main(["train", "--data", "cifar-100", "--output", str(tmp_path / "o")])
    assert rc == 2 and "fashion-mnist" in capsys.readouterr().err


def test_checkpoint_of_another_architecture_or_class_count(idx_dir, tmp_path):
    from PIL import Image

    from hilovit.models.checkpoint import save_safetensors
    from hilovit.tasks.classification_eval import run_eval

    out = tmp_path / "run"
    train(output=str(out), data=str(idx_dir), **dict(TINY, epochs=1, batch_size=64))
    ckpt = out / "model.safetensors"
    with pytest.raises(CheckpointError, match="holds a 'litv2_nano' model, not 'swin_nano'"):
        run_eval("swin_nano", ckpt, data=str(idx_dir), eval_subset=8)
    # no metadata: the keys tell
    bare = tmp_path / "bare.safetensors"
    save_safetensors(load_file(str(ckpt)), bare)
    with pytest.raises(CheckpointError, match=r"does not fit swin_nano \(it looks like a LITv2 checkpoint\)"):
        run_eval("swin_nano", bare, data=str(idx_dir), eval_subset=8)
    # an image folder with 3 classes
    folder = tmp_path / "three"
    for c in ("a", "b", "c"):
        (folder / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (28, 28), (40 * i, 90, 200)).save(folder / c / f"{i}.png")
    with pytest.raises(CheckpointError, match=r"classifier for 10 classes, but the data .* has 3 classes"):
        run_eval("litv2_nano", ckpt, data=str(folder), val_split=0.5)


def test_accumulation_and_checkpointing_keep_the_result(idx_dir, tmp_path):
    # swin_nano has no BatchNorm, so micro-batches see the same function as the whole batch
    opts = dict(model="swin_nano", data=str(idx_dir), epochs=1, batch_size=32, train_subset=64, eval_subset=8,
                augment="none", drop_path=0.0, amp="off", optimizer="sgd", base_lr=0.5, warmup_epochs=0.0,
                progress="off", threads=1)
    train(output=str(tmp_path / "plain"), **opts)
    train(output=str(tmp_path / "accum"), accum_steps=4, grad_checkpointing=True, **opts)
    a = load_file(str(tmp_path / "plain" / "model.safetensors"))
    b = load_file(str(tmp_path / "accum" / "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point()) < 1e-5


def test_trains_on_an_image_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    for k, c in enumerate(("cat", "dog", "owl")):
        (folder / c).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40, 36), (80 * k, 20 * i, 120)).save(folder / c / f"{i}.jpg")
    out = tmp_path / "run"
    summary = train(model="litv2_nano", data=str(folder), val_split=0.34, img_size=32, epochs=1, batch_size=4,
                    workers=1, progress="off", threads=1, output=str(out))
    assert summary["eval_images"] == 6 and summary["train_images"] == 12
    assert list(summary["per_class_accuracy"]) == ["cat", "dog", "owl"]
    meta = json.loads(load_file_metadata(out / "model.safetensors")["classes"])
    assert meta == ["cat", "dog", "owl"]


def load_file_metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()
