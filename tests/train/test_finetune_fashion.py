"""Fine-tuning pays: a model trained one epoch on Fashion-MNIST, fine-tuned on a 3-class image folder
(Fashion-MNIST test images, which the first run never saw), starts from the saved weights exactly and
beats the identical run from scratch. The procedure is ``benchmarks/finetune_vs_scratch.py``'s, whose
committed result (``benchmarks/finetune.json``) the README quotes."""

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from hilovit.tasks.classification import TASK, ClassificationConfig
from hilovit.train.finetune import resolve_weights

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("finetune_vs_scratch", ROOT / "benchmarks" / "finetune_vs_scratch.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.fixture(scope="module")
def pretrained_run(fashion_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "run"
    summary = bench.pretrain(fashion_dir, out)
    return out / "model.safetensors", summary


def test_finetuned_run_starts_from_the_file_and_beats_scratch(fashion_dir, pretrained_run, tmp_path):
    weights, pre = pretrained_run
    data = bench.image_folder(fashion_dir, tmp_path / "folder")
    # step 0: the model the engine builds holds the file's tensors, the head (3 classes, not 10) excepted
    cfg = ClassificationConfig(data=str(data), pretrained=str(weights), output=str(tmp_path / "x"), **bench.FINETUNE)
    notes = []
    model = TASK.build_model(cfg, SimpleNamespace(num_classes=3, in_chans=1), resolve_weights(cfg), notes.append)
    assert len(notes) == 1 and "head.weight" in notes[0]  # the one adaptation: a new classifier
    saved, own = load_file(str(weights)), model.state_dict()
    backbone = [k for k in own if not k.startswith("head.")]
    assert len(backbone) > 100 and all(torch.equal(own[k], saved[k]) for k in backbone)
    assert own["head.weight"].shape == (3, saved["head.weight"].shape[1])

    tuned, scratch = bench.finetune_and_scratch(weights, data, tmp_path)
    print(f"pretrained on Fashion-MNIST: {pre['test_top1']:.2f}%; 3-class folder ({tuned['eval_images']} val "
          f"images): fine-tuned {tuned['test_top1']:.2f}%, from scratch {scratch['test_top1']:.2f}%")
    assert tuned["eval_images"] == scratch["eval_images"] == 300
    assert tuned["test_top1"] > scratch["test_top1"] + 5.0, (tuned["test_top1"], scratch["test_top1"])
    assert tuned["pretrained"]["file"] == str(weights)


def test_committed_result_was_made_with_these_settings():
    committed = json.loads((ROOT / "benchmarks" / "finetune.json").read_text())
    assert committed["pretrain"] == json.loads(json.dumps(bench.PRETRAIN))
    assert committed["finetune"] == json.loads(json.dumps(bench.FINETUNE))
    assert committed["finetuned_top1"] > committed["scratch_top1"]
