"""``snas-ray`` command line: search | sweep | submit | bench | genotype | cost | collect | train.

Only this module sets up logging handlers. Errors users can fix (config, data, checkpoint,
genotype) print one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

logger = logging.getLogger("snas_ray")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML experiment config (see experiments/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config field, e.g. --set cost.resource_lambda=1e-3 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="snas-ray",
        description="Stochastic Neural Architecture Search, from laptop to cluster.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="run (or resume) an SNAS architecture search")
    _add_config_args(s)
    s.add_argument("--out", type=Path, help="run folder (default: runs/<config name>)")
    s.add_argument(
        "--no-resume",
        action="store_true",
        help="refuse to continue from a checkpoint already in --out",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Ray Train workers, one per GPU (gloo on CPU); 0 = in-process, no Ray (default)",
    )
    s.add_argument(
        "--gpus-per-worker",
        type=float,
        help="GPUs per worker (default: 1 when the cluster has GPUs and device is not cpu)",
    )
    s.add_argument(
        "--address",
        help="Ray cluster to join: auto or HOST:PORT (default: start a local one)",
    )
    s.add_argument(
        "--storage",
        help="Ray Train storage path or URI for checkpoints (default: OUT/ray; "
        "multi-node runs need shared storage); same --out and --storage resume",
    )
    s.add_argument(
        "--max-failures",
        type=int,
        default=3,
        help="worker-group restarts from the last checkpoint (default 3; -1 = unlimited)",
    )

    w = sub.add_parser(
        "sweep", help="a population of searches on Ray Tune (the config's sweep: section)"
    )
    _add_config_args(w)
    w.add_argument("--out", type=Path, help="sweep folder (default: runs/<config name>)")
    w.add_argument(
        "--resume",
        action="store_true",
        help="require an interrupted sweep in --out to continue (re-running continues anyway)",
    )
    w.add_argument(
        "--address", help="Ray cluster to join: auto or HOST:PORT (default: start a local one)"
    )
    w.add_argument(
        "--storage",
        help="Ray Train storage path or URI for trials with workers_per_trial > 1 "
        "(default: each trial's run folder)",
    )
    w.add_argument("--no-collect", action="store_true", help="skip the collector at the end")
    w.add_argument("--verbose", action="store_true", help="show every trial's own log lines")

    j = sub.add_parser(
        "submit",
        help="send a search/sweep/train/collect command to a running Ray cluster as a job",
        description="Example: snas-ray submit --address http://127.0.0.1:8265 -- "
        "sweep --config experiments/cifar10-sweep.yaml --out /mnt/shared/sweeps/cifar10",
    )
    j.add_argument(
        "--address",
        help="the cluster's dashboard URL (default: $RAY_API_SERVER_ADDRESS, else "
        "http://127.0.0.1:8265, e.g. an SSH tunnel or kubectl port-forward)",
    )
    j.add_argument(
        "--working-dir", type=Path, default=Path("."), help="project folder to upload (default .)"
    )
    j.add_argument("--no-wait", action="store_true", help="print the job id instead of its log")
    j.add_argument("job", nargs=argparse.REMAINDER, help="-- then a snas-ray command line")

    b = sub.add_parser("bench", help="time the search step; prints JSON")
    _add_config_args(b)
    b.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    b.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    b.add_argument("--image-size", type=int, default=32, help="image side (default 32)")
    b.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    b.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    b.add_argument(
        "--no-reference", action="store_true", help="skip the reference-style step comparison"
    )
    b.add_argument(
        "--ray-overhead",
        action="store_true",
        help="instead: time --steps epochs (config data) in-process vs a 1-worker TorchTrainer",
    )

    g = sub.add_parser("genotype", help="print a genotype (registry name or JSON file)")
    g.add_argument("genotype", nargs="?", help="name or path; omit to list the registry")
    g.add_argument("--json", action="store_true", help="print JSON instead of text")

    c = sub.add_parser("cost", help="params, FLOPs and MAC of a genotype's evaluation network")
    c.add_argument("genotype", help="registry name (e.g. SNAS_mild) or genotype JSON file")
    c.add_argument(
        "--dataset",
        choices=("cifar10", "imagenet", "digits"),
        default="cifar10",
        help="network and input: cifar10 C=36 L=20 32px; imagenet C=48 L=14 224px (mobile); "
        "digits C=8 L=5 8px (experiments/digits-search.yaml). Default cifar10",
    )
    c.add_argument("--init-channels", type=int, help="override the dataset's C")
    c.add_argument("--layers", type=int, help="override the dataset's number of cells")
    c.add_argument("--auxiliary", action="store_true", help="include the auxiliary head")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")

    k = sub.add_parser("collect", help="rank the runs of a sweep folder; Pareto front and report")
    k.add_argument("sweep_dir", type=Path, help="folder holding run folders (searched recursively)")
    k.add_argument("--out", type=Path, help="output folder (default: SWEEP_DIR/collect)")
    k.add_argument("--metric", default="val_acc", help="result.json accuracy key (default val_acc)")
    k.add_argument(
        "--cost",
        choices=("params", "flops", "mac"),
        default="params",
        help="cost axis of the Pareto front (default params)",
    )
    k.add_argument("--top", type=int, default=10, help="rows printed (default 10)")
    k.add_argument(
        "--retrain",
        type=int,
        default=0,
        metavar="K",
        help="retrain the K most accurate front genotypes into RUN/retrain, then collect again",
    )
    k.add_argument("--retrain-config", type=Path, metavar="FILE", help="config for the retraining")

    t = sub.add_parser("train", help="retrain a genotype from scratch, or --test a checkpoint")
    _add_config_args(t)
    t.add_argument("--genotype", help="registry name (e.g. SNAS_mild) or genotype.json file")
    t.add_argument("--out", type=Path, help="run folder (default: runs/train-<genotype>)")
    t.add_argument("--test", action="store_true", help="evaluate --checkpoint on the test split")
    t.add_argument("--checkpoint", type=Path, help="retraining checkpoint for --test")
    t.add_argument("--device", help="device for --test (default: the saved config's)")
    t.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Ray Train workers, as for search (gloo on CPU); 0 = in-process, no Ray (default)",
    )
    return parser


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )


def _cmd_search(args: argparse.Namespace) -> int:
    from snas_ray.config import load_config
    from snas_ray.layout import RunPaths
    from snas_ray.search import run_search

    cfg = load_config(args.config, args.overrides)
    out = args.out or Path("runs") / (args.config.stem if args.config else "default")
    if args.no_resume and RunPaths(out).last_checkpoint.exists():
        from snas_ray.errors import SnasRayError

        raise SnasRayError(f"--out {out} already holds a checkpoint (drop --no-resume to resume)")
    ray_flags = ("gpus_per_worker", "address", "storage")
    if args.workers < 0 or (args.workers == 0 and any(getattr(args, f) for f in ray_flags)):
        from snas_ray.errors import SnasRayError

        raise SnasRayError("--workers must be >= 1 with --gpus-per-worker/--address/--storage")
    if args.workers >= 1:  # Ray is imported here only, so in-process runs never load it
        from snas_ray.distributed import LaunchOptions, run_distributed_search

        options = LaunchOptions(
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            address=args.address,
            storage=args.storage,
            max_failures=args.max_failures,
        )
        result = run_distributed_search(cfg, out, options)
    else:
        result = run_search(cfg, out, resume=not args.no_resume)
    print(
        json.dumps(
            {k: result[k] for k in ("val_acc", "params", "flops", "mac", "epochs_done")}
            | {"out": str(out)}
        )
    )
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from snas_ray.sweep_spec import load_sweep

    spec = load_sweep(args.config, args.overrides)  # validated before Ray is imported
    out = args.out or Path("runs") / (args.config.stem if args.config else "sweep")
    from snas_ray.distributed.sweep import format_rows, run_sweep

    rows = run_sweep(
        spec,
        out,
        resume=True if args.resume else None,
        address=args.address,
        storage=args.storage,
        collect=not args.no_collect,
        verbose=args.verbose,
    )
    print(format_rows(rows))
    if not args.no_collect:
        print(f"report: {Path(out) / 'collect' / 'report.md'}")
    return 0


_SUBMITTABLE = ("search", "sweep", "train", "collect")


def _cmd_submit(args: argparse.Namespace) -> int:
    import os

    from snas_ray.config import load_config
    from snas_ray.errors import SnasRayError

    job = args.job[1:] if args.job[:1] == ["--"] else args.job
    if not job or job[0] not in _SUBMITTABLE:
        raise SnasRayError(f"submit needs -- and one of: {', '.join(_SUBMITTABLE)} (got {job[:1]})")
    inner = build_parser().parse_args(job)  # flag typos fail here, not on the cluster
    out = getattr(inner, "out", None)
    if inner.command in ("search", "sweep", "train") and (out is None or not out.is_absolute()):
        # The job runs in a temporary copy of the project, deleted when it ends.
        raise SnasRayError(
            f"submit {inner.command} needs an absolute --out on storage the cluster keeps "
            "(e.g. --out /mnt/shared/sweeps/NAME)"
        )
    if getattr(inner, "config", None) is not None:  # config errors fail here too
        config = inner.config if inner.config.is_absolute() else args.working_dir / inner.config
        if inner.command == "sweep":
            from snas_ray.sweep_spec import load_sweep

            load_sweep(config, inner.overrides)
        elif inner.command == "search":
            load_config(config, inner.overrides)
    address = args.address or os.environ.get("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265")
    from snas_ray.distributed.submit import submit

    job_id = submit(
        job,
        address=address,
        working_dir=args.working_dir,
        wait=not args.no_wait,
        on_log=lambda text: print(text, end="", flush=True),
    )
    if args.no_wait:
        print(f"{job_id}\nfollow with: ray job logs -f --address {address} {job_id}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from snas_ray.bench import bench_search_step
    from snas_ray.config import load_config
    from snas_ray.engine.runfolder import resolve_device

    cfg = load_config(args.config, args.overrides)
    if args.ray_overhead:  # imports Ray, so only on request
        from snas_ray.distributed import bench_overhead

        overhead = bench_overhead(cfg, epochs=args.steps, device=str(resolve_device(args.device)))
        print(json.dumps(overhead | {"torch": torch.__version__}))
        return 0
    result = bench_search_step(
        cfg,
        resolve_device(args.device),
        batch_size=args.batch,
        image_size=args.image_size,
        steps=args.steps,
        warmup=args.warmup,
        compare_reference=not args.no_reference,
    )
    print(json.dumps(result.to_dict() | {"torch": torch.__version__}))
    return 0


def _cmd_genotype(args: argparse.Namespace) -> int:
    from snas_ray.genotype import REGISTRY, load_genotype

    if not args.genotype:
        for name in REGISTRY:
            print(name)
        return 0
    genotype = load_genotype(args.genotype)
    print(json.dumps(genotype.to_dict(), indent=2) if args.json else genotype.format())
    return 0


def _cmd_cost(args: argparse.Namespace) -> int:
    import dataclasses

    from snas_ray.errors import SnasRayError
    from snas_ray.genotype import load_genotype
    from snas_ray.results import format_count
    from snas_ray.space.measure import COST_SETTINGS, evaluation_cost

    genotype = load_genotype(args.genotype)
    setting = COST_SETTINGS[args.dataset]
    for name in ("init_channels", "layers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SnasRayError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if value is not None:
            setting = dataclasses.replace(setting, **{name: value})
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
        ("MAC", f"{cost.mac:,} ({format_count(cost.mac)} elements read + written per image)"),
    ]
    for key, value in rows:
        print(f"{key:<13} {value}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from snas_ray.config import load_config
    from snas_ray.errors import SnasRayError

    if args.test:
        from snas_ray.retrain import evaluate_checkpoint

        if args.checkpoint is None or args.config or args.genotype:
            raise SnasRayError("--test takes --checkpoint PATH (and --set, --device), no more")
        result = evaluate_checkpoint(args.checkpoint, args.overrides, args.device)
        print(f"test top-1 {result['test_acc']:.4f} top-5 {result['test_acc5']:.4f}")
        print(json.dumps(result))
        return 0
    if args.checkpoint or args.device:
        raise SnasRayError("--checkpoint and --device go with --test")
    from snas_ray.genotype import load_genotype

    cfg = load_config(args.config, args.overrides)
    if args.genotype:
        cfg = cfg.replace(**{"train.genotype": args.genotype})
    load_genotype(cfg.train.genotype)  # a bad name or file fails before torch and data load
    if args.workers < 0:
        raise SnasRayError(f"--workers must be >= 0, got {args.workers}")
    out = args.out or Path("runs") / f"train-{Path(cfg.train.genotype).stem}"
    if args.workers >= 1:  # Ray is imported here only
        from snas_ray.distributed import LaunchOptions, run_distributed_retrain

        result = run_distributed_retrain(cfg, out, LaunchOptions(workers=args.workers))
    else:
        from snas_ray.retrain import run_retrain

        result = run_retrain(cfg, out)
    keys = ("test_acc", "test_acc5", "best_test_acc", "params", "flops", "epochs_done")
    print(json.dumps({k: result[k] for k in keys} | {"out": str(out)}))
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    from snas_ray.results import Leaderboard, collect

    def run() -> Leaderboard:
        lb = collect(args.sweep_dir, metric=args.metric, cost=args.cost)
        report = lb.write(args.out or args.sweep_dir / "collect")
        print(lb.format_table(args.top))
        print(f"report: {report}")
        return lb

    lb = run()
    if args.retrain > 0:
        lb.retrain(args.retrain, config=args.retrain_config)
        run()  # fold the retrained accuracies in
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``snas-ray`` console script."""
    args = build_parser().parse_args(argv)
    _setup_logging()
    from snas_ray.errors import GenotypeError, SnasRayError

    commands = {
        "search": _cmd_search,
        "sweep": _cmd_sweep,
        "submit": _cmd_submit,
        "bench": _cmd_bench,
        "genotype": _cmd_genotype,
        "cost": _cmd_cost,
        "collect": _cmd_collect,
        "train": _cmd_train,
    }
    try:
        return commands[args.command](args)
    except (SnasRayError, GenotypeError) as exc:
        print(f"snas-ray: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("snas-ray: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
