"""The Ray layers: the only package that imports ``ray`` (style.md §1).

``train`` runs one search on N Ray Train workers; the CLI imports this package only when
``--workers >= 1``, so in-process searches and ``--help`` never load Ray.
"""

from snas_ray.distributed.train import (
    EpochReporter,
    LaunchOptions,
    bench_overhead,
    connect,
    run_distributed_search,
    run_name,
    train_fn_per_worker,
)
from snas_ray.errors import DistributedRunError

__all__ = [
    "DistributedRunError",
    "EpochReporter",
    "LaunchOptions",
    "bench_overhead",
    "connect",
    "run_distributed_search",
    "run_name",
    "train_fn_per_worker",
]
