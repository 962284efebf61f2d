"""The subcommands that run a job or send one: ``search``, ``train``, ``sweep``, ``submit``.

Each imports what it needs when called, and Ray only for ``--workers >= 1``, a sweep or a
submission, so that ``snas-ray search --help`` and in-process runs never load it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "cmd_search",
    "cmd_submit",
    "cmd_sweep",
    "cmd_train",
    "default_train_out",
    "writing_into",
]

logger = logging.getLogger(__name__)

_SUBMITTABLE = ("search", "sweep", "evaluate", "train", "collect")


@contextlib.contextmanager
def writing_into(out: Path, what: str) -> Iterator[None]:
    """This process as the one writer of ``out`` (a run or sweep folder) for the block.

    The lock is the driver's: Ray workers and sweep trials write inside a folder their driver
    holds. Temp files of interrupted atomic writes are removed once the lock is held.
    """
    from snas_ray.layout import FolderLock, output_folder, remove_stale_temps

    output_folder(out)
    with FolderLock(out, what):
        removed = remove_stale_temps(out)
        if removed:
            logger.info("removed %d temp file(s) of interrupted writes in %s", len(removed), out)
        yield


def cmd_search(args: argparse.Namespace) -> int:
    """``snas-ray search``: runs or resumes a search in-process or on Ray Train workers."""
    from snas_ray.config import load_config
    from snas_ray.errors import SnasRayError
    from snas_ray.layout import RunPaths

    cfg = load_config(args.config, args.overrides)
    out = args.out or Path("runs") / (args.config.stem if args.config else "default")
    options = _launch_options(args)  # flag errors before the folder is locked
    with writing_into(out, "search"):
        paths = RunPaths(out)
        if args.no_resume and any(
            p.exists() for p in (paths.last_checkpoint, paths.previous_checkpoint)
        ):
            raise SnasRayError(f"--out {out} holds a checkpoint (drop --no-resume to resume)")
        if options is not None:  # Ray is imported here only, so in-process runs never load it
            from snas_ray.distributed import run_distributed_search

            result = run_distributed_search(cfg, out, options)
        else:
            from snas_ray.search import run_search

            result = run_search(cfg, out, resume=not args.no_resume)
    keys = ("val_acc", "params", "flops", "mac", "epochs_done")
    print(json.dumps({k: result[k] for k in keys} | {"out": str(out)}))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``snas-ray train``: retrains a genotype from scratch, or tests a retraining checkpoint."""
    from snas_ray.config import load_config
    from snas_ray.errors import SnasRayError

    if args.test:
        from snas_ray.retrain import evaluate_checkpoint

        if args.checkpoint is None or args.config or args.genotype:
            raise SnasRayError("--test takes --checkpoint PATH (and --set, --device), no more")
        result = evaluate_checkpoint(_checkpoint_file(args.checkpoint), args.overrides, args.device)
        print(
            f"test top-1 {result['test_acc']:.4f} top-5 {result['test_acc5']:.4f} "
            f"(model after epoch {result['epoch']} of {result['epochs']})"
        )
        print(json.dumps(result))
        return 0
    if args.checkpoint or args.device:
        raise SnasRayError("--checkpoint and --device go with --test")
    from snas_ray.published import load_genotype

    cfg = load_config(args.config, args.overrides)
    if args.genotype:
        cfg = cfg.replace(**{"train.genotype": args.genotype})
    load_genotype(cfg.train.genotype)  # a bad name or file fails before torch and data load
    out = args.out or default_train_out(cfg.train.genotype)
    options = _launch_options(args)
    with writing_into(out, "train"):
        if options is not None:  # Ray is imported here only
            from snas_ray.distributed import run_distributed_retrain

            result = run_distributed_retrain(cfg, out, options)
        else:
            from snas_ray.retrain import run_retrain

            result = run_retrain(cfg, out)
    keys = ("test_acc", "test_acc5", "best_test_acc", "params", "flops", "epochs_done")
    print(json.dumps({k: result[k] for k in keys} | {"out": str(out)}))
    return 0


def default_train_out(genotype: str) -> Path:
    """``train``'s default run folder: ``runs/train-NAME`` for a registry genotype; for a file,
    its folder and stem plus a hash of its absolute path, so two files never share a folder
    (``runs/digits-search/genotype.json`` -> ``runs/train-digits-search-genotype-1a2b3c``)."""
    from snas_ray.config import is_genotype_file

    if not is_genotype_file(genotype):
        return Path("runs") / f"train-{genotype}"
    path = Path(os.path.abspath(Path(genotype).expanduser()))
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:6]
    name = "-".join(part for part in (path.parent.name, path.stem, digest) if part)
    return Path("runs") / f"train-{name}"


def _checkpoint_file(path: Path) -> Path:
    # `train --test` takes the checkpoint or the run folder that holds it.
    from snas_ray.errors import CheckpointError
    from snas_ray.layout import RunPaths

    if not path.is_dir():
        return path
    last = RunPaths(path).last_checkpoint
    if not last.is_file():
        raise CheckpointError(f"--checkpoint {path}: a folder without {last.relative_to(path)}")
    return last


def _launch_options(args: argparse.Namespace) -> Any:
    """``LaunchOptions`` from the Ray Train flags ``search`` and ``train`` share; None for an
    in-process run (``--workers 0``), which refuses the flags that only Ray reads."""
    from snas_ray.errors import SnasRayError

    ray_flags = ("gpus_per_worker", "address", "storage", "max_failures")
    if args.workers < 0:
        raise SnasRayError(f"--workers must be >= 0, got {args.workers}")
    if args.workers == 0:
        if any(getattr(args, f) is not None for f in ray_flags):
            raise SnasRayError(
                "--gpus-per-worker/--address/--storage/--max-failures need --workers >= 1"
            )
        return None
    from snas_ray.distributed import LaunchOptions

    return LaunchOptions(
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        address=args.address,
        storage=args.storage,
        max_failures=3 if args.max_failures is None else args.max_failures,
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    """``snas-ray sweep``: runs the config's sweep on Ray Tune, then collects it."""
    from snas_ray.sweep_spec import load_sweep

    spec = load_sweep(args.config, args.overrides)  # validated before Ray is imported
    out = args.out or Path("runs") / (args.config.stem if args.config else "sweep")
    with writing_into(out, "sweep"):
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


def cmd_submit(args: argparse.Namespace) -> int:
    """``snas-ray submit``: checks a command line here, then sends it to a cluster as a job."""
    from snas_ray.cli.parser import build_parser
    from snas_ray.cli.submitted import check_submission
    from snas_ray.errors import SnasRayError

    job = args.job[1:] if args.job[:1] == ["--"] else args.job
    if not job or job[0] not in _SUBMITTABLE:
        raise SnasRayError(f"submit needs -- and one of: {', '.join(_SUBMITTABLE)} (got {job[:1]})")
    inner = build_parser().parse_args(job)  # flag typos fail here, not on the cluster
    check_submission(inner, args.working_dir)  # paths and config, by cli.submitted's rule
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
