"""CIFAR-10 through torchvision: python-version batch files, augmentation, cutout (spec §6.1)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets, transforms

from snas_ray.config import DatasetConfig
from snas_ray.data.splits import DataSplits, TransformedSubset, limit_indices, val_count
from snas_ray.errors import DataError

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "build_cifar10"]

logger = logging.getLogger(__name__)

# Spec §6.1: per-channel statistics of the CIFAR-10 train split.
CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)


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


def build_cifar10(cfg: DatasetConfig) -> DataSplits:
    train_tf, test_tf = _cifar_transforms(cfg)
    train_split = _load_cifar10(cfg, train=True)
    test_split = _load_cifar10(cfg, train=False)
    test = TransformedSubset(test_split, limit_indices(range(len(test_split)), cfg.limit), test_tf)
    if cfg.val_on_test:
        train = TransformedSubset(
            train_split, limit_indices(range(len(train_split)), cfg.limit), train_tf
        )
        val = test
    else:
        n = len(train_split)
        # Legacy RandomState: its stream is frozen across numpy versions, so the split is too.
        order = np.random.RandomState(cfg.split_seed).permutation(n)
        n_val = val_count(cfg, n)
        train = TransformedSubset(train_split, limit_indices(order[n_val:], cfg.limit), train_tf)
        val = TransformedSubset(train_split, limit_indices(order[:n_val], cfg.limit), test_tf)
    size = cfg.image_size or 32
    return DataSplits(train, val, test, len(train_split.classes), 3, size)
