"""Seeded DataLoaders: the batch order depends only on the seed, so a resume repeats it.

On CUDA the loaders pin their batches (``pin_memory``) so the loop's ``non_blocking`` copies
overlap the step. Evaluation loaders keep their worker processes between epochs
(``persistent``); training loaders do not, because their workers' random seeds (augmentation)
are drawn from the loader's generator each epoch, which is what makes a resumed epoch repeat.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["make_loader"]


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
    sampler: Sampler[Any] | None = None,
    pin_memory: bool = False,
    persistent: bool = False,
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
        pin_memory: Pin batches in page-locked memory (for CUDA).
        persistent: Keep the workers alive between passes (only with ``num_workers > 0``);
            for loaders whose workers draw no random numbers.

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
        pin_memory=pin_memory,
        persistent_workers=persistent and num_workers > 0,
    )
