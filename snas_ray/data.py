"""Datasets for the search: CIFAR-10 (torchvision), sklearn digits (offline) and synthetic noise.

Validation is held out of the train split (spec §15); ``val_on_test`` restores the reference's
monitor-on-test setting (spec §6.1). ``make_loader`` gives seeded, repeatable batch orders.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset
from torchvision import datasets, transforms

from snas_ray.config import DatasetConfig, SnasRayError

__all__ = [
    "TransformedSubset",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DataError",
    "DataSplits",
    "build_datasets",
    "make_loader",
]

logger = logging.getLogger(__name__)

# Spec §6.1: per-channel statistics of the CIFAR-10 train split.
CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)

_DATASETS = ("cifar10", "digits", "synthetic", "imagenet")
_NUM_CLASSES = 10
_DIGITS_TEST_FRACTION = 0.2


class DataError(SnasRayError):
    """The data cannot be found, read or split; the message names the ``data.*`` field to fix."""


@dataclass(frozen=True)
class DataSplits:
    """The three splits of one dataset and the shape facts a model needs.

    Attributes:
        train: Training images (augmented for CIFAR-10 when ``augment`` is on).
        val: Held-out images that rank architectures; the test split only with ``val_on_test``.
        test: The dataset's test split, never used for selection by default.
        num_classes: Number of labels.
        in_channels: Image channels (3 for every dataset here).
        image_size: Image side in pixels after the transforms.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int


