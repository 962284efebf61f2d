"""ImageNet as an ImageFolder tree (``data.root/train/<class>/*``, ``data.root/val/<class>/*``).

Transforms follow the reference's ``train_imagenet.py`` (spec §11.3): RandomResizedCrop, flip and
ColorJitter for training; Resize(256/224 of the side) + CenterCrop for evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset
from torchvision import datasets, transforms

from snas_ray.config import DatasetConfig
from snas_ray.data.splits import DataSplits, TransformedSubset
from snas_ray.errors import DataError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_imagenet",
    "imagenet_folders",
    "imagenet_transforms",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_DEFAULT_SIDE = 224


def imagenet_transforms(cfg: DatasetConfig) -> tuple[Callable, Callable]:
    """(train, eval) transforms at side ``cfg.image_size`` (224 when 0)."""
    side = cfg.image_size or _DEFAULT_SIDE
    tail = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train = [transforms.RandomResizedCrop(side)]
    if cfg.augment:
        train += [
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2),
        ]
    resize = round(side * 256 / 224)  # the reference's 256 -> 224 ratio at any side
    test = [transforms.Resize(resize), transforms.CenterCrop(side)]
    return transforms.Compose(train + tail), transforms.Compose(test + tail)


def _folder(root: Path, split: str) -> datasets.ImageFolder:
    path = root / split
    if not path.is_dir():
        raise DataError(
            f"data.root: ImageNet folder '{path}' not found (data.root must hold train/ and val/, "
            "one sub-folder of images per class)"
        )
    try:
        return datasets.ImageFolder(str(path))
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"data.root: cannot read ImageNet folder '{path}' ({exc})") from None


def imagenet_folders(cfg: DatasetConfig) -> tuple[Dataset, Dataset, Dataset, int, int]:
    """(train, val, test, num_classes, side) from ``cfg.root``; ``val/`` is the test split.

    The validation split is carved from ``train/`` with ``cfg.split_seed``, unless
    ``cfg.val_on_test`` makes it the test split (then all of ``train/`` trains).
    """
    root = Path(cfg.root)
    train_base, test_base = _folder(root, "train"), _folder(root, "val")
    if train_base.classes != test_base.classes:
        raise DataError(f"data.root: '{root}/train' and '{root}/val' hold different classes")
    train_tf, test_tf = imagenet_transforms(cfg)

    def cut(idx: Sequence[int]) -> Sequence[int]:
        return idx[: cfg.limit] if cfg.limit > 0 else idx

    test = TransformedSubset(test_base, cut(range(len(test_base))), test_tf)
    if cfg.val_on_test:
        train, val = TransformedSubset(train_base, cut(range(len(train_base))), train_tf), test
    else:
        order = np.random.RandomState(cfg.split_seed).permutation(len(train_base))
        n_val = round(cfg.val_fraction * len(order))
        if n_val in (0, len(order)):
            raise DataError(
                f"data.val_fraction: {cfg.val_fraction} of {len(order)} images leaves a split "
                "empty (or set data.val_on_test=true)"
            )
        train = TransformedSubset(train_base, cut(order[n_val:]), train_tf)
        val = TransformedSubset(train_base, cut(order[:n_val]), test_tf)
    return train, val, test, len(train_base.classes), cfg.image_size or _DEFAULT_SIDE


def build_imagenet(cfg: DatasetConfig) -> DataSplits:
    """The ImageNet folders as splits (3 channels, side ``cfg.image_size`` or 224)."""
    train, val, test, num_classes, side = imagenet_folders(cfg)
    return DataSplits(train, val, test, num_classes, 3, side)
