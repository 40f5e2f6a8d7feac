"""Every command's bad input ends with a non-zero status and ONE line on stderr, never a traceback.

Most cases run ``hilovit.cli.main`` in this process (argparse exits through SystemExit); a few
run ``python -m hilovit`` as a user would, to see the whole process's output.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from hilovit.cli import main

SRC = Path(__file__).resolve().parents[1] / "src"


def _run(argv, capsys):
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    return rc, capsys.readouterr().err


def _one_line(rc, err, *expected):
    assert rc not in (0, None), err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("hilovit "), err
    for text in expected:
        assert text in err, (text, err)


@pytest.fixture(scope="module")
def idx_data(tmp_path_factory):
    from hilovit.data import write_idx

    folder = tmp_path_factory.mktemp("cli-idx")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 128), ("t10k", 16)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)).astype(np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    return folder


# ----------------------------------------------------------------------------- argument checks
CASES = [
    # eval validates its numbers as train does (was: a traceback from inside the model for 0 images)
    (["eval", "--model", "litv2_nano", "--checkpoint", "x", "--eval-subset", "0"],
     ["hilovit eval: error: argument --eval-subset: expected a positive integer, got '0'"]),
    (["eval", "--model", "litv2_nano", "--checkpoint", "x", "--batch-size", "-3"], ["--batch-size", "'-3'"]),
    (["eval", "--model", "litv2_nano", "--checkpoint", "x", "--amp", "fp8"], ["--amp", "'fp8'"]),
    # devices: one line naming the device (was: a torch RuntimeError traceback)
    (["predict", "a.png", "--model", "litv2_nano", "--checkpoint", "x", "--device", "gpu"],
     ["argument --device: 'gpu' is not a device name; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"]),
    (["predict", "a.png", "--model", "litv2_nano", "--checkpoint", "x", "--device", "cuda:99"],
     ["argument --device: 'cuda:99' is not available"]),
    (["eval", "--model", "litv2_nano", "--checkpoint", "x", "--device", "tpu"], ["'tpu' is not a device name"]),
    (["train", "--device", "gpu"], ["hilovit train: error: argument --device: 'gpu'"]),
    (["bench", "models", "--device", "gpu"], ["hilovit bench models: error: argument --device: 'gpu'"]),
    # export: the supported opsets (was: 900 lines of TorchScript graph)
    (["export", "--model", "litv2_nano", "--output", "x.onnx", "--opset", "5"],
     ["argument --opset: opset 5 is not supported: choose one from 14", " to 2"]),
    (["export", "--model", "litv2_nano", "--output", "x.onnx", "--opset", "99"], ["opset 99 is not supported"]),
    (["bench"], ["hilovit bench: error: the following arguments are required: BENCH"]),
    (["bench", "attention", "--repeats", "0"], ["argument --repeats: expected a positive integer, got '0'"]),
    (["train", "--workers", "many"], ["argument --workers: invalid int value: 'many'"]),
    # sizes no model can be run at: refused by the tokens they make, before allocating (was: out-of-memory advice)
    (["viz", "hilo", "a.png", "--model", "litv2_nano", "--output", "v.png", "--img-size", "100000"],
     ["--img-size=100000x100000: a 100000x100000 input makes 625,000,000 tokens"]),
]


@pytest.mark.parametrize("argv, expected", CASES, ids=[" ".join(c[0][:3]) + " " + c[0][-1] for c in CASES])
def test_bad_arguments_one_line(argv, expected, capsys):
    rc, err = _run(argv, capsys)
    _one_line(rc, err, *expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_on_a_cpu_build(capsys):
    rc, err = _run(["predict", "a.png", "--model", "litv2_nano", "--checkpoint", "x", "--device", "cuda"], capsys)
    _one_line(rc, err, "argument --device: 'cuda' is not available: ", "use 'cpu' or 'auto'")


# ----------------------------------------------------------------------------- errors from the library
def test_library_errors_in_the_commands_words(idx_data, tmp_path, capsys):
    from hilovit import create_model
    from hilovit.models.checkpoint import save_safetensors

    out = tmp_path / "run"
    ckpt = tmp_path / "model.safetensors"
    save_safetensors(create_model("litv2_nano", in_chans=1, num_classes=10).state_dict(), ckpt)
    # the name of the library function that refused is not shown; options are shown as flags
    rc, err = _run(["eval", "--model", "litv2_nano", "--checkpoint", ckpt, "--data", idx_data, "--val-split", "1.5"],
                   capsys)
    _one_line(rc, err, "hilovit eval: error: --val-split=1.5")
    assert "build_datasets" not in err
    rc, err = _run(["train", "--data", idx_data, "--output", out, "--val-split", "1.5"], capsys)
    _one_line(rc, err, "hilovit train: error: --val-split=1.5: expected a fraction in [0, 1)")
    rc, err = _run(["train", "--data", idx_data, "--output", out, "--epochs", "0"], capsys)
    _one_line(rc, err, "hilovit train: error: --epochs=0: expected a positive integer")
    rc, err = _run(["train", "--data", idx_data, "--output", out, "--batch-size", "200"], capsys)
    _one_line(rc, err, "--batch-size=200 is larger than the training set: 128 images")
    rc, err = _run(["train", "--data", idx_data, "--output", out, "--resume"], capsys)
    _one_line(rc, err, "cannot resume: ", "does not exist")
    rc, err = _run(["train", "--model", "nope", "--data", idx_data, "--output", out], capsys)
    _one_line(rc, err, "unknown model 'nope'", "litv2_nano")
    rc, err = _run(["train", "--data", "cifar-100", "--output", out], capsys)
    _one_line(rc, err, "fashion-mnist")
    rc, err = _run(["bench", "models", "--models", "vit_huge", "--output", ""], capsys)
    _one_line(rc, err, "hilovit bench models: error: --models: 'vit_huge' matches no registered model")
    rc, err = _run(["bench", "attention", "--dtype", "float8", "--output", ""], capsys)
    _one_line(rc, err, "unknown dtype 'float8'")
    rc, err = _run(["viz", "hilo", tmp_path / "missing.png", "--model", "litv2_nano", "--output", tmp_path / "v.png"],
                   capsys)
    _one_line(rc, err, "missing.png")
    rc, err = _run(["export", "--model", "nope", "--output", tmp_path / "x.onnx"], capsys)
    _one_line(rc, err, "unknown model 'nope'")
    rc, err = _run(["predict", tmp_path / "a.png", "--model", "litv2_nano", "--checkpoint", tmp_path / "none.pt"],
                   capsys)
    _one_line(rc, err, "none.pt")
    assert not out.exists() or not (out / "last.pt").exists()


def test_out_of_memory_in_eval_names_the_batch(monkeypatch, capsys):
    import hilovit.tasks.classification_eval

    def allocation_fails(**kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 4503599627370496 bytes. Error code 12 (Cannot allocate "
                           "memory)")

    monkeypatch.setattr(hilovit.tasks.classification_eval, "run_eval", allocation_fails)
    rc, err = _run(["eval", "--model", "litv2_nano", "--checkpoint", "x", "--batch-size", "4096"], capsys)
    _one_line(rc, err, "hilovit eval: error: out of memory with --batch-size 4096; use a smaller one")


def test_out_of_memory_in_training_names_the_batch_and_accum_steps(idx_data, tmp_path, monkeypatch, capsys):
    import hilovit.data

    def allocation_fails(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(hilovit.data, "soft_target_cross_entropy", allocation_fails)
    rc, err = _run(["train", "--data", idx_data, "--output", tmp_path / "run", "--batch-size", "64", "--epochs", "1",
                    "--threads", "1", "--progress", "off", "--amp", "off"], capsys)
    _one_line(rc, err, "out of memory while training with --batch-size=64 (cpu: micro-batches of 64 images",
              "--accum-steps=4 (same optimisation, 16 images at a time), or use a smaller --batch-size")


# ----------------------------------------------------------------------------- as a user runs them
OOM_SCRIPT = textwrap.dedent("""
    import resource, sys
    import torch, hilovit.cli
    vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + 256 * 2**20, resource.RLIM_INFINITY))  # 256 MiB more
    sys.exit(hilovit.cli.main(sys.argv[1:]))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
