"""Collect search runs into a leaderboard: rank by accuracy, mark the Pareto front on cost.

Reads the run folders under a sweep folder (each one ``RunPaths``: ``result.json``,
``genotype.json``, ``config.yaml``), groups runs that differ only in seed, and writes the
leaderboard, the front's genotypes and, through :mod:`snas_ray.report`, the plot and report.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
import logging
import math
import os
import re
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from snas_ray.results import report
from snas_ray.errors import GenotypeError, SnasRayError
from snas_ray.genotype import Genotype, load_genotype, save_genotype
from snas_ray.layout import RunPaths

__all__ = [
    "COSTS",
    "RETRAIN_RESULT",
    "Group",
    "Leaderboard",
    "Row",
    "Skipped",
    "collect",
    "find_run_folders",
    "pareto_front",
]

logger = logging.getLogger(__name__)

COSTS = ("params", "flops", "mac")
# Where a later collect finds a retrained accuracy, relative to the run folder: a JSON object
# whose "test_acc" (a fraction, like val_acc) replaces the search-time accuracy of that run.
RETRAIN_RESULT = Path("retrain") / "result.json"
_RUN_FILES = ("result.json", "genotype.json", "config.yaml", "metrics.jsonl")
_REQUIRED = ("params", "flops", "mac", "epochs_done", "epochs")
# Config fields that change where or how fast a run writes, never what it finds.
_BOOKKEEPING = re.compile(
    r"^(device|output\..*|search\.(log_every|eval_batch_size|channels_last)"
    r"|data\.(root|download|num_workers))$"
)
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
# Columns every row has; swept config fields that duplicate them are not repeated.
_DUPLICATES = {"seed", "cost.resource_lambda", "cost.estimator"}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Flags the non-dominated ``(accuracy, cost)`` points: accuracy up, cost down.

    A point is dominated when another has accuracy >= and cost <=, one of them strictly.
    Identical points therefore all stay on the front; of two with equal cost only the more
    accurate one does, and of two with equal accuracy only the cheaper one.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0]))
    flags = [False] * len(points)
    best_cheaper = -math.inf  # best accuracy among strictly cheaper points
    for _, same_cost in itertools.groupby(order, key=lambda i: points[i][1]):
        same = list(same_cost)
        top = points[same[0]][0]  # the most accurate at this cost comes first
        for j in same:
            flags[j] = top > best_cheaper and points[j][0] == top
        best_cheaper = max(best_cheaper, top)
    return flags


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
        test_acc: Retrained test accuracy from ``retrain/result.json``, if present.
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
    test_acc: float | None = None
    rank: int = 0
    pareto: bool = False
    group: int = 0

    @property
    def acc(self) -> float:
        """The accuracy that ranks the run: retrained if present, else the search metric."""
        return self.search_acc if self.test_acc is None else self.test_acc

    @property
    def acc_source(self) -> str:
        """``"retrain"`` or ``"search"``: where :attr:`acc` comes from."""
        return "search" if self.test_acc is None else "retrain"

    def setting(self, key: str) -> Any:
        """A result.json field such as ``estimator``, else its config.yaml value, else None."""
        return self.result.get(key, self.settings.get(_RESULT_SETTINGS.get(key, key)))

    @property
    def slug(self) -> str:
        """The run as one file-name-safe word, for ``front/`` and ``cells/`` files."""
        text = "run" if self.run == "." else self.run.replace("/", "__")
        return re.sub(r"[^A-Za-z0-9._-]", "_", text)


@dataclass(frozen=True)
class Group:
    """Runs that share every setting but the seed, with their accuracy as mean ± std.

    ``std`` is the sample standard deviation (n - 1), None for a single run.
    """

    id: int
    settings: dict[str, Any]
    runs: tuple[str, ...]
    seeds: tuple[Any, ...]
    mean: float
    std: float | None
    cost_mean: float


@dataclass
class Leaderboard:
    """Ranked runs of one folder, best first, with the front, the groups and what was skipped.

    Attributes:
        root: The collected folder.
        metric: The result.json key ranked on (retrained ``test_acc`` outranks it).
        cost: The cost axis of the front: ``params``, ``flops`` or ``mac``.
        rows: Complete runs, ranked.
        skipped: Broken and unfinished run folders.
        groups: Settings shared by runs that differ only in seed, best mean first.
        swept: Config fields (dotted) whose values differ between the ranked runs.
        warnings: Problems that did not stop a run from ranking (e.g. a bad retrain result).
    """

    root: Path
    metric: str
    cost: str
    rows: list[Row]
    skipped: list[Skipped] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def front(self) -> list[Row]:
        """The non-dominated runs, cheapest first."""
        return sorted(
            (r for r in self.rows if r.pareto), key=lambda r: (r.result[self.cost], -r.acc)
        )

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per row, the rows of ``leaderboard.json`` and ``.csv``."""
        groups = {g.id: g for g in self.groups}
        out = []
        for r in self.rows:
            g = groups[r.group]
            rec: dict[str, Any] = {"run": r.run, "rank": r.rank, "pareto": r.pareto}
            rec["val_acc"] = r.result.get("val_acc")
            rec |= {self.metric: r.search_acc, "test_acc": r.test_acc, "acc": r.acc}
            rec |= {"acc_source": r.acc_source} | {k: r.result[k] for k in COSTS}
            rec |= {key: r.setting(key) for key in ("estimator", "resource_lambda", "seed")}
            rec |= {k: r.settings.get(k) for k in self.swept if k not in _DUPLICATES}
            rec |= {"group": g.id, "group_size": len(g.runs), "group_mean": g.mean}
            rec |= {"group_std": g.std, "epochs_done": r.result["epochs_done"]}
            rec |= {"epochs": r.result["epochs"], "genotype": r.genotype_file}
            out.append(rec)
        return out

    def format_table(self, top: int = 10) -> str:
        """A short ranked table for the terminal (``*`` marks the front)."""
        return report.format_table(self, top)

    def write(self, out: Path | str | None = None) -> Path:
        """Writes leaderboard.json/.csv, front/, cells/, pareto.png and report.md into ``out``
        (default: the ``collect`` folder of :attr:`root`, which collect itself never reads).

        ``front/`` and ``cells/`` belong to the collector: files an earlier collect left there
        are replaced. Every file is written atomically. Returns the path of ``report.md``.
        """
        return report.write_report(self, Path(out) if out else self.root / "collect")

    def retrain(self, k: int, *, config: Path | None = None) -> list[Path]:
        """Retrains the ``k`` most accurate front genotypes with ``snas_ray.retrain``.

        Calls ``snas_ray.retrain.retrain_genotype(genotype_file, out, config=config)`` for each,
        with ``out = <run>/retrain``, where it must leave ``result.json`` with ``test_acc``;
        collect again to fold the results in.

        Raises:
            SnasRayError: if ``snas_ray.retrain`` does not exist yet or lacks that function.
        """
        try:
            module = importlib.import_module("snas_ray.retrain")
        except ModuleNotFoundError as exc:
            if exc.name != "snas_ray.retrain":
                raise
            raise SnasRayError(
                "--retrain: retraining is not available yet (snas_ray.retrain is missing)"
            ) from None
        retrain_genotype = getattr(module, "retrain_genotype", None)
        if retrain_genotype is None:
            raise SnasRayError("--retrain: snas_ray.retrain has no retrain_genotype()")
        outs = []
        for r in sorted(self.front, key=lambda r: r.rank)[:k]:
            out = r.path / RETRAIN_RESULT.parent
            genotype_file = r.path / "genotype.json"
            if not genotype_file.is_file():
                out.mkdir(parents=True, exist_ok=True)
                genotype_file = out / "genotype.json"
                save_genotype(r.genotype, genotype_file)
            logger.info("retrain %s -> %s", r.run, out)
            retrain_genotype(genotype_file, out, config=config)
            outs.append(out)
        return outs


