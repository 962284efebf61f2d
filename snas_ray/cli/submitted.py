"""What ``snas-ray submit`` checks on this machine before a command goes to a cluster.

The rule for paths: a submitted command runs on the head node in a temporary copy of
``--working-dir``, deleted when the job ends, which leaves out the folders the upload excludes
(``distributed.submit.EXCLUDES``: ``.venv``, ``.git``, ``runs``, ``data``, ...). So relative
paths in the command and in its config are read inside that copy: ``--out`` and ``--storage``
must be absolute (results would be deleted with it), and any other relative file or folder must
be in the upload. A ``data.root`` is checked where the dataset is read from files (CIFAR-10
without download, ImageNet); a relative CIFAR-10 root with ``data.download: true`` is downloaded
into the job's copy, once per job and node (an absolute root on shared storage downloads once).
"""

from __future__ import annotations

import argparse
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from snas_ray.errors import SnasRayError

__all__ = ["check_submission"]

_FILE_FLAGS = ("config", "checkpoint", "retrain_config")  # Path-valued flags read on the cluster


def check_submission(inner: argparse.Namespace, working_dir: Path) -> None:
    """Refuse a parsed ``search|sweep|evaluate|train|collect`` command that cannot work as a job.

    Raises:
        SnasRayError: naming the flag or config field and what to give instead.
    """
    for flag in ("out", "storage"):
        value = getattr(inner, flag, None)
        writes = inner.command not in ("collect", "evaluate") and not getattr(inner, "test", False)
        if flag == "out" and value is None and writes:
            raise SnasRayError(
                f"submit {inner.command} needs an absolute --out on storage the cluster keeps "
                "(e.g. --out /mnt/shared/sweeps/NAME)"
            )
        if value is not None and "://" not in str(value) and not Path(value).is_absolute():
            raise SnasRayError(
                f"submit {inner.command} needs an absolute --{flag} on storage the cluster keeps "
                f"(e.g. /mnt/shared/...): {value} would land in the job's temporary copy of the "
                "project, deleted when the job ends"
            )
    if inner.command == "evaluate" and not Path(inner.sweep_dir).is_absolute():
        # It reads the sweep and, without --out, writes its evaluate/ folder inside it.
        raise SnasRayError(
            f"submit evaluate needs an absolute SWEEP_DIR on storage the cluster keeps "
            f"(e.g. /mnt/shared/sweeps/NAME): {inner.sweep_dir} would be read in the job's "
            "temporary copy of the project"
        )
    for flag in _FILE_FLAGS:
        value = getattr(inner, flag, None)
        if value is not None:
            _in_upload(f"--{flag.replace('_', '-')}", Path(value), working_dir)
    cfg = _load(inner, working_dir)
    if cfg is not None:
        _check_config_paths(cfg, working_dir, train=inner.command == "train")
    if inner.command == "collect":
        _in_upload("SWEEP_DIR", Path(inner.sweep_dir), working_dir)


def _in_upload(what: str, path: Path, working_dir: Path) -> None:
    """A relative ``path`` must exist in ``working_dir`` and not under an excluded folder."""
    from snas_ray.distributed.submit import EXCLUDES

    if path.expanduser().is_absolute():
        return  # read on the cluster as given (shared storage); cannot be checked from here
    excluded = [part for part in path.parts if any(fnmatch(part, p) for p in EXCLUDES)]
    if excluded:
        raise SnasRayError(
            f"submit: {what} {path} is relative and under {excluded[0]}/, which is not uploaded: "
            "put it on storage the cluster sees and give its absolute path"
        )
    if not (working_dir / path).exists():
        raise SnasRayError(
            f"submit: {what} {path} is not in --working-dir {working_dir} (relative paths are "
            "read in the job's copy of it)"
        )


def _load(inner: argparse.Namespace, working_dir: Path) -> Any:
    # The submitted command's config as the cluster will load it (relative to working_dir);
    # config errors fail here too.
    from snas_ray.config import load_config
    from snas_ray.sweep_spec import load_sweep

    config = getattr(inner, "config", None)
    if config is not None and not config.is_absolute():
        config = working_dir / config
    if inner.command == "sweep":
        return load_sweep(config, inner.overrides).base if config is not None else None
    if inner.command == "evaluate":
        from snas_ray.evaluate_spec import load_evaluate

        return load_evaluate(config, inner.overrides).base if config is not None else None
    if inner.command == "search" or (inner.command == "train" and not inner.test):
        cfg = load_config(config, inner.overrides)
        if getattr(inner, "genotype", None):
            cfg = cfg.replace(**{"train.genotype": inner.genotype})
        return cfg
    return None


def _check_config_paths(cfg: Any, working_dir: Path, *, train: bool) -> None:
    from snas_ray.config import is_genotype_file

    if train and is_genotype_file(cfg.train.genotype):
        _in_upload("train.genotype", Path(cfg.train.genotype), working_dir)
    data = cfg.data
    read_from_files = data.name == "imagenet" or (data.name == "cifar10" and not data.download)
    if read_from_files:
        _in_upload("data.root", Path(data.root), working_dir)
