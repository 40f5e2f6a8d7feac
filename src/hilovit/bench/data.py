"""`hilovit bench data`: does the data path keep up with the model?

For folders of photo-sized JPEGs (made on the fly, 500 x 375 like an ImageNet photo and
2048 x 1536 like a camera's; or a folder of your own), the images per second of what the
DataLoader workers do (decode, crop, resize, batch), with the training crop (random-resized,
drawn before decoding) and the evaluation crop (resize and centre crop), with and without
reduced-scale JPEG decoding (Pillow's draft mode, :func:`hilovit.data.folders.reduce_jpeg_decode`),
in the main process (what one worker does) and with 2 workers; then the device-side batch
augmentation the training step runs on each batch, and a model's training step (forward,
cross-entropy, backward, AdamW) at the same batch, all in one process.

The question it answers: at the model's training speed, what share of one core does the loader
need (``model images/s / one worker's images/s``)? Below 1 the loader cannot be the bottleneck
with one worker per that share of a core.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from hilovit.bench.common import command_line, interleaved_timings, machine_info, set_threads, write_table

__all__ = ["DEFAULT_SIZES", "COLUMNS", "make_jpeg_folder", "run_data_benchmark"]

DEFAULT_SIZES: Tuple[Tuple[int, int], ...] = ((500, 375), (2048, 1536))  # width x height
COLUMNS = ["images", "crop", "reduced_decode", "workers", "images_per_s", "ms_per_image_per_worker",
           "speedup_from_reduced_decode", "core_share_at_model_speed"]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_jpeg_folder(root: Path, size: Tuple[int, int], count: int, quality: int = 90, seed: int = 0) -> Path:
    """Write ``count`` JPEGs of ``size`` (width, height) into two class folders under ``root``:
    smooth gradients and waves with sensor-like noise, so they compress and decode like photos
    rather than like pure noise (which decodes slower) or flat colour (faster)."""
    from PIL import Image

    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for k in range(count):
        folder = root / f"class{k % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        fx, fy, phase = rng.uniform(15, 60), rng.uniform(15, 60), rng.uniform(0, 6.3)
        img = np.stack([x / width * 255, y / height * 255,
                        128 + 100 * np.sin(x / fx + phase) * np.cos(y / fy)], -1)
        img += rng.normal(0, 8, img.shape).astype(np.float32)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{k:04d}.jpg", quality=quality)
    return root


class _Cycle(Dataset):
    """``n`` samples drawn in turn from ``dataset`` (so a small folder gives as many as a timing needs)."""

    def __init__(self, dataset: Dataset, n: int) -> None:
        self.dataset, self.n = dataset, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        return self.dataset[index % len(self.dataset)]


def _collate_pairs(samples):
    from hilovit.train.loaders import _collate

    return _collate([(img, label, ()) for img, label in samples])


def _loader_rate(dataset: Dataset, batch: int, batches: int, workers: int) -> float:
    """Images/s of a DataLoader over ``batches`` batches: one pass to start the workers and warm
    the caches, the second one timed."""
    cycle = _Cycle(dataset, batch * batches)
    loader = DataLoader(cycle, batch_size=batch, shuffle=False, num_workers=workers,
                        collate_fn=_collate_pairs,
                        persistent_workers=workers > 0)
    for _ in loader:  # warm-up pass
        pass
    t0 = time.perf_counter()
    n = 0
    for images, _, _ in loader:
        n += images.shape[0]
    seconds = time.perf_counter() - t0
    del loader
    return n / seconds


def _median_time(fn, repeats: int, warmup: int) -> float:
    return float(np.median(interleaved_timings({"fn": fn}, repeats=repeats, warmup=warmup)["fn"]))


def run_data_benchmark(
    sizes: Sequence[Tuple[int, int]] = DEFAULT_SIZES,
    folder: Optional[str] = None,
    files_per_size: int = 16,
    img_size: int = 224,
    batch: int = 16,
    batches: int = 6,
    workers: Sequence[int] = (0, 2),
    model: Optional[str] = "litv2_s",
    model_repeats: int = 3,
    threads: Optional[int] = None,
    output: Optional[str] = "runs/bench/data",
    quiet: bool = False,
) -> Dict[str, Any]:
    """Time the data path beside a model's training step; return ``{'rows', 'pipeline', 'model',
    'notes', 'files'}``.

    Args:
        sizes: (width, height) of the generated JPEG folders (ignored when ``folder`` is given).
        folder: a folder of class subfolders of your own images instead.
        files_per_size: JPEGs written per size (cycled through for the timings).
        img_size, batch: the model's input side and the batch of the loader, the augmentation and
            the training step.
        batches: batches per timed pass (after one warm-up pass).
        workers: DataLoader worker counts to time (0 = the main process: one worker's rate).
        model: the registered model whose training step is timed (None: skip it).
        model_repeats: timed training steps (median; after one warm-up step).
        threads: ``torch.set_num_threads`` for the main process.
        output: prefix of the ``.csv``/``.md`` files (None: write nothing).
    """
    from hilovit.data import AugmentConfig
    from hilovit.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from hilovit.data.folders import ImageFolderDataset
    from hilovit.train.loaders import BatchPipeline

    if img_size < 1 or batch < 1 or batches < 1 or files_per_size < 1:
        raise ValueError(f"img_size, batch, batches and files_per_size must be positive, got {img_size}, {batch}, "
                         f"{batches}, {files_per_size}")
    if any(w < 0 for w in workers) or not workers:
        raise ValueError(f"workers: give counts >= 0, got {list(workers)}")
    if folder is None and any(len(s) != 2 or min(s) < 1 for s in sizes):
        raise ValueError(f"sizes: give (width, height) pairs of positive ints, got {list(sizes)}")
    set_threads(threads)
    log = (lambda msg: None) if quiet else _log
    tmp = None if folder is not None else Path(tempfile.mkdtemp(prefix="hilovit-bench-data-"))
    rows: List[Dict[str, Any]] = []
    try:
        if folder is not None:
            sources = [(Path(folder).name or str(folder), Path(folder))]
        else:
            sources = []
            for w, h in sizes:
                log(f"writing {files_per_size} JPEGs of {w}x{h} ...")
                sources.append((f"{w}x{h} JPEG", make_jpeg_folder(tmp / f"{w}x{h}", (w, h), files_per_size)))
        for label, root in sources:
            for crop in ("train", "eval"):
                for reduced in (False, True):
                    ds = ImageFolderDataset(root, img_size, crop_pct=0.9 if crop == "eval" else 1.0,
                                            draft=("all" if reduced else "off"))
                    if crop == "train":
                        ds.set_train_crop()
                    for n in workers:
                        log(f"timing {label}, {crop} crop, reduced decode {'on' if reduced else 'off'}, "
                            f"{n} worker{'s' if n != 1 else ''} ...")
                        rate = _loader_rate(ds, batch, batches, n)
                        rows.append({"images": label, "crop": crop, "reduced_decode": "on" if reduced else "off",
                                     "workers": n, "images_per_s": rate,
                                     "ms_per_image_per_worker": 1e3 * max(n, 1) / rate})
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    for r in rows:
        off = next(o for o in rows if o["images"] == r["images"] and o["crop"] == r["crop"]
                   and o["workers"] == r["workers"] and o["reduced_decode"] == "off")
        r["speedup_from_reduced_decode"] = r["images_per_s"] / off["images_per_s"]

    # the device-side part of the data path: uint8 batch -> augmented, normalised float batch
    augment = AugmentConfig(scale=(0.08, 1.0), rand_augment=True, random_erasing=0.25)  # the ImageNet recipe
    pipeline = BatchPipeline(3, img_size, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, augment).train()
    pipeline.augment.crop_in_loader = True  # as crop_in_workers sets it for image folders
    uint8 = torch.randint(0, 256, (batch, 3, img_size, img_size), dtype=torch.uint8)
    with torch.no_grad():
        seconds = _median_time(lambda: pipeline(uint8), repeats=5, warmup=1)
    pipe = {"images_per_s": batch / seconds, "ms_per_batch": seconds * 1e3}

    trained = None
    if model:
        import hilovit

        log(f"timing a {model} training step (batch {batch}, {img_size}x{img_size}) ...")
        torch.manual_seed(0)
        net = hilovit.create_model(model, img_size=img_size).train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-6)
        x = torch.randn(batch, 3, img_size, img_size)
        y = torch.randint(0, net.num_classes, (batch,))

        def step():
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        seconds = _median_time(step, repeats=model_repeats, warmup=1)
        trained = {"model": model, "images_per_s": batch / seconds, "ms_per_step": seconds * 1e3}
        for r in rows:
            one_worker = r["images_per_s"] / max(r["workers"], 1)
            r["core_share_at_model_speed"] = trained["images_per_s"] / one_worker
            r["model_images_per_s"] = trained["images_per_s"]

    notes = _notes(rows, pipe, trained, batch, batches, img_size)
    result: Dict[str, Any] = {"rows": rows, "pipeline": pipe, "model": trained, "notes": notes, "files": {}}
    if output:
        result["files"] = write_table(rows, output, "Data path benchmark", command_line(), notes=notes,
                                      columns=COLUMNS)
    return result


def _notes(rows, pipe, trained, batch, batches, img_size) -> List[str]:
    info = machine_info("cpu")
    notes = [
        f"machine: {info.get('cpu', 'cpu')}, {torch.get_num_threads()} threads in the main process, torch "
        f"{torch.__version__}",
        f"loader: ImageFolderDataset -> DataLoader (batch {batch}, {batches} batches per pass, the second pass "
        f"timed); train crop = random-resized crop (scale 0.08-1) of the full image to {img_size}, drawn before "
        "decoding; eval crop = resize to 1/0.9 of the side and centre crop; reduced decode = JPEG decoded at 1/2, "
        "1/4 or 1/8 scale where the crop keeps its pixels (training crops get it by default, evaluation only "
        "with draft='all')",
        f"device-side augmentation of the ImageNet recipe (flip, RandAugment 2 ops of magnitude 9, random "
        "erasing 0.25, normalisation; the crop already done in the workers), "
        f"main process: {pipe['images_per_s']:.0f} images/s ({pipe['ms_per_batch']:.1f} ms per batch of {batch})",
    ]
    if trained:
        notes.append(f"{trained['model']} training step (forward, cross-entropy, backward, AdamW), batch {batch}, "
                     f"{img_size}x{img_size}: {trained['images_per_s']:.2f} images/s "
                     f"({trained['ms_per_step']:.0f} ms per step)")
        train_rows = [r for r in rows if r["crop"] == "train" and r["reduced_decode"] == "on" and r["workers"] == 0]
        worst = max(train_rows, key=lambda r: r["core_share_at_model_speed"], default=None)
        if worst:
            notes.append(f"to feed that training step, one worker needs at most "
                         f"{100 * worst['core_share_at_model_speed']:.1f}% of a core (its training-crop rate, "
                         f"{worst['images']}); the device-side augmentation adds "
                         f"{100 * trained['images_per_s'] / pipe['images_per_s']:.1f}% of the step's time")
    for label in dict.fromkeys(r["images"] for r in rows):
        gains = [r["speedup_from_reduced_decode"] for r in rows
                 if r["images"] == label and r["crop"] == "train" and r["reduced_decode"] == "on"]
        if gains:
            notes.append(f"reduced-scale decoding, training crops of {label}: {min(gains):.2f}-{max(gains):.2f}x "
                         "the images/s of full decoding")
    return notes
