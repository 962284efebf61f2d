"""The ``snas-ray`` argument parser: one subparser per command, shared flags added once."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["build_parser", "version_line"]

_ADDRESS_HELP = "Ray cluster to join: auto or HOST:PORT (default: start a local one)"


def _folder(text: str) -> Path:
    # Path("") is ".", so an empty --out (an unset shell variable) would write into the cwd.
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder, got an empty string")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="snas-ray",
        description="Stochastic Neural Architecture Search, from laptop to cluster.",
    )
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_search, _sweep, _evaluate, _submit, _bench, _genotype, _cost, _collect, _train):
        add(sub)
    return parser


def version_line() -> str:
    """``snas-ray 0.1.0 (torch 2.14.1, ray 2.60.0, python 3.11.9)``: installed versions, read
    from package metadata, so ``--version`` imports neither torch nor Ray."""
    import platform
    from importlib import metadata

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    deps = f"torch {installed('torch')}, ray {installed('ray')}"
    return f"snas-ray {installed('snas-ray')} ({deps}, python {platform.python_version()})"


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


def _add_ray_train_args(p: argparse.ArgumentParser, job: str) -> None:
    """The flags that run ``search`` or ``train`` on Ray Train workers (one set for both)."""
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help=f"Ray Train workers for the {job}, one per GPU (gloo on CPU); "
        "0 = in-process, no Ray (default)",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        help="GPUs per worker (default: 1 when the cluster has GPUs now and device is not cpu; "
        "on an autoscaling cluster give 1 so it adds GPU nodes)",
    )
    p.add_argument("--address", help=_ADDRESS_HELP)
    p.add_argument(
        "--storage",
        help="Ray Train storage path or URI for checkpoints (default: OUT/ray; "
        "multi-node runs need shared storage); same --out and --storage resume",
    )
    p.add_argument(
        "--max-failures",
        type=int,
        help="worker-group restarts from the last checkpoint (default 3; -1 = unlimited)",
    )


def _search(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("search", help="run (or resume) an SNAS architecture search")
    _add_config_args(s)
    s.add_argument("--out", type=_folder, help="run folder (default: runs/<config name>)")
    s.add_argument(
        "--no-resume",
        action="store_true",
        help="refuse to continue from a checkpoint already in --out",
    )
    _add_ray_train_args(s, "search")


def _sweep(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser(
        "sweep", help="a population of searches on Ray Tune (the config's sweep: section)"
    )
    _add_config_args(w)
    w.add_argument("--out", type=_folder, help="sweep folder (default: runs/<config name>)")
    w.add_argument(
        "--resume",
        action="store_true",
        help="require an interrupted sweep in --out to continue (re-running continues anyway)",
    )
    w.add_argument("--address", help=_ADDRESS_HELP)
    w.add_argument(
        "--storage",
        help="Ray Train storage path or URI for trials with workers_per_trial > 1 "
        "(default: each trial's run folder)",
    )
    w.add_argument("--no-collect", action="store_true", help="skip the collector at the end")
    w.add_argument("--verbose", action="store_true", help="show every trial's own log lines")


def _evaluate(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "evaluate",
        help="retrain the front and cost-matched random genotypes over seeds (Ray Tune)",
        description="Retrains the K best genotypes of a sweep's Pareto front and N random "
        "genotypes matched to each in cost, S seeds each, as one Tune trial per retraining; "
        "writes evaluation.json/.md/.png with a verdict on search against random.",
    )
    e.add_argument("sweep_dir", type=Path, help="sweep folder (or any folder of search runs)")
    _add_config_args(e)  # --config: a retrain config plus evaluate: and tune: sections
    e.add_argument("--top", type=int, help="front genotypes, most accurate first (0: all)")
    e.add_argument("--random", type=int, help="cost-matched random genotypes per front genotype")
    e.add_argument("--seeds", type=int, help="retrainings per genotype")
    e.add_argument(
        "--cost", choices=("params", "flops", "mac"), help="metric random genotypes match in"
    )
    e.add_argument("--out", type=Path, help="evaluation folder (default: SWEEP_DIR/evaluate)")
    e.add_argument(
        "--resume",
        action="store_true",
        help="require an interrupted evaluation in --out (re-running continues anyway)",
    )
    e.add_argument("--address", help=_ADDRESS_HELP)
    e.add_argument("--storage", help="Ray Train storage for trials with workers_per_trial > 1")
    e.add_argument("--verbose", action="store_true", help="show every trial's own log lines")


def _submit(sub: argparse._SubParsersAction) -> None:
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


def _bench(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="time the search step; prints JSON")
    _add_config_args(b)
    b.add_argument(
        "--device", help="cpu, cuda or cuda:N (default: the config's device; auto = CUDA if any)"
    )
    b.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    b.add_argument("--image-size", type=int, default=32, help="image side (default 32)")
    b.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    b.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    b.add_argument("--repeats", type=int, default=3, help="alternated timings (default 3)")
    b.add_argument(
        "--precision", help="fp32, bf16 or fp16 (default: the config's search.precision)"
    )
    b.add_argument("--compile", action="store_true", help="torch.compile the supernet")
    b.add_argument(
        "--compile-backend",
        choices=("inductor", "aot_eager"),
        default="inductor",
        help="inductor (default) or aot_eager (graph capture only: a quick check)",
    )
    b.add_argument(
        "--matrix",
        action="store_true",
        help="fp32 and bf16, eager and compiled, in one call; prints one table",
    )
    b.add_argument(
        "--no-reference", action="store_true", help="skip the reference-style step comparison"
    )
    b.add_argument(
        "--ray-overhead",
        action="store_true",
        help="instead: time --steps epochs (config data) in-process vs a 1-worker TorchTrainer",
    )


def _genotype(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("genotype", help="print a genotype (registry name or JSON file)")
    g.add_argument("genotype", nargs="?", help="name or path; omit to list the registry")
    g.add_argument("--json", action="store_true", help="print JSON instead of text")


def _cost(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "cost",
        help="params, FLOPs (multiply-adds) and MAC (memory access) of a genotype's network",
    )
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


def _collect(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("collect", help="rank the runs of a sweep folder; Pareto front and report")
    k.add_argument("sweep_dir", type=Path, help="folder holding run folders (searched recursively)")
    k.add_argument("--out", type=_folder, help="output folder (default: SWEEP_DIR/collect)")
    k.add_argument("--metric", default="val_acc", help="result.json accuracy key (default val_acc)")
    k.add_argument(
        "--cost",
        choices=("params", "flops", "mac"),
        default="params",
        help="cost axis of the Pareto front: params, flops (multiply-adds) or mac (memory "
        "access, not multiply-accumulates); default params",
    )
    k.add_argument("--top", type=int, default=10, help="rows printed (default 10)")
    k.add_argument(
        "--retrain",
        type=int,
        default=0,
        metavar="K",
        help="shortcut for `evaluate SWEEP_DIR --top K --cost COST` (random baselines and "
        "seeds from the config's evaluate: section), then collect again",
    )
    k.add_argument(
        "--retrain-config", type=Path, metavar="FILE", help="evaluate config for --retrain"
    )


def _train(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="retrain a genotype from scratch, or --test a checkpoint")
    _add_config_args(t)
    t.add_argument("--genotype", help="registry name (e.g. SNAS_mild) or genotype.json file")
    t.add_argument(
        "--out",
        type=_folder,
        help="run folder (default: runs/train-<name> for a registry genotype, "
        "runs/train-<folder>-<file stem>-<hash> for a genotype file)",
    )
    t.add_argument("--test", action="store_true", help="evaluate --checkpoint on the test split")
    t.add_argument(
        "--checkpoint",
        type=Path,
        help="for --test: a retraining checkpoint, or its run folder (uses checkpoints/last.pt)",
    )
    t.add_argument("--device", help="device for --test (default: the saved config's)")
    _add_ray_train_args(t, "retraining")
