"""What a sweep's start line tells before any trial runs: how many trials run at once on the
cluster as it is, which trials repeat another's search, and where nested trials' drivers go.

Pure functions of a :class:`SweepSpec` and ``ray.cluster_resources()``; :mod:`.sweep` calls them.
"""

from __future__ import annotations

import itertools
import json
import math

from snas_ray.config import flatten
from snas_ray.sweep_spec import SweepSpec

__all__ = [
    "DRIVER_CPU",
    "DRIVER_RESOURCE",
    "PENALTY_ONLY",
    "concurrency_line",
    "driver_resources",
    "identical_trials",
    "repeats_warning",
]

DRIVER_CPU = 0.01  # a nested trial only drives its TorchTrainer; Tune rejects zero resources
# A custom resource the on-demand head of the cluster/ configs defines (1000 units): nested
# trials' drivers take 1 each, so they (and Train's controller, which runs beside its driver)
# never land on spot GPU nodes and die with them. Ray's documented pattern for Train in Tune.
DRIVER_RESOURCE = "snas_driver"


def driver_resources(spec: SweepSpec, cluster: dict[str, float]) -> dict[str, float]:
    """A trial's Tune resources: one-worker trials hold their worker's CPUs and GPUs; a nested
    trial holds a sliver of CPU, plus one unit of :data:`DRIVER_RESOURCE` where the cluster
    defines it (local clusters and ``start-ray.sh`` usually do not: then anywhere)."""
    opts = spec.options
    if opts.workers_per_trial == 1:
        return {"cpu": opts.cpus_per_worker, "gpu": opts.gpus_per_worker}
    if cluster.get(DRIVER_RESOURCE, 0.0) >= 1:
        return {"cpu": DRIVER_CPU, DRIVER_RESOURCE: 1.0}
    return {"cpu": DRIVER_CPU}


def concurrency_line(spec: SweepSpec, cluster: dict[str, float], limit: int) -> str:
    """What runs at once, as the cluster is now: ``"2 at a time on 2 CPU now (1 CPU each); the
    other 4 wait in Tune's queue"``. An autoscaler may add nodes later; Ray cannot say whether."""
    opts = spec.options
    need = {
        "CPU": opts.workers_per_trial * opts.cpus_per_worker,
        "GPU": opts.workers_per_trial * opts.gpus_per_worker,
    }
    fits = min(math.floor(cluster.get(k, 0.0) / v + 1e-9) for k, v in need.items() if v > 0)
    now = max(0, min(fits, limit, spec.num_trials))
    has = ", ".join(f"{cluster.get(k, 0.0):g} {k}" for k, v in need.items() if v > 0)
    each = ", ".join(f"{v:g} {k}" for k, v in need.items() if v > 0)
    line = f"{now} at a time on the cluster's {has} now ({each} per trial)"
    waiting = spec.num_trials - now
    if waiting > 0:
        line += f"; the other {waiting} wait in Tune's queue until resources free up or are added"
    return line


# Keys only the resource penalty reads: at lambda 0 without a budget the penalty is off.
PENALTY_ONLY = (
    "cost.estimator",
    "cost.log_penalty",
    "cost.separation",
    "cost.ratio",
    "cost.minus_baseline",
)


def identical_trials(spec: SweepSpec) -> int:
    """How many trials search exactly what another trial searches: at ``resource_lambda`` 0
    without a budget, trials that differ only in :data:`PENALTY_ONLY` keys. 0 when a randomly
    drawn key (other than those) makes every trial its own."""
    if any(p.kind != "grid" and p.key not in PENALTY_ONLY for p in spec.params):
        return 0
    base = flatten(spec.base.to_dict())
    grids = [[(p.key, v) for v in p.values] for p in spec.params if p.kind == "grid"]
    seen: set[str] = set()
    repeats = 0
    for point in itertools.product(*grids):
        settings = base | dict(point)
        if settings["cost.resource_lambda"] != 0 or settings["cost.budget"] != 0:
            continue
        key = json.dumps({k: v for k, v in point if k not in PENALTY_ONLY}, sort_keys=True)
        repeats += key in seen
        seen.add(key)
    return repeats * spec.num_samples


def repeats_warning(spec: SweepSpec) -> str | None:
    """The start line's warning when :func:`identical_trials` finds repeats, else None."""
    repeats = identical_trials(spec)
    if not repeats:
        return None
    keys = "/".join(sorted({p.key for p in spec.params if p.key in PENALTY_ONLY}))
    return (
        f"sweep: {repeats} of {spec.num_trials} trials repeat another's search: at "
        f"cost.resource_lambda=0 without a budget the penalty is off, so changing {keys} "
        "changes nothing that is searched (collect draws identical results as one point with "
        "a count; sweep lambda 0 with one estimator to save the time)"
    )
