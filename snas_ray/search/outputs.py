"""What a finished search leaves in its run folder: ``genotype.json`` and ``result.json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from snas_ray.config import ExperimentConfig
from snas_ray.genotype import Genotype, save_genotype
from snas_ray.layout import RunPaths, atomic_write_json
from snas_ray.space.measure import NetworkCost, genotype_cost
from snas_ray.space.supernet import Supernet

__all__ = ["SearchResult", "write_search_outputs"]


@dataclass
class SearchResult:
    """What a finished (or resumed-to-the-end) search produced."""

    epochs_done: int
    genotype: Genotype
    val_acc: float
    val_acc_relaxed: float
    last_metrics: dict[str, float] = field(default_factory=dict)


def write_search_outputs(
    cfg: ExperimentConfig,
    net: Supernet,
    paths: RunPaths,
    result: SearchResult,
    *,
    lambda_final: float,
    budget_cost: NetworkCost | None = None,
) -> dict[str, Any]:
    """Write both files; returns ``result.json``'s dict.

    ``params``/``flops``/``mac`` are the child built and measured at the search's own width and
    depth; ``budget_cost`` is the same child at ``cost.budget_layers``/``budget_init_channels``
    (what the budget was compared with), given when there is a budget or that size differs.
    ``resource_lambda`` stays the configured value so that runs group by their settings.
    """
    save_genotype(result.genotype, paths.genotype)
    cost = genotype_cost(
        result.genotype,
        init_channels=cfg.space.init_channels,
        layers=cfg.space.layers,
        num_classes=net.num_classes,
        image_size=net.image_size,
        in_channels=net.in_channels,
    )
    c = cfg.cost
    summary = {
        "val_acc": result.val_acc,
        "val_acc_relaxed": result.val_acc_relaxed,
        "params": cost.params,
        "flops": cost.flops,
        "mac": cost.mac,
        "epochs_done": result.epochs_done,
        "epochs": cfg.search.epochs,
        "resource_lambda": c.resource_lambda,
        "resource_lambda_final": lambda_final,
        "budget": c.budget,
        "budget_metric": c.budget_metric,
        "estimator": c.estimator,
        "seed": cfg.seed,
        "dataset": cfg.data.name,
        "layers": cfg.space.layers,
        "init_channels": cfg.space.init_channels,
        "derivation": cfg.search.derivation,
        "genotype": result.genotype.to_dict(),
        "final_metrics": dict(result.last_metrics),
    }
    if budget_cost is not None:
        summary["budget_cost"] = {
            "layers": c.budget_layers or cfg.space.layers,
            "init_channels": c.budget_init_channels or cfg.space.init_channels,
            "params": budget_cost.params,
            "flops": budget_cost.flops,
            "mac": budget_cost.mac,
        }
    atomic_write_json(paths.result, summary)
    return summary