class _Cutout:
    """Zeroes a ``size`` x ``size`` square around a uniformly random centre, clipped at borders."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        cy = int(torch.randint(h, ()).item())
        cx = int(torch.randint(w, ()).item())
        y0, x0 = max(cy - self.size // 2, 0), max(cx - self.size // 2, 0)
        y1, x1 = min(cy - self.size // 2 + self.size, h), min(cx - self.size // 2 + self.size, w)
        out = img.clone()
        out[..., y0:y1, x0:x1] = 0.0
        return out


def _missing_files(folder: Path) -> list[Path]:
    names = [n for n, _ in datasets.CIFAR10.train_list + datasets.CIFAR10.test_list]
    paths = [folder / n for n in names + [datasets.CIFAR10.meta["filename"]]]
    return [p for p in paths if not (p.is_file() and os.access(p, os.R_OK))]


class _CIFAR10Files(datasets.CIFAR10):
    """torchvision's CIFAR10 minus the MD5 checks on files already on disk.

    Files written by tests (or re-pickled by users) fail torchvision's MD5 check although they are
    valid; presence and readability are enough here. A missing folder still goes through the real
    ``download()``, which verifies the archive's MD5.
    """

    def _check_integrity(self) -> bool:
        return not _missing_files(Path(self.root, self.base_folder))

    def _load_meta(self) -> None:
        with Path(self.root, self.base_folder, self.meta["filename"]).open("rb") as f:
            self.classes = list(pickle.load(f, encoding="latin1")[self.meta["key"]])
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


class TransformedSubset(Dataset):
    """Rows ``indices`` of a PIL-returning dataset, each passed through ``transform``.

    Train and val share one loaded train split (CIFAR-10, ImageNet folders) but need different
    transforms.
    """

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Callable) -> None:
        self.base = base
        self.indices = [int(i) for i in indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, target = self.base[self.indices[i]]
        return self.transform(img), int(target)


def _limit(indices: Sequence[int], limit: int) -> Sequence[int]:
    return indices[:limit] if limit > 0 else indices


def _val_count(cfg: DatasetConfig, n: int) -> int:
    """How many of ``n`` train-split images are held out; rejects splits with an empty side."""
    n_val = round(cfg.val_fraction * n)
    if n_val == 0 or n_val == n:
        raise DataError(
            f"data.val_fraction: {cfg.val_fraction} of {n} images leaves an empty "
            f"{'validation' if n_val == 0 else 'training'} set (choose a fraction that keeps "
            "both non-empty, or set data.val_on_test=true)"
        )
    return n_val


def _cifar_transforms(cfg: DatasetConfig) -> tuple[Callable, Callable]:
    resize = [transforms.Resize(cfg.image_size)] if cfg.image_size not in (0, 32) else []
    tail = [transforms.ToTensor(), transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    train = (augment if cfg.augment else []) + resize + tail
    if cfg.cutout > 0:
        train.append(_Cutout(cfg.cutout))
    return transforms.Compose(train), transforms.Compose(resize + tail)


def _load_cifar10(cfg: DatasetConfig, train: bool) -> _CIFAR10Files:
    folder = Path(cfg.root) / _CIFAR10Files.base_folder
    not_found = DataError(
        f"data.root: CIFAR-10 not found in '{folder}' (set data.download=true on a machine with "
        "internet, or put the extracted python-version batches there)"
    )
    if _missing_files(folder) and not cfg.download:
        raise not_found
    try:
        with _download_lock(Path(cfg.root), wanted=_missing_files(folder)):
            return _CIFAR10Files(cfg.root, train=train, download=cfg.download)
    except Exception as exc:  # download and unpickling fail in many ways
        if _missing_files(folder):  # the download itself failed (offline, refused, bad MD5)
            logger.warning("CIFAR-10 download into %s failed: %s", cfg.root, exc)
            raise not_found from exc
        raise _corrupt_file_error(folder, exc) from exc


@contextlib.contextmanager
def _download_lock(root: Path, *, wanted: bool) -> Iterator[None]:
    """Serialise downloads into ``root``: sweep trials and workers on one node (or on an NFS
    folder with locking) would otherwise write the same archive at once."""
    if not wanted:
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".snas-ray-download.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the second waits, then finds the files present
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _corrupt_file_error(folder: Path, exc: Exception) -> DataError:
    """Names the first CIFAR-10 file that does not unpickle to what torchvision expects."""
    batches = [n for n, _ in _CIFAR10Files.train_list + _CIFAR10Files.test_list]
    for name in [*batches, _CIFAR10Files.meta["filename"]]:
        try:
            with (folder / name).open("rb") as f:
                entry = pickle.load(f, encoding="latin1")
            if name in batches:
                np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                len(entry["labels"])
            else:
                len(entry[_CIFAR10Files.meta["key"]])
        except Exception as file_exc:  # any failure makes this file unusable
            return DataError(
                f"data.root: cannot read CIFAR-10 file '{folder / name}' "
                f"({type(file_exc).__name__}: {file_exc}; replace it with the original, "
                "e.g. delete it and set data.download=true)"
            )
    return DataError(
        f"data.root: cannot load CIFAR-10 from '{folder}' ({type(exc).__name__}: {exc})"
    )


def _build_cifar10(cfg: DatasetConfig) -> DataSplits:
    train_tf, test_tf = _cifar_transforms(cfg)
    train_split = _load_cifar10(cfg, train=True)
    test_split = _load_cifar10(cfg, train=False)
    test = TransformedSubset(test_split, _limit(range(len(test_split)), cfg.limit), test_tf)
    if cfg.val_on_test:
        train = TransformedSubset(train_split, _limit(range(len(train_split)), cfg.limit), train_tf)
        val = test
    else:
        n = len(train_split)
        # Legacy RandomState: its stream is frozen across numpy versions, so the split is too.
        order = np.random.RandomState(cfg.split_seed).permutation(n)
        n_val = _val_count(cfg, n)
        train = TransformedSubset(train_split, _limit(order[n_val:], cfg.limit), train_tf)
        val = TransformedSubset(train_split, _limit(order[:n_val], cfg.limit), test_tf)
    size = cfg.image_size or 32
    return DataSplits(train, val, test, len(train_split.classes), 3, size)


def _digits_indices(
    labels: np.ndarray, val_fraction: float, split_seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified (train, val, test) index arrays: 20% test, then ``val_fraction`` of the rest."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    n_test = round(_DIGITS_TEST_FRACTION * len(idx))
    rest, test = train_test_split(idx, test_size=n_test, stratify=labels, random_state=split_seed)
    n_val = round(val_fraction * len(rest))
    train, val = train_test_split(
        rest, test_size=n_val, stratify=labels[rest], random_state=split_seed
    )
    return train, val, test


def _build_digits(cfg: DatasetConfig) -> DataSplits:
    from sklearn.datasets import load_digits  # sklearn is slow to import; only digits needs it

    bunch = load_digits()
    labels = np.asarray(bunch.target, dtype=np.int64)
    size = cfg.image_size or 16
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.repeat(1, 3, 1, 1)
    _val_count(cfg, len(labels) - round(_DIGITS_TEST_FRACTION * len(labels)))
    train_idx, val_idx, test_idx = _digits_indices(labels, cfg.val_fraction, cfg.split_seed)
    if cfg.val_on_test:
        train_idx, val_idx = np.concatenate([train_idx, val_idx]), test_idx
    # Statistics come from the whole train portion, before ``limit``, so a tiny run sees the
    # same normalisation as a full one.
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    targets = torch.as_tensor(labels)

    def subset(idx: np.ndarray) -> TensorDataset:
        keep = torch.as_tensor(_limit(idx, cfg.limit))
        return TensorDataset(images[keep], targets[keep])

    return DataSplits(subset(train_idx), subset(val_idx), subset(test_idx), _NUM_CLASSES, 3, size)


def _build_synthetic(cfg: DatasetConfig) -> DataSplits:
    size = cfg.image_size or 32
    gen = torch.Generator().manual_seed(cfg.split_seed)

    def noise(n: int) -> TensorDataset:
        # Draw the full split, then cut, so ``limit`` never changes which images a split holds.
        images = torch.randn(n, 3, size, size, generator=gen)
        labels = torch.randint(_NUM_CLASSES, (n,), generator=gen)
        keep = slice(cfg.limit or None)
        return TensorDataset(images[keep], labels[keep])

    quarter = cfg.synthetic_size // 4
    return DataSplits(
        noise(cfg.synthetic_size), noise(quarter), noise(quarter), _NUM_CLASSES, 3, size
    )


def _build_imagenet(cfg: DatasetConfig) -> DataSplits:
    from snas_ray.imagenet import imagenet_folders  # imports this module; only ImageNet needs it

    train, val, test, num_classes, side = imagenet_folders(cfg)
    return DataSplits(train, val, test, num_classes, 3, side)


def build_datasets(cfg: DatasetConfig) -> DataSplits:
    """Builds the train/val/test splits that ``cfg`` describes.

    The validation split is carved from the train split with a permutation seeded by
    ``cfg.split_seed`` (independent of the run seed) and uses the test-time transform; only
    ``cfg.val_on_test`` makes the test split the validation set, as in the SNAS reference.

    Args:
        cfg: The ``data`` section of the experiment config.

    Returns:
        The splits plus class count, channel count and image side.

    Raises:
        DataError: Unknown dataset name, CIFAR-10 missing or unreadable, or a split left empty.

    Example:
        >>> splits = build_datasets(DatasetConfig(name="digits", limit=8))
        >>> len(splits.train), splits.image_size
        (8, 16)
    """
    builders = {
        "cifar10": _build_cifar10,
        "digits": _build_digits,
        "synthetic": _build_synthetic,
        "imagenet": _build_imagenet,
    }
    if cfg.name not in builders:
        raise DataError(
            f"data.name: unknown dataset '{cfg.name}' (allowed: {', '.join(_DATASETS)})"
        )
    splits = builders[cfg.name](cfg)
    logger.info(
        "data %s: %d train, %d val%s, %d test images of %dx%d",
        cfg.name,
        len(splits.train),
        len(splits.val),
        " (= test split)" if cfg.val_on_test else "",
        len(splits.test),
        splits.image_size,
        splits.image_size,
    )
    return splits


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
    sampler: Sampler[Any] | None = None,
) -> DataLoader:
    """A DataLoader whose batch order (and worker RNG seeds) depend only on ``seed``.

    Pass a new ``seed`` per epoch for a new order, or a ``DistributedSampler`` and call its
    ``set_epoch``. In-process augmentation (``num_workers=0``) draws from the global torch RNG,
    which the run seed controls.

    Args:
        dataset: Any map-style dataset.
        batch_size: Images per batch.
        shuffle: Shuffle with a generator seeded by ``seed``; ignored when ``sampler`` is given.
        seed: Seeds the loader's ``torch.Generator``.
        num_workers: Worker processes; 0 loads in the calling process.
        drop_last: Drop the last partial batch.
        sampler: Overrides the order (e.g. a ``DistributedSampler``).

    Returns:
        The loader.
    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
    )
