"""Batches for training and evaluation, and the transforms run on them on the training device.

* In-memory datasets (:class:`~hilovit.data.IdxDataset`, e.g. Fashion-MNIST) are indexed batch by
  batch straight from their uint8 tensor: no DataLoader, no per-sample Python.
* Other datasets (image folders) go through a DataLoader whose workers decode the images. A file that
  fails to decode is replaced by the next sample in the worker; its path travels back with the batch
  (a third entry that the workers' collate adds and :class:`TrainBatches`/:class:`EvalBatches` take
  off again), is remembered by the dataset in the main process (so the next epoch's workers skip it
  at once) and is printed at the end of the epoch by :func:`report_skipped_images`.
* :func:`crop_in_workers` moves the training random-resized crop from the device into the workers
  for datasets that can take it from the full decoded image (image folders), so it is never done twice.

The order of an epoch is a function of ``(seed, epoch)`` only, so a resumed run sees the same
batches as an uninterrupted one. With ``world_size`` processes, each optimiser step takes the
next ``batch_size`` indices of that order and process ``r`` gets the ``r``-th of ``world_size``
equal slices, so N processes see exactly the batches one process would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from hilovit.data import AugmentConfig, BatchAugment, Normalize, match_channels, to_float_batch

__all__ = ["IndexedBatches", "epoch_order", "TrainBatches", "EvalBatches", "BatchPipeline", "is_in_memory",
           "crop_in_workers", "report_skipped_images"]


def is_in_memory(dataset: Dataset) -> bool:
    """Whether ``dataset`` holds all its samples as one uint8 tensor ``images`` (N, C, H, W) and ``targets``."""
    images = getattr(dataset, "images", None)
    return isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.dim() == 4 and \
        isinstance(getattr(dataset, "targets", None), torch.Tensor)


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The sample order of ``epoch``: a permutation of ``range(n)`` drawn from ``(seed, epoch)`` alone."""
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator()
    g.manual_seed((int(seed) * 1_000_003 + int(epoch) * 7_919 + 12_345) % (2**63 - 1))
    return torch.randperm(n, generator=g)


class _ListSampler(torch.utils.data.Sampler):
    def __init__(self, batches: List[List[int]]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _WithSkips(Dataset):
    """``dataset[i]`` -> ``(image, label, skipped paths)``, through ``dataset.load_with_skips`` where it has one."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        load = getattr(self.dataset, "load_with_skips", None)
        if load is not None:
            return load(index)
        image, label = self.dataset[index]
        return image, label, ()


def _collate(samples):
    images = torch.stack([s[0] for s in samples])
    targets = torch.tensor([int(s[1]) for s in samples], dtype=torch.int64)
    skipped = [tuple(s[2]) if len(s) > 2 else () for s in samples]  # per sample: the files passed over for it
    return images, targets, skipped


class _Batches:
    """Shared machinery: yields ``(uint8 images (b, C, H, W), int64 targets (b,))`` for lists of indices."""

    def __init__(self, dataset: Dataset, workers: int = 0, pin_memory: bool = False) -> None:
        self.dataset = dataset
        self.workers = int(workers)
        self.pin_memory = bool(pin_memory)
        self.in_memory = is_in_memory(dataset)
        self.skipped: List[str] = []  # unreadable files passed over since the last pop_skipped()
        self.drop_substitutes = False  # leave out the stand-ins for unreadable files (evaluation)

    def pop_skipped(self) -> List[str]:
        """The paths of the files skipped as unreadable since the last call, each once, in order met."""
        out, self.skipped = list(dict.fromkeys(self.skipped)), []
        return out

    def _iterate(self, batches: List[torch.Tensor]) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        if self.in_memory:
            images, targets = self.dataset.images, self.dataset.targets
            for idx in batches:
                yield images[idx], targets[idx]
            return
        loader = DataLoader(
            _WithSkips(self.dataset),
            batch_sampler=_ListSampler([b.tolist() for b in batches]),
            num_workers=self.workers,
            collate_fn=_collate,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )
        known = getattr(self.dataset, "failed", None)
        for images, targets, skipped in loader:
            paths = [p for per_sample in skipped for p in per_sample]
            if paths:
                self.skipped.extend(paths)
                if isinstance(known, set):  # the workers of the next pass skip them without trying
                    known.update(Path(p) for p in paths)
                if self.drop_substitutes:  # the stand-in is another sample, counted where it belongs
                    keep = torch.tensor([not per_sample for per_sample in skipped])
                    images, targets = images[keep], targets[keep]
                    if not len(targets):
                        continue
            yield images, targets


class TrainBatches(_Batches):
    """The training batches of one process for each epoch (call :meth:`set_epoch` first).

    Args:
        dataset: the training set.
        batch_size: the global batch of one optimiser step (all processes together).
        seed: seed of the order (with the epoch).
        rank, world_size: this process and the number of processes; ``batch_size`` must be a
            multiple of ``world_size``.
        workers, pin_memory: DataLoader settings for datasets that are not in memory.

    Each epoch has ``len(dataset) // batch_size`` steps (the incomplete last batch is dropped).
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 workers: int = 0, pin_memory: bool = False, shuffle: bool = True) -> None:
        super().__init__(dataset, workers, pin_memory)
        if batch_size % world_size:
            raise ValueError(f"batch_size={batch_size} must be a multiple of the number of processes ({world_size})")
        if batch_size > len(dataset):
            raise ValueError(f"batch_size={batch_size} is larger than the training set ({len(dataset)} images)")
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self.world_size

    def _batches(self) -> List[torch.Tensor]:
        order = epoch_order(len(self.dataset), self.seed, self.epoch, self.shuffle)
        b, local = self.batch_size, self.local_batch_size
        start = self.rank * local
        return [order[s * b + start: s * b + start + local] for s in range(len(self))]

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        return self._iterate(self._batches())


