"""Offline datasets: scikit-learn's bundled 8x8 ``digits`` and seeded Gaussian noise."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from snas_ray.config import DatasetConfig
from snas_ray.data.splits import NUM_CLASSES, DataSplits, limit_indices, val_count

__all__ = ["build_digits", "build_synthetic", "digits_indices"]

_DIGITS_TEST_FRACTION = 0.2


def digits_indices(
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


def build_digits(cfg: DatasetConfig) -> DataSplits:
    from sklearn.datasets import load_digits  # sklearn is slow to import; only digits needs it

    bunch = load_digits()
    labels = np.asarray(bunch.target, dtype=np.int64)
    size = cfg.image_size or 16
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.repeat(1, 3, 1, 1)
    val_count(cfg, len(labels) - round(_DIGITS_TEST_FRACTION * len(labels)))
    train_idx, val_idx, test_idx = digits_indices(labels, cfg.val_fraction, cfg.split_seed)
    if cfg.val_on_test:
        train_idx, val_idx = np.concatenate([train_idx, val_idx]), test_idx
    # Statistics come from the whole train portion, before ``limit``, so a tiny run sees the
    # same normalisation as a full one.
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    targets = torch.as_tensor(labels)

    def subset(idx: np.ndarray) -> TensorDataset:
        keep = torch.as_tensor(limit_indices(idx, cfg.limit))
        return TensorDataset(images[keep], targets[keep])

    return DataSplits(subset(train_idx), subset(val_idx), subset(test_idx), NUM_CLASSES, 3, size)


def build_synthetic(cfg: DatasetConfig) -> DataSplits:
    size = cfg.image_size or 32
    gen = torch.Generator().manual_seed(cfg.split_seed)

    def noise(n: int) -> TensorDataset:
        # Draw the full split, then cut, so ``limit`` never changes which images a split holds.
        images = torch.randn(n, 3, size, size, generator=gen)
        labels = torch.randint(NUM_CLASSES, (n,), generator=gen)
        keep = slice(cfg.limit or None)
        return TensorDataset(images[keep], labels[keep])

    quarter = cfg.synthetic_size // 4
    return DataSplits(
        noise(cfg.synthetic_size), noise(quarter), noise(quarter), NUM_CLASSES, 3, size
    )
