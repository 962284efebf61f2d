"""Test helper: hand-made run folders as a finished (or unfinished) search leaves them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from snas_ray.genotype import save_genotype
from snas_ray.published import REGISTRY


def make_run(
    root: Path,
    name: str,
    *,
    acc: float,
    params: int,
    est: str = "reparametrization",
    lam: float = 0.0,
    seed: int = 0,
    lr: float = 0.05,
    epochs_done: int = 2,
    genotype: str = "SNAS_mild",
) -> Path:
    """A run folder as runfolder.write_outputs leaves it (result, genotype, config)."""
    run = root / name
    run.mkdir(parents=True)
    result = {
        "val_acc": acc,
        "val_acc_relaxed": acc / 2,
        "params": params,
        "flops": 10 * params,
        "mac": 3 * params,
        "epochs_done": epochs_done,
        "epochs": 2,
        "resource_lambda": lam,
        "estimator": est,
        "seed": seed,
        "dataset": "digits",
        "layers": 5,
        "init_channels": 8,
        "derivation": "snas",
        "genotype": REGISTRY[genotype].to_dict(),
        "final_metrics": {"val/acc_child": acc},
    }
    (run / "result.json").write_text(json.dumps(result))
    save_genotype(REGISTRY[genotype], run / "genotype.json")
    config = {
        "seed": seed,
        "device": "cpu",
        "cost": {"resource_lambda": lam, "estimator": est},
        "optim": {"lr": lr},
        "output": {"tensorboard": True},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run
