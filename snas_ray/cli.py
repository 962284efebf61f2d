"""``snas-ray`` command line: search | bench | genotype.

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
        prog="snas-ray", description="Stochastic Neural Architecture Search, from laptop to cluster."
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

    g = sub.add_parser("genotype", help="print a genotype (registry name or JSON file)")
    g.add_argument("genotype", nargs="?", help="name or path; omit to list the registry")
    g.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )


def _cmd_search(args: argparse.Namespace) -> int:
    from snas_ray.checkpoint import RunPaths
    from snas_ray.config import load_config
    from snas_ray.runfolder import run_search

    cfg = load_config(args.config, args.overrides)
    out = args.out or Path("runs") / (args.config.stem if args.config else "default")
    if args.no_resume and RunPaths(out).last_checkpoint.exists():
        from snas_ray.config import SnasRayError

        raise SnasRayError(f"--out {out} already holds a checkpoint (drop --no-resume to resume)")
    result = run_search(cfg, out, resume=not args.no_resume)
    print(
        json.dumps(
            {k: result[k] for k in ("val_acc", "params", "flops", "mac", "epochs_done")}
            | {"out": str(out)}
        )
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from snas_ray.bench import bench_search_step
    from snas_ray.config import load_config
    from snas_ray.runfolder import resolve_device

    cfg = load_config(args.config, args.overrides)
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``snas-ray`` console script."""
    args = build_parser().parse_args(argv)
    _setup_logging()
    from snas_ray.config import SnasRayError
    from snas_ray.genotype import GenotypeError

    commands = {"search": _cmd_search, "bench": _cmd_bench, "genotype": _cmd_genotype}
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