def test_as_subprocesses(idx_data, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(SRC), OMP_NUM_THREADS="1")
    hilovit = [sys.executable, "-m", "hilovit"]
    runs = {
        "eval": hilovit + ["eval", "--model", "litv2_nano", "--checkpoint", str(tmp_path), "--eval-subset", "0"],
        # a real allocation failure: a batch of 128 images of 112x112 needs far more than 256 MiB
        "oom": [sys.executable, "-c", OOM_SCRIPT, "train", "--data", str(idx_data), "--output", str(tmp_path / "o"),
                "--batch-size", "128", "--img-size", "112", "--epochs", "1", "--threads", "1", "--progress", "off",
                "--device", "cpu", "--amp", "off"],
    }
    procs = {k: subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, cmd in runs.items()}
    results = {k: (p.communicate(timeout=240), p.returncode) for k, p in procs.items()}
    for name, ((_, err), rc) in results.items():
        assert rc != 0 and "Traceback" not in err and err.count("\n") == 1, (name, rc, err[-3000:])
    assert "--eval-subset: expected a positive integer" in results["eval"][0][1]
    oom = results["oom"][0][1]
    assert oom.startswith("hilovit train: error: out of memory while training with --batch-size=128"), oom
    assert "--accum-steps=4" in oom


# ----------------------------------------------------------------------------- the pieces of the one-line errors
def test_an_error_from_a_dataloader_worker_is_its_last_line():
    import argparse

    from hilovit.cli_support import user_message

    text = ("Caught ValueError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
            '  File "worker.py", line 374, in _worker_loop\n    data = fetcher.fetch(index)\n'
            "ValueError: mask 'm/s3.png' is 48x40 (WxH) but its image 'i/s3.png' is 48x48; a mask must have its "
            "image's size\n")
    got = user_message(ValueError(text), argparse.ArgumentParser())
    assert got == "mask 'm/s3.png' is 48x40 (WxH) but its image 'i/s3.png' is 48x48; a mask must have its image's size"
    assert user_message(ValueError("a message, kept"), argparse.ArgumentParser()) == "a message, kept"


