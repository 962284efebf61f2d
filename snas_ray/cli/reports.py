"""The subcommands that print a report: ``genotype``, ``cost``, ``collect`` and ``bench``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

__all__ = ["cmd_bench", "cmd_collect", "cmd_cost", "cmd_genotype"]


def cmd_genotype(args: argparse.Namespace) -> int:
    """``snas-ray genotype``: prints a genotype as text or JSON, or lists the registry."""
    from snas_ray.published import REGISTRY, load_genotype

    if not args.genotype:
        for name in REGISTRY:
            print(name)
        return 0
    genotype = load_genotype(args.genotype)
    print(json.dumps(genotype.to_dict(), indent=2) if args.json else genotype.format())
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    """``snas-ray cost``: params, FLOPs (multiply-adds) and MAC (memory access) of a genotype's
    evaluation network."""
    from snas_ray.config import check_network_size
    from snas_ray.errors import ConfigError, SnasRayError
    from snas_ray.published import load_genotype
    from snas_ray.results import format_count
    from snas_ray.space.measure import COST_SETTINGS, evaluation_cost

    genotype = load_genotype(args.genotype)
    setting = COST_SETTINGS[args.dataset]
    for name in ("init_channels", "layers"):
        if getattr(args, name) is not None:
            setting = dataclasses.replace(setting, **{name: getattr(args, name)})
    try:  # the networks search and train would build, no others
        check_network_size(setting.layers, setting.init_channels, prefix="")
    except ConfigError as exc:
        flag = exc.field_name.replace("_", "-")
        raise SnasRayError(f"--{flag} {exc.message}, as for space.* and train.*") from None
    cost = evaluation_cost(genotype, setting, auxiliary=args.auxiliary)
    summary = {"genotype": args.genotype} | dataclasses.asdict(setting)
    summary |= {"auxiliary": args.auxiliary} | dataclasses.asdict(cost)
    if args.json:
        print(json.dumps(summary))
        return 0
    net = "NetworkImageNet" if setting.imagenet else "NetworkCIFAR"
    side = setting.image_size
    rows = [
        ("genotype", args.genotype),
        ("network", f"{net}, C={setting.init_channels}, {setting.layers} cells"),
        ("input", f"{args.dataset}: 3x{side}x{side}, {setting.num_classes} classes"),
        ("params", f"{cost.params:,} ({format_count(cost.params)}, without auxiliary head)"),
    ]
    if args.auxiliary:
        rows.append(("params + aux", f"{cost.params_aux:,} ({format_count(cost.params_aux)})"))
    rows += [
        ("FLOPs", f"{cost.flops:,} ({format_count(cost.flops)} multiply-adds per image)"),
        # MAC as in the SNAS paper: memory access cost, not thop's multiply-accumulates.
        ("MAC", f"{cost.mac:,} ({format_count(cost.mac)} memory access: elements read + written)"),
    ]
    for key, value in rows:
        print(f"{key:<13} {value}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    """``snas-ray collect``: ranks a sweep folder's runs; ``--retrain K`` is a shortcut for
    ``snas-ray evaluate SWEEP_DIR --top K`` (into SWEEP_DIR/evaluate), then collects again."""
    from snas_ray.errors import SnasRayError
    from snas_ray.results import collect

    for flag in ("top", "retrain"):
        if getattr(args, flag) < 0:
            raise SnasRayError(f"--{flag} must be >= 0, got {getattr(args, flag)}")

    def run() -> None:
        lb = collect(args.sweep_dir, metric=args.metric, cost=args.cost)
        if not lb.rows:  # nothing to rank: say why instead of writing an empty report
            found = "no run folders"
            if lb.skipped:
                first = lb.skipped[0]
                found = f"{len(lb.skipped)} skipped, e.g. {first.run}: {first.reason}"
            raise SnasRayError(f"collect: no finished run to rank in {args.sweep_dir} ({found})")
        report = lb.write(args.out or args.sweep_dir / "collect")
        print(lb.format_table(args.top))
        print(f"report: {report}")

    run()
    if args.retrain > 0:
        from snas_ray.cli.evaluate import evaluate_front

        keys = {"top": args.retrain, "metric": args.metric, "cost": args.cost}
        overrides = [f"evaluate.{k}={v}" for k, v in keys.items()]
        report = evaluate_front(args.sweep_dir, args.retrain_config, overrides)
        print(f"evaluation: {report}")
        run()  # fold the retrained accuracies in, as columns of their own
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``snas-ray bench``: times the search step (or Ray's overhead) and prints JSON."""
    import torch

    from snas_ray.bench import bench_matrix, bench_search_step, format_table
    from snas_ray.config import load_config
    from snas_ray.engine.runfolder import resolve_device
    from snas_ray.errors import SnasRayError

    cfg = load_config(args.config, args.overrides)
    if args.ray_overhead:  # imports Ray, so only on request
        from snas_ray.distributed import bench_overhead

        device = str(resolve_device(args.device or cfg.device))
        overhead = bench_overhead(cfg, epochs=args.steps, device=device)
        print(json.dumps(overhead | {"torch": torch.__version__}))
        return 0
    options = {
        "batch_size": args.batch,
        "image_size": args.image_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "compare_reference": not args.no_reference,
        "compile_backend": args.compile_backend,
        "progress": lambda line: print(line, file=sys.stderr, flush=True),
    }
    device = resolve_device(args.device or cfg.device)
    versions = {"torch": torch.__version__}
    if args.matrix:
        if args.precision or args.compile:
            raise SnasRayError("bench: --matrix runs every precision and mode; drop the others")
        results = bench_matrix(cfg, device, **options)
        print(format_table(results))
        print(json.dumps([r.to_dict() | versions for r in results]))
        return 0
    if args.precision is not None:
        cfg = cfg.replace(**{"search.precision": args.precision})
    if args.compile:
        cfg = cfg.replace(**{"search.compile": True})
    elif args.compile_backend != "inductor":
        raise SnasRayError("bench: --compile-backend needs --compile (or --matrix)")
    result = bench_search_step(cfg, device, **options)
    print(json.dumps(result.to_dict() | versions))
    return 0
