"""Datasets, splits and seeded loaders: CIFAR-10, ImageNet folders, digits and synthetic noise."""

from snas_ray.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from snas_ray.data.datasets import build_datasets
from snas_ray.data.loaders import make_loader
from snas_ray.data.splits import DataSplits, TransformedSubset

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DataSplits",
    "TransformedSubset",
    "build_datasets",
    "make_loader",
]