class EvalBatches(_Batches):
    """Evaluation batches of one process: samples ``rank, rank + world_size, ...`` in order, every one once.

    A file that cannot be decoded is left out (its stand-in, the next sample, is not counted twice), so
    the metrics cover every readable image exactly once; its path is in :meth:`pop_skipped`.
    """

    def __init__(self, dataset: Dataset, batch_size: int, rank: int = 0, world_size: int = 1,
                 workers: int = 0, pin_memory: bool = False) -> None:
        super().__init__(dataset, workers, pin_memory)
        self.drop_substitutes = True
        if batch_size < 1:
            raise ValueError(f"eval batch_size={batch_size}, expected a positive int")
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.indices = torch.arange(rank, len(dataset), world_size)

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        return self._iterate(list(torch.split(self.indices, self.batch_size)))


class BatchPipeline(nn.Module):
    """uint8 batch -> model input, on the device: float in [0, 1], channels, augmentation, normalisation.

    In ``train()`` mode :class:`~hilovit.data.BatchAugment` is random; in ``eval()`` mode it only
    resizes to ``img_size``.

    Args:
        in_chans: channels the model takes (a grey batch is repeated, an RGB one turned to luma).
        img_size: the model's input side.
        mean, std: normalisation statistics (one value, or one per data channel).
        augment: the training augmentation; None turns every random step off.
    """

    def __init__(self, in_chans: int, img_size: int, mean, std, augment: Optional[AugmentConfig] = None) -> None:
        super().__init__()
        self.in_chans = int(in_chans)
        cfg = augment if augment is not None else AugmentConfig.off()
        cfg = AugmentConfig(**{**cfg.__dict__, "img_size": int(img_size)})
        self.augment = BatchAugment(cfg)
        mean, std = list(mean), list(std)
        if len(mean) not in (1, self.in_chans):  # e.g. RGB statistics for a grey model: average them
            mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
        self.normalize = Normalize(mean, std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float_batch(images)
        x = match_channels(x, self.in_chans)
        x = self.augment(x)
        return self.normalize(x)


def crop_in_workers(dataset: Dataset, pipeline: BatchPipeline) -> bool:
    """Take the training random-resized crop in the DataLoader workers, from the full decoded image.

    For a dataset that can (one with ``set_train_crop``, i.e. an image folder) and a pipeline whose
    recipe asks for the crop: the dataset makes its samples as that crop (the recipe's ``scale``
    and ``ratio``) and the pipeline stops cropping on the device, so the crop is taken once, from
    the whole picture rather than from a pre-cropped square. Other datasets (in-memory IDX data)
    are left to the device-side crop. Returns whether the crop moved.
    """
    cfg = pipeline.augment.config
    if not cfg.random_resized_crop or not hasattr(dataset, "set_train_crop"):
        return False
    dataset.set_train_crop(cfg.scale, cfg.ratio)
    pipeline.augment.crop_in_loader = True
    return True


def report_skipped_images(print_fn: Callable[[str], None], *batches: _Batches, limit: int = 20) -> List[str]:
    """Print (with ``print_fn``) the image files found unreadable in the passes over ``batches``
    since the last call, and return their paths; nothing is printed when there are none.

    Call it once at the end of each epoch (``report_skipped_images(reporter.print, train_batches,
    eval_batches)``). Each process reports what its own workers met.
    """
    paths = list(dict.fromkeys(p for b in batches for p in b.pop_skipped()))
    if paths:
        shown = "\n  ".join(paths[:limit])
        more = f"\n  ... and {len(paths) - limit} more" if len(paths) > limit else ""
        print_fn(f"skipped {len(paths)} unreadable image file{'s' if len(paths) != 1 else ''} "
                 f"(the next image was used instead):\n  {shown}{more}")
    return paths


class IndexedBatches:
    """The training batches of one process for each epoch, for datasets whose samples are made in
    DataLoader workers (augmented segmentation scenes, detection images with their targets).

    The order of an epoch is :func:`epoch_order` of ``(seed, epoch)``; each global batch of
    ``batch_size`` is sliced by rank, so ``world_size`` processes together see what one process
    would. ``collate`` turns the samples of a local batch into what the task's steps take. Each
    epoch has ``len(dataset) // batch_size`` steps; :meth:`set_epoch` also reaches the dataset's
    own ``set_epoch`` (fresh augmentation draws).
    """

    def __init__(self, dataset: Dataset, batch_size: int, collate: Callable, seed: int = 0, rank: int = 0,
                 world_size: int = 1, workers: int = 0, pin_memory: bool = False) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch_size={batch_size} must be a multiple of the number of processes ({world_size})")
        self.dataset, self.batch_size, self.collate, self.seed = dataset, batch_size, collate, seed
        self.rank, self.world_size, self.workers, self.pin_memory = rank, world_size, workers, pin_memory
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    def __iter__(self):
        order = epoch_order(len(self.dataset), self.seed, self.epoch)
        b, local = self.batch_size, self.batch_size // self.world_size
        start = self.rank * local
        batches = [order[s * b + start: s * b + start + local].tolist() for s in range(len(self))]
        return iter(DataLoader(self.dataset, batch_sampler=batches, num_workers=self.workers, collate_fn=self.collate,
                               pin_memory=self.pin_memory))

    def pop_skipped(self) -> List[str]:
        return []
