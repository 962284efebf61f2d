"""A sweep's ``sweep_results.json``: one row per trial, whatever state the sweep ended in.

From Tune's results when the fit returns (an interrupted one included: its pending trials have
no config and no metrics), or from the trial run folders alone when it never returned (a
second Ctrl-C). A trial is ``done``, ``error``, ``stopped`` (started, unfinished) or
``pending`` (never started). The driver's side of :mod:`.sweep`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from snas_ray.config import flatten
from snas_ray.distributed.sweep_trial import trial_index
from snas_ray.errors import SweepError
from snas_ray.layout import atomic_write_json
from snas_ray.sweep_spec import SweepSpec

__all__ = [
    "RESULTS_FILE",
    "format_rows",
    "raise_for_unfinished",
    "summarize",
    "summarize_from_folders",
]

RESULTS_FILE = "sweep_results.json"
_TRIAL_ID = re.compile(r"[0-9a-f]{5}_\d{5}")  # Tune's "<experiment>_<trial number>"


def _run_folder(out: Path, index: int | None) -> Path | None:
    # Trial folders are named NNN-<settings> after Tune's trial number (sweep_trial.py).
    found = sorted((out / "runs").glob(f"{index:03d}-*")) if index is not None else []
    return found[0] if found else None


def _row(out: Path, index: int | None, settings: dict[str, Any] | None) -> dict[str, Any]:
    """One trial's row as its run folder shows it: done, stopped (started, unfinished) or
    pending (never started)."""
    folder = _run_folder(out, index)
    summary: dict[str, Any] = {}
    if folder is not None and (folder / "result.json").is_file():
        try:
            summary = json.loads((folder / "result.json").read_text())
        except (OSError, ValueError):
            summary = {}
        summary = summary if isinstance(summary, dict) else {}
    status = "done" if summary else "stopped" if folder is not None else "pending"
    done = summary.get("epochs_done", 0)
    if folder is not None and not summary and (folder / "metrics.jsonl").is_file():
        # One line per finished epoch, written after its checkpoint.
        done = sum(1 for ln in (folder / "metrics.jsonl").read_bytes().splitlines() if ln.strip())
    return {
        "trial": index,
        "run_dir": str(folder) if folder is not None else None,
        "settings": settings,
        "status": status,
        "error": None,
        "val_acc": summary.get("val_acc"),
        "params": summary.get("params"),
        "flops": summary.get("flops"),
        "epochs_done": done,
    }


def _write_rows(rows: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    rows.sort(key=lambda r: (r["trial"] is None, r["trial"] or 0))
    atomic_write_json(out / RESULTS_FILE, rows)
    return rows


def summarize(results: Any, spec: SweepSpec, out: Path) -> list[dict[str, Any]]:
    """Every trial's row from Tune's results and its run folder; trials Tune had not created
    yet (an interrupted sweep) are listed as pending."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        config = result.config or {}  # None for a trial that never started
        trial_id = metrics.get("trial_id") or _TRIAL_ID.search(Path(result.path or "").name)
        if not isinstance(trial_id, str):
            trial_id = trial_id.group(0) if trial_id else None
        settings = {p.key: config.get(p.key) for p in spec.params} if config else None
        row = _row(out, trial_index(trial_id) if trial_id else None, settings)
        if result.error:
            row["status"] = "error"
            row["error"] = (str(result.error).strip().splitlines() or [""])[-1][:300]
        rows.append(row)
    # Tune creates trials as slots free up: an interrupted sweep has not created them all.
    seen = {r["trial"] for r in rows}
    rows += [_row(out, i, None) for i in range(spec.num_trials) if i not in seen]
    return _write_rows(rows, out)


def summarize_from_folders(spec: SweepSpec, out: Path) -> list[dict[str, Any]]:
    """Every trial's row from the run folders alone, when Tune's results never came back."""
    rows = []
    for index in range(spec.num_trials):
        folder = _run_folder(out, index)
        settings = None
        if folder is not None and (folder / "config.yaml").is_file():
            try:
                saved = flatten(yaml.safe_load((folder / "config.yaml").read_text()) or {})
                settings = {p.key: saved.get(p.key) for p in spec.params}
            except (OSError, ValueError, yaml.YAMLError, AttributeError):
                settings = None
        rows.append(_row(out, index, settings))
    return _write_rows(rows, out)


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A plain table of the trials, for the terminal."""
    lines = [f"{'run':<48} {'status':<8} {'val_acc':>8} {'params':>10}"]
    for r in rows:
        name = Path(r["run_dir"]).name if r["run_dir"] else f"trial {r['trial']} (not started)"
        acc = f"{r['val_acc']:.4f}" if r["val_acc"] is not None else "-"
        params = f"{r['params']:,}" if r["params"] is not None else "-"
        lines.append(f"{name[:48]:<48} {r['status']:<8} {acc:>8} {params:>10}")
    return "\n".join(lines)


def raise_for_unfinished(rows: list[dict[str, Any]], spec: SweepSpec) -> None:
    """A :class:`SweepError` when trials failed or an interrupt left some unfinished."""
    failed = [r for r in rows if r["status"] == "error"]
    if failed:
        raise SweepError(
            f"{len(failed)} of {len(rows)} trials failed ({failed[0]['error']}); "
            "run the same command again to retry them"
        )
    unfinished = sum(r["status"] in ("stopped", "pending") for r in rows)
    if unfinished and not spec.options.early_stopping:
        # Without a scheduler only an interrupt (Ctrl-C) leaves a trial unfinished.
        raise SweepError(
            f"{unfinished} of {len(rows)} trials unfinished (interrupted); "
            "run the same command again to continue them"
        )
