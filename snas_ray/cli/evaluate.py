"""``snas-ray evaluate`` and the machinery ``collect --retrain K`` shares with it.

The config is validated before Ray is imported; Ray is imported only to run the retrainings.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

__all__ = ["cmd_evaluate", "evaluate_front", "sweep_defaults"]


def sweep_defaults(sweep_dir: Path) -> dict[str, Any]:
    """Without ``--config``: the sweep's data section, device and seed (from its sweep.yaml),
    so the retrainings use the search's dataset; every other field keeps its default."""
    from snas_ray.layout import SweepPaths

    spec = SweepPaths(sweep_dir).spec
    if not spec.is_file():
        return {}
    tree = yaml.safe_load(spec.read_text()) or {}
    return {k: tree[k] for k in ("data", "device", "seed") if k in tree}


def evaluate_front(
    sweep_dir: Path,
    config: Path | None,
    overrides: list[str],
    *,
    out: Path | None = None,
    resume: bool = False,
    address: str | None = None,
    storage: str | None = None,
    verbose: bool = False,
) -> Path:
    """Plan, run and report an evaluation of ``sweep_dir``'s front; returns evaluation.md."""
    from snas_ray.evaluate_spec import load_evaluate
    from snas_ray.layout import EvaluatePaths

    defaults = None if config else sweep_defaults(sweep_dir)
    spec = load_evaluate(config, overrides, defaults=defaults)  # before Ray is imported
    from snas_ray.cli.jobs import writing_into
    from snas_ray.distributed.evaluate import run_evaluation
    from snas_ray.errors import EvaluationError
    from snas_ray.results.evaluation_report import format_evaluation

    if not Path(sweep_dir).is_dir():
        raise EvaluationError(f"evaluate: {sweep_dir} is not a folder")
    folder = Path(out or Path(sweep_dir) / "evaluate")
    with writing_into(folder, "evaluation"):  # one evaluation per folder at a time
        evaluation = run_evaluation(
            spec,
            sweep_dir,
            out,
            resume=True if resume else None,
            address=address,
            storage=storage,
            verbose=verbose,
        )
    print(format_evaluation(evaluation))
    return EvaluatePaths(folder).markdown


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``snas-ray evaluate``: retrains the front and cost-matched random genotypes."""
    flags = {"top": args.top, "random": args.random, "seeds": args.seeds, "cost": args.cost}
    overrides = list(args.overrides)
    overrides += [f"evaluate.{k}={v}" for k, v in flags.items() if v is not None]
    report = evaluate_front(
        args.sweep_dir,
        args.config,
        overrides,
        out=args.out,
        resume=args.resume,
        address=args.address,
        storage=args.storage,
        verbose=args.verbose,
    )
    print(f"report: {report}")
    return 0
