"""The config fields that hold paths, made absolute on the driver before the config travels.

Ray Train V2 runs each worker in its run's own folder and Tune runs each trial in its trial
folder (ray-notes §10), so a relative path in a config that reaches them names another file
there. The driver (``launch``, ``sweep``) therefore resolves every field in :data:`PATH_FIELDS`
against its own working directory first. A registry genotype name is not a path and is kept.
These fields may differ between a run and its resumption (``RESUME_MAY_DIFFER``), so a run
started with relative paths resumes with the resolved ones and the other way round.
"""

from __future__ import annotations

import os
from pathlib import Path

from snas_ray.config.sections import ExperimentConfig
from snas_ray.published import REGISTRY

__all__ = ["PATH_FIELDS", "is_genotype_file", "relative_paths", "resolve_paths"]

# Every config field that names a file or folder: data roots (CIFAR-10 batches, the ImageNet
# tree) and the genotype file a retraining reads (unless it is a registry name).
PATH_FIELDS = ("data.root", "train.genotype")


def is_genotype_file(value: str) -> bool:
    """Whether ``train.genotype`` names a file: the rule of ``published.load_genotype``.

    A registry name wins over a file of the same name; a bare word that is no file is an
    (unknown) name, which ``load_genotype`` reports with suggestions.
    """
    if value in REGISTRY:
        return False
    path = Path(value).expanduser()
    return bool(path.suffix) or len(path.parts) > 1 or path.exists()


def _field_values(cfg: ExperimentConfig) -> dict[str, str]:
    values = {"data.root": cfg.data.root}
    if is_genotype_file(cfg.train.genotype):
        values["train.genotype"] = cfg.train.genotype
    return values


def relative_paths(cfg: ExperimentConfig) -> dict[str, str]:
    """The path fields of ``cfg`` that are not absolute yet (dotted key -> value)."""
    return {k: v for k, v in _field_values(cfg).items() if not Path(v).is_absolute()}


def resolve_paths(cfg: ExperimentConfig, base: Path | str | None = None) -> ExperimentConfig:
    """``cfg`` with every path field absolute: ``~`` expanded, then joined to ``base`` (default:
    the current working directory) and normalised. Absolute paths and registry names stay."""
    root = Path(base if base is not None else Path.cwd()).absolute()
    changes = {
        key: os.path.normpath(root / Path(value).expanduser())
        for key, value in relative_paths(cfg).items()
    }
    return cfg.replace(**changes) if changes else cfg
