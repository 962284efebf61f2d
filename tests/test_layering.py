"""The package's layers (style.md §1), read from the source: no cycle, no upward import, no private
name imported across modules, Ray only in ``distributed/``, no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "snas_ray"

# Lowest first; a module may import its own layer or lower. Packages in one layer that are
# listed as siblings (space, data, engine) must not import each other.
LAYERS = [
    {"errors", "layout"},
    {"config", "genotype", "published", "sweep_spec", "evaluate_spec"},
    {"space", "data", "engine"},
    {"search", "retrain", "bench"},
    {"results"},
    {"distributed"},
    {"cli", "__main__"},
]
SIBLINGS = {"space", "data", "engine"}
MAX_LINES = 400
# Modules still over the limit, each with the reason it has not been split yet; a module not
# listed here fails at 401 lines, and one listed here fails once it grows past its allowance.
OVER_LIMIT = {}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _top(module: str) -> str:
    """The unit that owns ``module``: ``snas_ray.space.ops`` -> ``space``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(module: str) -> int:
    top = _top(module)
    for index, layer in enumerate(LAYERS):
        if top in layer:
            return index
    raise AssertionError(f"{module}: not in any layer of this test (add it to LAYERS)")


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import, lazy ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [alias.name for alias in node.names]
            # "from snas_ray.space import network" imports the module snas_ray.space.network
            for name in names:
                if f"{node.module}.{name}" in MODULES:
                    found.append((f"{node.module}.{name}", [], node.lineno))
                    names = [n for n in names if n != name]
            found.append((node.module, names, node.lineno))
    return found


def _internal_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, _, _ in _imports(path):
            if target in MODULES and target != module:
                edges[module].add(target)
    return edges


def test_every_module_belongs_to_a_layer():
    for module in MODULES:
        if module != "snas_ray":
            _layer(module)


def test_no_import_runs_upward_or_between_siblings():
    bad = []
    for module, path in MODULES.items():
        if module == "snas_ray":
            continue
        for target, _, line in _imports(path):
            if target not in MODULES or target == "snas_ray":
                continue
            low, high = _layer(target), _layer(module)
            if low > high:
                bad.append(f"{path.name}:{line}: {module} (layer {high}) imports {target} ({low})")
            elif _top(module) in SIBLINGS and _top(target) in SIBLINGS:
                if _top(module) != _top(target):
                    bad.append(f"{path.name}:{line}: sibling {module} imports {target}")
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    edges = _internal_edges()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    # A package's __init__ importing its own modules is how a package shows its face.
    cycles = [c for c in cycles if not _is_face_cycle(c)]
    assert not cycles, "\n".join(cycles)


def _is_face_cycle(cycle: str) -> bool:
    nodes = cycle.split(" -> ")
    packages = [n for n in nodes if MODULES[n].name == "__init__.py"]
    return bool(packages) and all(n.startswith(packages[0]) for n in nodes)


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for module, path in MODULES.items():
        for target, names, line in _imports(path):
            if target.startswith("snas_ray") and target != module:
                bad += [f"{path.name}:{line}: {n} from {target}" for n in names if n[:1] == "_"]
    assert not bad, "\n".join(bad)


def test_ray_is_imported_only_in_distributed():
    bad = []
    for module, path in MODULES.items():
        if _top(module) == "distributed":
            continue
        for target, _, line in _imports(path):
            if target == "ray" or target.startswith("ray."):
                bad.append(f"{module}:{line}: imports {target}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= OVER_LIMIT.get(module, MAX_LINES), (
        f"{module}: {lines} lines (style.md §7: split it)"
    )


def test_the_checker_sees_a_planted_upward_import(tmp_path):
    # The checks above must be able to fail: an upward import is found in a planted source.
    source = tmp_path / "planted.py"
    source.write_text("from snas_ray.distributed.launch import launch\n")
    (target, names, _), *_ = _imports(source)
    assert target == "snas_ray.distributed.launch" and names == ["launch"]
    assert _layer(target) > _layer("snas_ray.space.ops")