def find_run_folders(root: Path | str, *, exclude: Sequence[Path] = ()) -> Iterator[Path]:
    """Yields every run folder under ``root`` (``root`` included), in sorted order.

    A run folder holds at least one of result.json, genotype.json, config.yaml, metrics.jsonl;
    the walk does not enter it further (its ``retrain/``, ``checkpoints/``, ``tb/``). Ray Tune's
    trial bookkeeping folders (``params.json`` or ``progress.csv`` beside a result.json, but none
    of our other files) are walked through, not taken as runs. Hidden folders are skipped.
    """
    skip = {Path(p).resolve() for p in exclude}
    for folder, dirs, files in os.walk(root):
        path = Path(folder)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and (path / d).resolve() not in skip
        )
        names = set(files)
        ours = names & set(_RUN_FILES)
        tune_only = ours == {"result.json"} and names & {"params.json", "progress.csv"}
        if ours and not tune_only:
            dirs[:] = []
            yield path


class _Broken(Exception):
    """A run folder that cannot be read; the message says why."""


class _Unfinished(_Broken):
    """A run folder whose search has not finished (yet)."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise _Broken(f"{path.name}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise _Broken(f"{path.name}: invalid JSON: {exc}") from None


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Broken(f"{where} is not a finite number: {value!r}")
    return value


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        elif not _BOOKKEEPING.match(f"{prefix}{k}"):
            out[f"{prefix}{k}"] = v
    return out


def _settings(paths: RunPaths, result: dict[str, Any]) -> dict[str, Any]:
    if not paths.config.is_file():
        return {key: result[k] for k, key in _RESULT_SETTINGS.items() if k in result}
    try:
        cfg = yaml.safe_load(paths.config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _Broken(f"config.yaml: cannot read: {str(exc).splitlines()[0]}") from None
    if not isinstance(cfg, dict):
        raise _Broken("config.yaml: not a mapping")
    return _flatten(cfg)


def _genotype(paths: RunPaths, result: dict[str, Any]) -> Genotype:
    try:
        if paths.genotype.is_file():
            return load_genotype(paths.genotype)
        if "genotype" in result:
            return Genotype.from_dict(result["genotype"])
    except GenotypeError as exc:
        raise _Broken(str(exc)) from None
    raise _Broken("no genotype.json and no genotype in result.json")


def _test_acc(paths: RunPaths, warnings: list[str], run: str) -> float | None:
    path = paths.root / RETRAIN_RESULT
    if not path.is_file():
        return None
    try:
        data = _read_json(path)
        if not isinstance(data, dict) or "test_acc" not in data:
            raise _Broken(f"{RETRAIN_RESULT.as_posix()}: no test_acc")
        return _number(data["test_acc"], f"{RETRAIN_RESULT.as_posix()}: test_acc")
    except _Broken as exc:
        warnings.append(f"{run}: {exc}; ranked on its search accuracy")
        return None


def _read_run(paths: RunPaths, run: str, metric: str, warnings: list[str]) -> Row:
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
    acc = _number(result.get(metric, nested.get(metric)), f"result.json: {metric}")
    for k in _REQUIRED:
        _number(result[k], f"result.json: {k}")
    if result["epochs_done"] < result["epochs"]:
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
        test_acc=_test_acc(paths, warnings, run),
    )


def _group(rows: list[Row], cost: str) -> tuple[list[Group], list[str]]:
    # Grouping and "swept" use only keys every run has, so one config-less run does not
    # make every config field look swept.
    common = set.intersection(*(set(r.settings) for r in rows)) if rows else set()
    norm = {k: {json.dumps(r.settings[k], sort_keys=True) for r in rows} for k in common}
    swept = sorted(k for k in common if len(norm[k]) > 1)
    by_key: dict[str, list[Row]] = {}
    for r in rows:
        key = json.dumps({k: r.settings[k] for k in common if k != "seed"}, sort_keys=True)
        by_key.setdefault(key, []).append(r)
    groups = []
    for members in (sorted(m, key=lambda r: r.run) for m in by_key.values()):
        accs = [r.acc for r in members]
        groups.append(
            Group(
                id=0,
                settings={k: members[0].settings[k] for k in swept if k != "seed"},
                runs=tuple(r.run for r in members),
                seeds=tuple(r.settings.get("seed") for r in members),
                mean=statistics.fmean(accs),
                std=statistics.stdev(accs) if len(accs) > 1 else None,
                cost_mean=statistics.fmean(float(r.result[cost]) for r in members),
            )
        )
    groups.sort(key=lambda g: (-g.mean, g.cost_mean, g.runs))
    groups = [dataclasses.replace(g, id=i) for i, g in enumerate(groups, 1)]
    run_group = {run: g.id for g in groups for run in g.runs}
    for r in rows:
        r.group = run_group[r.run]
    return groups, swept


def collect(path: Path | str, *, metric: str = "val_acc", cost: str = "params") -> Leaderboard:
    """Reads every run folder under ``path`` into a ranked :class:`Leaderboard`.

    Broken folders (unreadable or invalid files, missing fields) and unfinished runs (no
    result.json, or fewer epochs done than planned) are listed in ``skipped``, never raised.
    A folder named ``collect`` directly under ``path`` (the default output) is not read.

    Args:
        path: A sweep folder, any folder of run folders, or one run folder.
        metric: The accuracy key of result.json (or of its ``final_metrics``) to rank on.
        cost: The cost of the front: ``params``, ``flops`` or ``mac``.

    Raises:
        SnasRayError: if ``path`` is not a folder or ``cost`` is unknown.
    """
    root = Path(path)
    if not root.is_dir():
        raise SnasRayError(f"collect: {root} is not a folder")
    if cost not in COSTS:
        raise SnasRayError(f"collect: unknown cost {cost!r}; allowed: {', '.join(COSTS)}")
    rows, skipped, warnings = [], [], []
    for folder in find_run_folders(root, exclude=[root / "collect"]):
        run = folder.relative_to(root).as_posix()
        try:
            rows.append(_read_run(RunPaths(folder), run, metric, warnings))
        except _Broken as exc:
            kind = "unfinished" if isinstance(exc, _Unfinished) else "broken"
            skipped.append(Skipped(run, kind, str(exc)))
    rows.sort(key=lambda r: (-r.acc, r.result[cost], r.run))
    for i, r in enumerate(rows):
        r.rank = i + 1 if i == 0 or r.acc != rows[i - 1].acc else rows[i - 1].rank
    for r, flag in zip(rows, pareto_front([(r.acc, r.result[cost]) for r in rows]), strict=True):
        r.pareto = flag
    groups, swept = _group(rows, cost)
    lb = Leaderboard(root, metric, cost, rows, skipped, groups, swept, warnings)
    logger.info(
        "collect: %d runs ranked, %d on the front, %d skipped",
        len(rows),
        len(lb.front),
        len(skipped),
    )
    return lb
