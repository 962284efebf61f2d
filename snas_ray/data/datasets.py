"""``build_datasets``: the train/val/test splits a ``data`` config section names.

Validation is held out of the train split (spec §15); ``val_on_test`` restores the reference's
monitor-on-test setting (spec §6.1).
"""

from __future__ import annotations

import logging

from snas_ray.config import DatasetConfig
from snas_ray.data.cifar import build_cifar10
from snas_ray.data.digits import build_digits, build_synthetic
from snas_ray.data.imagenet import build_imagenet
from snas_ray.data.splits import DataSplits
from snas_ray.errors import DataError

__all__ = ["build_datasets"]

logger = logging.getLogger(__name__)


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
        "cifar10": build_cifar10,
        "digits": build_digits,
        "synthetic": build_synthetic,
        "imagenet": build_imagenet,
    }
    if cfg.name not in builders:
        raise DataError(f"data.name: unknown dataset '{cfg.name}' (allowed: {', '.join(builders)})")
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
