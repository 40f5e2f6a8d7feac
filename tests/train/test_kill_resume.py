"""A training process killed with SIGKILL at chosen moments, then resumed, ends with the weights of a run never killed.

The moments are read from the process itself: its log (``--log-interval 1`` prints every step) and
its output folder. Three kills, each a different case:

1. at step 2 of epoch 1, before any checkpoint exists: the next start is a new run;
2. the moment ``last.pt`` of epoch 1 appears (before ``metrics.csv`` and ``curves.png`` follow it);
3. at step 2 of epoch 2 of the resumed run, ``last.pt`` still holding epoch 1.

Each kill must have landed before the run finished (exit code -9, no ``summary.json``), leaving the
checkpoint of the epoch expected at that moment, loadable (the write is atomic). A temporary file as a
kill in the middle of a write leaves it is then planted; ``--resume`` must remove it and continue, and
the final weights, EMA weights and per-epoch losses must equal, bit for bit, those of an uninterrupted
run with the same seed.
"""

import csv
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SRC = Path(__file__).resolve().parents[2] / "src"
STEPS = 6  # per epoch: 96 training images in batches of 16, so a kill at step 2 is 4 steps from the checkpoint
FLAGS = ["--model", "litv2_nano", "--epochs", "2", "--batch-size", "16", "--train-subset", str(16 * STEPS),
         "--eval-subset", "16", "--threads", "1", "--amp", "off", "--progress", "log", "--log-interval", "1",
         "--seed", "5", "--mixup", "0.2", "--cutmix", "0.2", "--model-ema", "--model-ema-decay", "0.9",
         "--warmup-epochs", "0.5", "--base-lr", "4e-3"]
TIMEOUT = 120.0  # seconds one process may take to reach its kill point (a few seconds when the machine is idle)


def _start(data: Path, out: Path, resume: bool) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "hilovit", "train", "--data", str(data), "--output", str(out), *FLAGS]
    cmd += ["--resume"] if resume else []
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)


def _kill_when(proc: subprocess.Popen, reached, what: str) -> str:
    """Read ``proc``'s output unbuffered; SIGKILL it as soon as ``reached(output so far)`` is true.

    Fails the test when the process ends first or does not get there within :data:`TIMEOUT` seconds.
    Returns the output up to the kill.
    """
    fd, text = proc.stdout.fileno(), b""
    deadline = time.monotonic() + TIMEOUT
    while not reached(text.decode(errors="replace")):
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"timed out after {TIMEOUT:.0f} s waiting for {what}:\n{text.decode(errors='replace')[-3000:]}")
        if select.select([fd], [], [], 0.005)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                proc.wait()
                pytest.fail(f"the run ended (exit code {proc.returncode}) before {what}:\n"
                            f"{text.decode(errors='replace')[-3000:]}")
            text += chunk
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return text.decode(errors="replace") + f"--- SIGKILL at {what}\n"


def _step(epoch: int, step: int):
    return lambda text: f"epoch {epoch}/2  step {step}/{STEPS} " in text


def _check_killed(proc: subprocess.Popen, out: Path, epoch_on_disk, log: str) -> None:
    """The kill landed before the run finished, and left the checkpoint of ``epoch_on_disk`` (None: none)."""
    assert proc.returncode == -signal.SIGKILL, f"exit code {proc.returncode}, not killed:\n{log[-3000:]}"
    assert not (out / "summary.json").exists() and not (out / "model.safetensors").exists(), log[-3000:]
    if epoch_on_disk is None:
        assert not (out / "last.pt").exists(), log[-3000:]
    else:
        state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)  # whole, whatever the moment
        assert state["epoch"] == epoch_on_disk and state["step"] == epoch_on_disk * STEPS, log[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_at_chosen_steps_then_resume_gives_the_same_bits(idx_dir, tmp_path):
    straight = _start(idx_dir, tmp_path / "straight", resume=False)  # runs beside the killed one
    out = tmp_path / "killed"
    log = []

    proc = _start(idx_dir, out, resume=False)
    log.append(_kill_when(proc, _step(1, 2), "epoch 1, step 2"))
    _check_killed(proc, out, None, "".join(log))

    proc = _start(idx_dir, out, resume=False)  # nothing to resume: a new run
    log.append(_kill_when(proc, lambda _: (out / "last.pt").exists(), "the first last.pt"))
    _check_killed(proc, out, 1, "".join(log))

    proc = _start(idx_dir, out, resume=True)
    log.append(_kill_when(proc, _step(2, 2), "epoch 2, step 2 of the resumed run"))
    _check_killed(proc, out, 1, "".join(log))
    context = "".join(log)[-4000:]
    assert "resuming at epoch 2 of 2" in context, context
    (out / f".last.pt.tmp-{proc.pid}").write_bytes(b"partial")  # what a kill during the write leaves behind

    final = _start(idx_dir, out, resume=True)
    final_out = final.communicate(timeout=TIMEOUT)[0].decode(errors="replace")
    assert final.returncode == 0, context + final_out[-3000:]
    straight_out = straight.communicate(timeout=TIMEOUT)[0].decode(errors="replace")
    assert straight.returncode == 0, straight_out[-3000:]

    for name in ("model.safetensors", "model_ema.safetensors"):
        a, b = load_file(str(tmp_path / "straight" / name)), load_file(str(out / name))
        assert a.keys() == b.keys()
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differ, f"{name}: {len(differ)} tensors differ, e.g. {differ[:3]}; {context}"
    rows = [list(csv.DictReader((d / "metrics.csv").open())) for d in (tmp_path / "straight", out)]
    assert [r["train_loss"] for r in rows[0]] == [r["train_loss"] for r in rows[1]], context
    assert [r["epoch"] for r in rows[1]] == ["1", "2"]
    left = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert not left, f"temporary files left behind: {left}; {context}"
