"""Fine-tuning from saved weights against the same run from scratch, on real images.

1. ``litv2_nano`` is trained 1 epoch on 3,000 Fashion-MNIST training images.
2. A 3-class image folder (T-shirt/top, pullover, bag: 60 training and 100 validation PNGs per
   class, all from the Fashion-MNIST *test* file, which step 1 never saw) is trained 2 epochs
   twice with identical options: once from step 1's weights (``pretrained=``), once from random
   weights. Deterministic: seed 0, one thread, no augmentation.

    python benchmarks/finetune_vs_scratch.py --output benchmarks/finetune.json

``tests/train/test_finetune_fashion.py`` runs the same functions and checks that the fine-tuned
run starts from the file's weights and beats the run from scratch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

CLASSES = (0, 2, 8)  # T-shirt/top, pullover, bag
COMMON = dict(model="litv2_nano", amp="off", threads=1, workers=0, progress="off", seed=0, drop_path=0.0,
              augment="none")
PRETRAIN = dict(COMMON, data="fashion-mnist", train_subset=3000, eval_subset=200, epochs=1, batch_size=64,
                base_lr=8e-3, warmup_epochs=0.2)
FINETUNE = dict(COMMON, in_chans=1, epochs=2, batch_size=32, base_lr=4e-3, warmup_epochs=0.5, eval_batch_size=150)


def image_folder(fashion_dir: Path, root: Path, n_train: int = 60, n_val: int = 100) -> Path:
    """``root/{train,val}/class<k>/<index>.png`` from the Fashion-MNIST test file."""
    from PIL import Image

    from hilovit.data import read_idx

    images = read_idx(next(Path(fashion_dir).glob("t10k-images-idx3-ubyte*")))
    labels = read_idx(next(Path(fashion_dir).glob("t10k-labels-idx1-ubyte*")))
    for c in CLASSES:
        index = np.nonzero(labels == c)[0]
        for split, chosen in (("train", index[:n_train]), ("val", index[n_train:n_train + n_val])):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in chosen:
                Image.fromarray(images[i]).save(folder / f"{i}.png")
    return root


def pretrain(fashion_dir: Path, out: Path) -> dict:
    from hilovit.train import train

    return train(data_dir=str(fashion_dir), output=str(out), **PRETRAIN)


def finetune_and_scratch(weights: Path, data: Path, out: Path) -> tuple:
    from hilovit.train import train

    tuned = train(data=str(data), pretrained=str(weights), output=str(out / "tuned"), **FINETUNE)
    scratch = train(data=str(data), output=str(out / "scratch"), **FINETUNE)
    return tuned, scratch


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get("HILOVIT_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
    p.add_argument("--output", help="a JSON file for the results (default: print only)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pre = pretrain(Path(args.data_dir), tmp / "pretrain")
        data = image_folder(Path(args.data_dir), tmp / "folder")
        tuned, scratch = finetune_and_scratch(tmp / "pretrain" / "model.safetensors", data, tmp)
    result = {
        "command": "python benchmarks/finetune_vs_scratch.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "pretrain_top1": pre["test_top1"], "pretrain_eval_images": pre["eval_images"],
        "finetuned_top1": tuned["test_top1"], "scratch_top1": scratch["test_top1"],
        "eval_images": tuned["eval_images"], "train_images": tuned["train_images"],
        "pretrain": PRETRAIN, "finetune": FINETUNE,
    }
    text = json.dumps(result, indent=2) + "\n"
    print(text)
    if args.output:
        path = Path(args.output)
        tmpfile = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmpfile.write_text(text)
        os.replace(tmpfile, path)


if __name__ == "__main__":
    main()
