"""The Ray layers: the only package that imports ``ray`` (style.md §1).

``launch`` runs a search or a retraining on N Ray Train workers (``worker``), ``sweep`` and
``sweep_trial`` run Tune populations of searches, ``submit`` sends a command to a cluster. The CLI
imports this package only for ``--workers``, ``sweep`` and ``submit``, so in-process runs and
``--help`` never load Ray.
"""

from snas_ray.distributed.launch import (
    LaunchOptions,
    connect,
    launch,
    run_distributed_retrain,
    run_distributed_search,
    run_name,
)
from snas_ray.distributed.overhead import bench_overhead

__all__ = [
    "LaunchOptions",
    "bench_overhead",
    "connect",
    "launch",
    "run_distributed_retrain",
    "run_distributed_search",
    "run_name",
]
