"""--resume keeps the run's options: only an allow-list may change, each change is printed, the rest is refused."""

import math
import shutil

import pytest
import torch

from hilovit.cli import main
from hilovit.train import train
from hilovit.train.config import OptionError
from hilovit.train.resume import RESUMABLE

TINY = dict(model="litv2_nano", epochs=1, batch_size=32, eval_subset=16, progress="off", threads=1, base_lr=4e-3,
            warmup_epochs=0.5, amp="off")  # 128 synthetic images: 4 steps per epoch, 2 of warm-up


@pytest.fixture(scope="module")
def finished_run(idx_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    train(output=str(out), data=str(idx_dir), **TINY)
    return out


def _snapshot(out):
    return {name: (out / name).read_bytes() for name in ("config.yaml", "last.pt", "summary.json")}


@pytest.mark.parametrize("option, value, saved", [
    ("lr", 0.01, "unset"), ("mixup", 0.5, "0.0"), ("weight_decay", 0.1, "0.05"), ("warmup_epochs", 0.25, "0.5"),
    ("model_ema", True, "False"), ("amp", "bf16", "'off'"), ("optimizer", "sgd", "'adamw'"),
    ("batch_size", 16, "32"), ("label_smoothing", 0.2, "0.1"),
])
def test_other_options_are_refused_naming_both_values(finished_run, option, value, saved):
    before = _snapshot(finished_run)
    with pytest.raises(OptionError) as err:
        train(output=str(finished_run), resume=True, **{option: value})
    msg = str(err.value)
    assert f"{option}={value!r} (the run's: {saved})" in msg, msg
    assert "\n" not in msg
    for allowed in RESUMABLE:
        assert allowed in msg
    assert _snapshot(finished_run) == before  # config.yaml not rewritten, nothing trained


def test_cli_refuses_sgd_in_one_line_instead_of_a_key_error(finished_run, capsys):
    rc = main(["train", "--output", str(finished_run), "--resume", "--optimizer", "sgd", "--lr", "0.1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err and "KeyError" not in err
    assert "--optimizer='sgd' (the run's: 'adamw')" in err and "--lr=0.1 (the run's: unset)" in err
    assert "--epochs, --stop-at-epoch," in err  # the allow-list, in flags


def test_same_values_are_not_a_change(finished_run, capsys):
    before = _snapshot(finished_run)
    summary = train(output=str(finished_run), resume=True, mixup=0.0, optimizer="adamw", batch_size=32,
                    progress="log")
    out = capsys.readouterr().out
    assert "nothing to do" in out and "already trained 1 epoch" in out and "1 epochs" not in out
    assert "changed on resume" not in out
    assert summary["epochs"] == 1 and _snapshot(finished_run) == before


def _rate(step, epochs, steps_per_epoch=4, batch=32):
    """The warm-up + cosine plan written out by hand (rates for a batch of 512 scaled to ``batch``)."""
    ratio = batch / 512
    base, low, warm = 4e-3 * ratio, 5e-6 * ratio, 5e-7 * ratio
    total, warmup = epochs * steps_per_epoch, 2
    if step < warmup:
        return warm + (base - warm) * step / warmup
    t = min(1.0, (step - warmup) / (total - warmup))
    return low + 0.5 * (base - low) * (1 + math.cos(math.pi * t))


def test_more_epochs_replan_the_schedule_and_say_so(finished_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    capsys.readouterr()
    summary = train(output=str(out), resume=True, epochs=2, progress="log", log_interval=1, workers=0)
    printed = capsys.readouterr().out
    assert ("changed on resume: epochs 1 -> 2, progress 'off' -> 'log', log_interval 50 -> 1, workers 2 -> 0"
            in printed), printed
    # the old plan had ended at the minimum rate; the new one continues from step 4 of 8
    assert f"at step 4 the rate is {_rate(4, 2):.3g} (the 1-epoch plan had {_rate(4, 1):.3g})" in printed, printed
    assert "re-planned over 2 epochs (8 steps)" in printed
    logged = [float(line.split("lr ")[1].split()[0]) for line in printed.splitlines()
              if line.startswith("epoch 2/2  step")]
    assert logged == pytest.approx([_rate(s, 2) for s in range(5, 9)], rel=1e-3)
    assert logged[0] > 100 * _rate(4, 1)  # not at the minimum rate
    assert summary["finished"] and summary["epochs"] == 2
    assert "epochs: 2" in (out / "config.yaml").read_text()
    assert torch.load(out / "last.pt", weights_only=True)["config"]["epochs"] == 2
    # fewer epochs than trained: refused
    with pytest.raises(OptionError, match=r"epochs=1: the run in .* has already trained 2 epochs"):
        train(output=str(out), resume=True, epochs=1)
