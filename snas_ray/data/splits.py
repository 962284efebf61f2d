"""What every dataset builder returns, and the split helpers they share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from snas_ray.config import DatasetConfig
from snas_ray.errors import DataError

__all__ = ["NUM_CLASSES", "DataSplits", "TransformedSubset", "limit_indices", "val_count"]

NUM_CLASSES = 10  # CIFAR-10, digits and the synthetic set


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


def limit_indices(indices: Sequence[int], limit: int) -> Sequence[int]:
    return indices[:limit] if limit > 0 else indices


def val_count(cfg: DatasetConfig, n: int) -> int:
    """How many of ``n`` train-split images are held out; rejects splits with an empty side."""
    n_val = round(cfg.val_fraction * n)
    if n_val == 0 or n_val == n:
        raise DataError(
            f"data.val_fraction: {cfg.val_fraction} of {n} images leaves an empty "
            f"{'validation' if n_val == 0 else 'training'} set (choose a fraction that keeps "
            "both non-empty, or set data.val_on_test=true)"
        )
    return n_val
