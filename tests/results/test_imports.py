"""snas_ray.results imports no torch, and its modules import each other in one direction only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from run_folders import make_run

import snas_ray.results

_COLLECT_AND_WRITE = """
import sys
import snas_ray.results
from snas_ray.results import collect

assert "matplotlib" not in sys.modules, "matplotlib imported before a plot is drawn"
lb = collect(sys.argv[1])
assert [r.run for r in lb.rows] == ["b", "a"], [r.run for r in lb.rows]
report = lb.write(sys.argv[2])
assert report.name == "report.md" and report.is_file()
assert "matplotlib" in sys.modules  # the plots were drawn in this process
for name in ("torch", "ray"):
    assert name not in sys.modules, f"{name} imported"
print("ok")
"""


def test_collect_and_write_import_no_torch(tmp_path: Path) -> None:
    make_run(tmp_path / "sweep", "a", acc=0.80, params=100, lam=1e-2)
    make_run(tmp_path / "sweep", "b", acc=0.90, params=200, lam=1e-3, seed=1)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", _COLLECT_AND_WRITE, str(tmp_path / "sweep"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    for name in ("leaderboard.json", "leaderboard.csv", "pareto.png", "report.md"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "front").iterdir()) == ["a.json", "b.json"]


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every ``from X import names`` and ``import X`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return found


def test_results_modules_form_no_cycle_and_share_no_private_names() -> None:
    root = Path(snas_ray.results.__file__).parent
    modules = {p.stem for p in root.glob("*.py")} - {"__init__"}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for m in modules:
        for module, names in _imports(root / f"{m}.py"):
            assert not module.split(".")[0] == "torch", f"results/{m}.py imports {module}"
            assert not any(n.startswith("_") for n in names), f"results/{m}.py: {names}"
            if module == "snas_ray.results":  # from snas_ray.results import report
                edges[m] |= set(names) & modules
            elif module.startswith("snas_ray.results."):
                edges[m].add(module.rsplit(".", 1)[1])
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, "import cycle: " + " -> ".join((*path, m))
        if m not in done:
            for dep in edges[m]:
                visit(dep, (*path, m))
            done.add(m)

    for m in sorted(modules):
        visit(m, ())
