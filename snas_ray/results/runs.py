"""Finding run folders and reading one: a ranked :class:`Row`, or why it was :class:`Skipped`.

A run folder is a ``RunPaths``; only ``result.json``, ``genotype.json`` and ``config.yaml`` are
read. Evaluation folders (``snas-ray evaluate``) are not search runs and are never entered.
Whatever a run folder holds is checked before it is ranked: accuracies in [0, 1], costs and epoch
counts non-negative and not absurd, no NaN or infinity, config values that JSON can carry (no YAML
dates); a folder that fails is skipped, saying why.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snas_ray.config import MAX_INT, config_difference, flatten, parse_yaml
from snas_ray.errors import ConfigError, GenotypeError
from snas_ray.genotype import Genotype, read_genotype
from snas_ray.layout import EVALUATE_SPEC, RunPaths
from snas_ray.results.retrained import GenotypeStats

__all__ = [
    "ACC_METRICS",
    "COLUMN_SETTINGS",
    "COSTS",
    "Row",
    "Skipped",
    "find_run_folders",
    "read_run",
]

COSTS = ("params", "flops", "mac")
# The accuracies collect ranks on: result.json keys of a search or a retraining, or keys of a
# search's final_metrics. Every one is a fraction in [0, 1].
ACC_METRICS = (
    "val_acc",
    "val_acc_relaxed",
    "test_acc",
    "test_acc5",
    "best_test_acc",
    "val/acc_child",
    "val/acc_relaxed",
    "train/acc1",
)
_MAX_COST = 10**18  # params, FLOPs or MAC beyond this are a corrupt file, not a network
_MAX_EPOCHS = 10**9
# Config fields every row has a column for; swept fields among them are not repeated.
COLUMN_SETTINGS = ("seed", "cost.resource_lambda", "cost.estimator")
_RUN_FILES = ("result.json", "genotype.json", "config.yaml", "metrics.jsonl")
# The run-folder contract's result.json keys (with the ranking metric and the settings);
# "epochs" (planned) is optional: without it a run ranks with its completeness unknown.
_REQUIRED = ("params", "flops", "mac", "epochs_done")
# result.json fields standing in for config.yaml when a run folder has none.
_RESULT_SETTINGS = {
    "seed": "seed",
    "resource_lambda": "cost.resource_lambda",
    "estimator": "cost.estimator",
    "dataset": "data.name",
    "layers": "space.layers",
    "init_channels": "space.init_channels",
    "derivation": "search.derivation",
}


@dataclass(frozen=True)
class Skipped:
    """A run folder left out of the ranking: ``kind`` is ``"broken"`` or ``"unfinished"``."""

    run: str
    kind: str
    reason: str


@dataclass
class Row:
    """One complete run: its settings, accuracy and cost, and where it ranks.

    Attributes:
        run: The run folder relative to the collected folder (``"."`` for the folder itself).
        path: The run folder.
        genotype: The derived genotype.
        genotype_file: ``genotype.json`` relative to the collected folder, if the run has one.
        result: The run's ``result.json``.
        settings: Its flattened config (dotted keys), or what ``result.json`` says of it.
        search_acc: The ranking metric as the search measured it.
        retrained: Its genotype's retrained test accuracy over seeds, from an evaluation
            (``snas-ray evaluate``); its own column, never ranked with ``search_acc``.
        rank: 1 for the most accurate; runs of equal accuracy share a rank.
        pareto: Whether no other run is at least as accurate and as cheap.
        group: Id of the runs sharing all settings but the seed.
    """

    run: str
    path: Path
    genotype: Genotype
    genotype_file: str | None
    result: dict[str, Any]
    settings: dict[str, Any]
    search_acc: float
    retrained: GenotypeStats | None = None
    rank: int = 0
    pareto: bool = False
    group: int = 0

    @property
    def acc(self) -> float:
        """The accuracy that ranks the run: the search metric (retrained accuracy never ranks)."""
        return self.search_acc

    def setting(self, key: str) -> Any:
        """A result.json field such as ``estimator``, else its config.yaml value, else None."""
        return self.result.get(key, self.settings.get(_RESULT_SETTINGS.get(key, key)))

    @property
    def slug(self) -> str:
        """The run as one file-name-safe word, for ``front/`` and ``cells/`` files."""
        text = "run" if self.run == "." else self.run.replace("/", "__")
        return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def find_run_folders(root: Path | str, *, exclude: Sequence[Path] = ()) -> Iterator[Path]:
    """Yields every run folder under ``root`` (``root`` included), in sorted order.

    A run folder holds at least one of result.json, genotype.json, config.yaml, metrics.jsonl;
    the walk does not enter it further (its ``retrain/``, ``checkpoints/``, ``tb/``). Ray Tune's
    trial bookkeeping folders (``params.json`` or ``progress.csv`` beside a result.json, but none
    of our other files) are walked through, not taken as runs. Hidden folders and evaluation
    folders (``evaluate.yaml``: retrainings, not searches) are skipped.
    """
    skip = {Path(p).resolve() for p in exclude}
    for folder, dirs, files in os.walk(root):
        path = Path(folder)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and (path / d).resolve() not in skip
        )
        names = set(files)
        if EVALUATE_SPEC in names:
            dirs[:] = []
            continue
        ours = names & set(_RUN_FILES)
        tune_only = ours == {"result.json"} and names & {"params.json", "progress.csv"}
        if ours and not tune_only:
            dirs[:] = []
            yield path


def read_run(paths: RunPaths, run: str, metric: str, warnings: list[str]) -> Row | Skipped:
    """Reads one run folder: a :class:`Row` if it finished, else why it is :class:`Skipped`.

    Args:
        paths: The run folder.
        run: Its name in the leaderboard (the folder relative to the collected one).
        metric: The accuracy key of result.json (or of its ``final_metrics``) to rank on.
        warnings: Gets a line for each problem that does not stop the run from ranking.
    """
    try:
        return _read_row(paths, run, metric, warnings)
    except _Broken as exc:
        return Skipped(run, "unfinished" if isinstance(exc, _Unfinished) else "broken", str(exc))


class _Broken(Exception):
    """A run folder that cannot be read; the message says why."""


class _Unfinished(_Broken):
    """A run folder whose search has not finished (yet)."""


def _read_row(paths: RunPaths, run: str, metric: str, warnings: list[str]) -> Row:
    if not paths.result.is_file():
        raise _Unfinished("no result.json yet")
    result = _read_json(paths.result)
    if not isinstance(result, dict):
        raise _Broken("result.json: not an object")
    nested = result.get("final_metrics") if isinstance(result.get("final_metrics"), dict) else {}
    missing = [k for k in _REQUIRED if k not in result]
    missing += [] if metric in result or metric in nested else [metric]
    if missing:
        raise _Broken(f"result.json: missing field {', '.join(map(repr, missing))}")
    acc = _fraction(result.get(metric, nested.get(metric)), f"result.json: {metric}")
    _check_result(result)
    if "epochs" not in result:
        warnings.append(f"{run}: result.json has no 'epochs': whether it finished is unknown")
    elif result["epochs_done"] < result["epochs"]:
        raise _Unfinished(f"{result['epochs_done']:g} of {result['epochs']:g} epochs done")
    genotype = _genotype(paths, result)
    has_file = paths.genotype.is_file()
    return Row(
        run=run,
        path=paths.root,
        genotype=genotype,
        genotype_file=(Path(run) / "genotype.json").as_posix() if has_file else None,
        result=result,
        settings=_settings(paths, result),
        search_acc=acc,
    )


def _read_json(path: Path) -> Any:
    def refuse(constant: str) -> Any:
        raise _Broken(f"{path.name}: holds {constant}, not a finite number")

    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    except (OSError, UnicodeDecodeError) as exc:
        raise _Broken(f"{path.name}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise _Broken(f"{path.name}: invalid JSON: {exc}") from None
    except RecursionError:
        raise _Broken(f"{path.name}: nested too deeply") from None


def _number(value: Any, where: str, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Broken(f"{where} is not a number: {str(value)[:40]!r}")
    if not low <= value <= high:  # NaN compares false too; huge ints are out of range
        shown = f"{value:.4g}" if isinstance(value, float) or abs(value) < 10**12 else "huge"
        raise _Broken(f"{where} is {shown}, outside [{low:g}, {high:g}]")
    return value


def _fraction(value: Any, where: str) -> float:
    return _number(value, where, 0.0, 1.0)


def _check_result(result: dict[str, Any]) -> None:
    """Every number collect reads or copies into the leaderboard, within its range."""
    for key in COSTS:
        _number(result[key], f"result.json: {key}", 0, _MAX_COST)
    for key in ("epochs_done", "epochs"):
        if key in result:  # epochs_done is required; "epochs" may be absent
            _number(result[key], f"result.json: {key}", 0, _MAX_EPOCHS)
    for key in ("val_acc", "val_acc_relaxed"):
        if key in result:
            _fraction(result[key], f"result.json: {key}")
    for key in ("budget", "resource_lambda", "resource_lambda_final"):
        if result.get(key) is not None:
            _number(result[key], f"result.json: {key}", 0, _MAX_COST)
    for key, value in (result.get("budget_cost") or {}).items():
        if key in COSTS:
            _number(value, f"result.json: budget_cost.{key}", 0, _MAX_COST)


def _is_bookkeeping(key: str) -> bool:
    # A field a resumed run may change (config.RESUME_MAY_DIFFER: where or how fast a run writes,
    # never what it finds) is one whose change alone config_difference does not count.
    return config_difference({key: 0}, {key: 1}) is None


def _settings(paths: RunPaths, result: dict[str, Any]) -> dict[str, Any]:
    if not paths.config.is_file():
        found = {key: result[k] for k, key in _RESULT_SETTINGS.items() if k in result}
        for key, value in found.items():
            _plain(value, f"result.json: {key}")
        return found
    try:
        cfg = parse_yaml(paths.config.read_text(encoding="utf-8"), "config.yaml", "config.yaml")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Broken(f"config.yaml: cannot read: {str(exc).splitlines()[0]}") from None
    except ConfigError as exc:
        raise _Broken(exc.message) from None
    if not isinstance(cfg, dict):
        raise _Broken("config.yaml: not a mapping")
    flat = {str(k): v for k, v in flatten(cfg).items()}
    for key, value in flat.items():  # bookkeeping fields too: none of ours holds a date
        _plain(value, f"config.yaml: {key}")
    return {k: v for k, v in flat.items() if not _is_bookkeeping(k)}


def _plain(value: Any, where: str) -> None:
    """A setting must be what a config holds and JSON carries: no dates, bytes or sets."""
    if isinstance(value, list):
        for item in value:
            _plain(item, where)
    elif isinstance(value, float):
        _number(value, where)
    elif isinstance(value, int) and not isinstance(value, bool):
        _number(value, where, -MAX_INT, MAX_INT)
    elif not (value is None or isinstance(value, (str, bool))):
        raise _Broken(f"{where} holds a {type(value).__name__} ({str(value)[:40]}), not a value")


def _genotype(paths: RunPaths, result: dict[str, Any]) -> Genotype:
    try:
        if paths.genotype.is_file():
            return read_genotype(paths.genotype)
        if "genotype" in result:
            return Genotype.from_dict(result["genotype"])
    except GenotypeError as exc:
        raise _Broken(str(exc)) from None
    raise _Broken("no genotype.json and no genotype in result.json")
