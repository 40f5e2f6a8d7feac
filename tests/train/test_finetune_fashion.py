"""Fine-tuning pays: a model trained one epoch on Fashion-MNIST, fine-tuned on a 3-class image folder
(Fashion-MNIST test images, which the first run never saw), starts from the saved weights exactly and
beats the identical run from scratch."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from hilovit.train import TrainConfig, train
from hilovit.train.finetune import build_model, resolve_weights

CLASSES = (0, 2, 8)  # T-shirt/top, pullover, bag
COMMON = dict(model="litv2_nano", amp="off", threads=1, workers=0, progress="off", seed=0, drop_path=0.0,
              augment="none")
FINETUNE = dict(COMMON, in_chans=1, epochs=2, batch_size=32, base_lr=4e-3, warmup_epochs=0.5, eval_batch_size=150)


def _image_folder(fashion_dir, root, n_train=60, n_val=100):
    """``root/{train,val}/class<k>/<index>.png`` from the Fashion-MNIST test file."""
    from hilovit.data import read_idx

    images = read_idx(next(fashion_dir.glob("t10k-images-idx3-ubyte*")))
    labels = read_idx(next(fashion_dir.glob("t10k-labels-idx1-ubyte*")))
    for c in CLASSES:
        index = np.nonzero(labels == c)[0]
        for split, chosen in (("train", index[:n_train]), ("val", index[n_train:n_train + n_val])):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in chosen:
                Image.fromarray(images[i]).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def pretrained_run(fashion_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "run"
    summary = train(data="fashion-mnist", data_dir=str(fashion_dir), train_subset=3000, eval_subset=200, epochs=1,
                    batch_size=64, base_lr=8e-3, warmup_epochs=0.2, output=str(out), **COMMON)
    return out / "model.safetensors", summary


def test_finetuned_run_starts_from_the_file_and_beats_scratch(fashion_dir, pretrained_run, tmp_path):
    weights, pre = pretrained_run
    data = _image_folder(fashion_dir, tmp_path / "folder")
    # step 0: the model the engine builds holds the file's tensors, the head (3 classes, not 10) excepted
    cfg = TrainConfig(data=str(data), pretrained=str(weights), output=str(tmp_path / "x"), **FINETUNE)
    notes = []
    model, _ = build_model(cfg, num_classes=3, in_chans=1, weights=resolve_weights(cfg), log=notes.append)
    assert len(notes) == 1 and "head.weight" in notes[0]  # the one adaptation: a new classifier
    saved, own = load_file(str(weights)), model.state_dict()
    backbone = [k for k in own if not k.startswith("head.")]
    assert len(backbone) > 100 and all(torch.equal(own[k], saved[k]) for k in backbone)
    assert own["head.weight"].shape == (3, saved["head.weight"].shape[1])

    tuned = train(data=str(data), pretrained=str(weights), output=str(tmp_path / "tuned"), **FINETUNE)
    scratch = train(data=str(data), output=str(tmp_path / "scratch"), **FINETUNE)
    print(f"pretrained on Fashion-MNIST: {pre['test_top1']:.2f}%; 3-class folder ({tuned['eval_images']} val "
          f"images): fine-tuned {tuned['test_top1']:.2f}%, from scratch {scratch['test_top1']:.2f}%")
    assert tuned["eval_images"] == scratch["eval_images"] == 300
    assert tuned["test_top1"] > scratch["test_top1"] + 5.0, (tuned["test_top1"], scratch["test_top1"])
    assert tuned["pretrained"]["file"] == str(weights)
