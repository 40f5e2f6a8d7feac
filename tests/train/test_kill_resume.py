"""A training process killed with SIGKILL at random moments, then resumed, ends with the weights of a run never killed.

The kills land anywhere: in a training step, in the evaluation, in the checkpoint write. Each
time, ``last.pt`` must still load (the write is atomic), ``--resume`` must continue from it, and
the final weights, EMA weights and per-epoch losses must equal, bit for bit, those of an
uninterrupted run; no temporary file may be left in the output folder.

The moments are drawn from a random seed printed on failure; set ``HILOVIT_KILL_SEED`` to replay one.
"""

import csv
import os
import random
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
FLAGS = ["--model", "litv2_nano", "--epochs", "2", "--batch-size", "16", "--train-subset", "48", "--eval-subset", "16",
         "--threads", "1", "--amp", "off", "--progress", "log", "--log-interval", "1", "--seed", "5", "--mixup", "0.2",
         "--cutmix", "0.2", "--model-ema", "--model-ema-decay", "0.9", "--warmup-epochs", "0.5", "--base-lr", "4e-3"]
MAX_KILLS = 2


def _start(data: Path, out: Path, resume: bool) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "hilovit", "train", "--data", str(data), "--output", str(out), *FLAGS]
    cmd += ["--resume"] if resume else []
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_steps(proc: subprocess.Popen, steps: int, deadline: float) -> str:
    """Read the process's output until it has logged ``steps`` training steps or ended; returns what it printed."""
    seen, text = 0, []
    while seen < steps and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:  # the process ended
            break
        text.append(line)
        seen += "  step " in line
    return "".join(text)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_at_random_moments_then_resume_gives_the_same_bits(idx_dir, tmp_path):
    seed = int(os.environ.get("HILOVIT_KILL_SEED", int.from_bytes(os.urandom(4), "little")))
    rng = random.Random(seed)
    straight = _start(idx_dir, tmp_path / "straight", resume=False)  # runs beside the killed one

    out = tmp_path / "killed"
    deadline = time.monotonic() + 200
    log, kills, dead_pid = [], 0, None
    while kills < MAX_KILLS and time.monotonic() < deadline:
        proc = _start(idx_dir, out, resume=(out / "last.pt").exists())
        steps = rng.randint(1, 4)  # of the 6 steps (2 epochs of 3)
        delay = rng.uniform(0.0, 0.5)
        log.append(_wait_for_steps(proc, steps, deadline))
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
            dead_pid = proc.pid
            log.append(f"--- killed after {steps} steps + {delay:.2f} s\n")
        proc.communicate(timeout=60)
        if (out / "last.pt").exists():  # whatever the moment, the checkpoint on disk is whole
            state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
            assert 1 <= state["epoch"] <= 2, f"seed {seed}"
        if (out / "summary.json").exists():
            break
    context = f"seed {seed}:\n" + "".join(log)[-4000:]
    if dead_pid is not None:  # what a kill during a write leaves behind, whether or not this run's kills did
        (out / f".last.pt.tmp-{dead_pid}").write_bytes(b"partial")

    final = _start(idx_dir, out, resume=(out / "last.pt").exists())
    final_out, _ = final.communicate(timeout=240)
    assert final.returncode == 0, context + final_out[-3000:]
    straight_out, _ = straight.communicate(timeout=240)
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
