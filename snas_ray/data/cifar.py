"""CIFAR-10: python-version batch files read by a restricted unpickler, augmentation, cutout
(spec §6.1). torchvision's CIFAR10 class downloads the archive; it never unpickles a file."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import datasets, transforms
from torchvision.datasets.vision import VisionDataset

from snas_ray.config import DatasetConfig
from snas_ray.data.splits import DataSplits, TransformedSubset, limit_indices, val_count
from snas_ray.errors import DataError

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "build_cifar10", "read_cifar_file"]

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


# Everything a CIFAR-10 python-version file may name: numpy's array and scalar reconstruction,
# under numpy 1's module name (the published files) and numpy 2's (files numpy 2 writes).
_ALLOWED_GLOBALS = frozenset(
    [
        (f"numpy.{core}.multiarray", name)
        for core in ("core", "_core")
        for name in ("_reconstruct", "scalar")
    ]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
)


class _CifarUnpickler(pickle.Unpickler):
    """Admits dicts, lists, tuples, bytes, str, numbers and numpy arrays, nothing else: a
    planted file in a shared ``data.root`` must not run code in every search."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 file never holds")


def read_cifar_file(path: Path) -> dict[str, Any]:
    """One CIFAR-10 python-version file, through :class:`_CifarUnpickler`; a :class:`DataError`
    naming the file when it is unreadable, refused or not a mapping."""
    try:
        with path.open("rb") as f:
            entry = _CifarUnpickler(f, encoding="latin1").load()
        if not isinstance(entry, dict):
            raise ValueError(f"holds a {type(entry).__name__}, not a dict")
        return entry
    except Exception as exc:  # noqa: BLE001 - a corrupt pickle fails in a dozen ways
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: Exception) -> DataError:
    detail = (str(exc).strip().splitlines() or [""])[0][:160]
    return DataError(
        f"data.root: cannot read CIFAR-10 file '{path}' ({type(exc).__name__}: {detail}; "
        "replace it with the original, e.g. delete it and set data.download=true)"
    )


def _batch(path: Path) -> tuple[np.ndarray, list[int]]:
    entry = read_cifar_file(path)
    try:
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = [int(y) for y in entry["labels"]]
        if len(labels) != len(data) or not all(0 <= y < 10 for y in labels):
            raise ValueError(f"{len(labels)} labels in 0..9 for {len(data)} images expected")
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise _unreadable(path, exc) from None
    return data, labels


class _CIFAR10Files(datasets.CIFAR10):
    """torchvision's CIFAR10 (its download, ``__getitem__`` and attributes) with files read by
    :func:`read_cifar_file` instead of ``pickle.load``, and no MD5 check of files on disk.

    ``__init__`` is ours, so torchvision never unpickles anything. Files written by tests (or
    re-pickled by users) fail torchvision's MD5 check although they are valid; presence and
    readability are enough here. A missing folder still goes through the real ``download()``,
    which verifies the archive's MD5.
    """

    def __init__(self, root: str, *, train: bool, download: bool) -> None:
        VisionDataset.__init__(self, root)  # not CIFAR10.__init__, which unpickles unchecked
        self.train = train
        if download:
            self.download()
        folder = Path(self.root, self.base_folder)
        if _missing_files(folder):
            raise FileNotFoundError(folder)
        names = [n for n, _ in (self.train_list if train else self.test_list)]
        batches = [_batch(folder / name) for name in names]
        self.data = np.concatenate([d for d, _ in batches]).transpose((0, 2, 3, 1))  # HWC
        self.targets = [y for _, labels in batches for y in labels]
        meta = folder / self.meta["filename"]
        names = read_cifar_file(meta).get(self.meta["key"])
        if not isinstance(names, list) or len(names) != 10:
            raise _unreadable(meta, ValueError(f"no list of 10 {self.meta['key']}"))
        self.classes = [str(n) for n in names]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    def _check_integrity(self) -> bool:
        return not _missing_files(Path(self.root, self.base_folder))


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
        with _download_lock(Path(cfg.root), wanted=bool(_missing_files(folder))):
            return _CIFAR10Files(cfg.root, train=train, download=cfg.download)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - the download fails in many ways
        if _missing_files(folder):  # the download itself failed (offline, refused, bad MD5)
            logger.warning("CIFAR-10 download into %s failed: %s", cfg.root, exc)
            raise not_found from exc
        raise DataError(
            f"data.root: cannot load CIFAR-10 from '{folder}' ({type(exc).__name__}: {exc})"
        ) from exc


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
