"""Which config fields may differ between a run and its resumption (or between runs collect
groups together): one set, one comparison, used by search, retrain, sweep and collect."""

from __future__ import annotations

import functools
from typing import Any

from snas_ray.config.sections import ExperimentConfig

__all__ = ["RESUME_MAY_DIFFER", "config_difference", "flatten"]

# Fields that may change between an interrupted run and its resumption, for every job (search,
# retraining, a sweep's trials) and for collect's grouping of runs: where files live, how much is
# logged, the device, memory layout and compilation, evaluation batch sizes. Nothing here
# changes what is learned. An entry ending in "." covers a whole section. The path fields
# (config.paths) are here because the driver makes them absolute: a run started with
# ``data.root: data`` resumes with ``/home/me/proj/data``. A retraining's checkpoint holds its
# genotype itself and refuses another one, so ``train.genotype`` (a name or a file) only says
# where it was read from.
RESUME_MAY_DIFFER = (
    "device",
    "output.",
    "search.log_every",
    "search.eval_batch_size",
    "search.channels_last",
    "search.compile",
    "search.cudnn_benchmark",
    "train.log_every",
    "train.eval_batch_size",
    "train.channels_last",
    "train.compile",
    "train.cudnn_benchmark",
    "data.root",
    "train.genotype",
    "data.num_workers",
    "data.download",
)


def _may_differ(key: str) -> bool:
    return any(key == f or (f.endswith(".") and key.startswith(f)) for f in RESUME_MAY_DIFFER)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def config_difference(
    current: dict[str, Any], saved: dict[str, Any]
) -> tuple[str, Any, Any] | None:
    """The first field (dotted key, saved value, current value) that makes two config dicts
    different runs; None when only :data:`RESUME_MAY_DIFFER` fields differ."""
    a, b = flatten(current), flatten(saved)
    defaults = _defaults()
    for key in sorted(set(a) | set(b)):
        # A field one side lacks (a config saved before the field existed) has its default.
        was, now = b.get(key, defaults.get(key)), a.get(key, defaults.get(key))
        if not _may_differ(key) and was != now:
            return key, was, now
    return None


@functools.cache
def _defaults() -> dict[str, Any]:
    return flatten(ExperimentConfig().to_dict())