def test_image_sizes_are_bounded_by_tokens():
    from hilovit.options import MAX_INPUT_TOKENS, OptionError, check_image_size, input_tokens

    assert input_tokens(4096, 4096) == MAX_INPUT_TOKENS == 1024 * 1024
    assert input_tokens(33, 35) == 9 * 9  # padded to whole 4x4 patches
    assert check_image_size(4096, "img_size") == 4096 and check_image_size((4097, 4092), "sizes") == (4097, 4092)
    with pytest.raises(OptionError, match=r"img_size=100000: a 100000x100000 input makes 625,000,000 tokens .*"
                                          r"the largest accepted is 1,048,576"):
        check_image_size(100000, "img_size")
    with pytest.raises(OptionError, match="4100x4100"):
        check_image_size([4100, 4100], "crop_size")
    for bad in (0, -3, True, "224", (1, 2, 3)):
        with pytest.raises(OptionError, match="expected a positive integer or a"):
            check_image_size(bad, "img_size")


def test_output_folders_are_checked_without_being_made(tmp_path):
    from hilovit.train.state import check_creatable_dir, check_writable_dir

    target = tmp_path / "a" / "b"
    assert check_creatable_dir(target) == target and not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("x")
    for check in (check_creatable_dir, check_writable_dir):
        with pytest.raises(ValueError, match=r"'.*f/run' cannot be created: '.*/f' is a file, not a folder"):
            check(tmp_path / "f" / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
