"""The published genotypes of spec §12 (NASNet, AmoebaNet, DARTS, SNAS) and loading by name.

:func:`load_genotype` takes a registry name or a genotype JSON file, so it sits beside the
registry; :mod:`snas_ray.genotype` holds the type and the file format. Stdlib only.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

from snas_ray.errors import GenotypeError
from snas_ray.genotype import Genotype, genotype_from_nodes, read_genotype

__all__ = ["REGISTRY", "get_genotype", "load_genotype"]

# Spec §12's shorthand: sep3 = sep_conv_3x3, dil5 = dil_conv_5x5, max/avg = the 3x3 pools, ...
_ABBREV = {"max": "max_pool_3x3", "avg": "avg_pool_3x3", "skip": "skip_connect"} | {
    f"{kind}{k}": f"{kind}_conv_{k}x{k}" for kind in ("sep", "dil") for k in (3, 5, 7)
}
_PAIR = re.compile(r"\((\w+),(\d+)\)")
_NODE = re.compile(r"(?:\(\w+,\d+\))+")


def _nodes(text: str) -> list[list[tuple[str, int]]]:
    # Registry cells are written as in spec §12, "(op,src)(op,src) | ...", to check them by eye.
    nodes = []
    for part in text.split("|"):
        part = part.replace(" ", "")
        if not _NODE.fullmatch(part):
            raise GenotypeError(f"genotype registry: cannot parse node {part!r}")
        nodes.append([(_ABBREV.get(op, op), int(src)) for op, src in _PAIR.findall(part)])
    return nodes


_SNAS = (2, 3, 4, 5)
# (name, normal cell, normal concat, reduction cell, reduction concat), transcribed from spec §12.
# fmt: off
_PUBLISHED = [
    ("NASNet",
     "(sep5,1)(sep3,0) | (sep5,0)(sep3,0) | (avg,1)(skip,0) | (avg,0)(avg,0) | (sep3,1)(skip,1)",
     (2, 3, 4, 5, 6),
     "(sep5,1)(sep7,0) | (max,1)(sep7,0) | (avg,1)(sep5,0) | (skip,3)(avg,2) | (sep3,2)(max,1)",
     (4, 5, 6)),
    ("AmoebaNet",
     "(avg,0)(max,1) | (sep3,0)(sep5,2) | (sep3,0)(avg,3) | (sep3,1)(skip,1) | (skip,0)(avg,1)",
     (4, 5, 6),
     "(avg,0)(sep3,1) | (max,0)(sep7,2) | (sep7,0)(avg,1) | (max,0)(max,1) "
     "| (conv_7x1_1x7,0)(sep3,5)",
     (3, 4, 6)),
    ("DARTS_V1",
     "(sep3,1)(sep3,0) | (skip,0)(sep3,1) | (skip,0)(sep3,1) | (sep3,0)(skip,2)", _SNAS,
     "(max,0)(max,1) | (skip,2)(max,0) | (max,0)(skip,2) | (skip,2)(avg,0)", _SNAS),
    ("DARTS_V2",
     "(sep3,0)(sep3,1) | (sep3,0)(sep3,1) | (sep3,1)(skip,0) | (skip,0)(dil3,2)", _SNAS,
     "(max,0)(max,1) | (skip,2)(max,1) | (max,0)(skip,2) | (skip,2)(max,1)", _SNAS),
    ("SNAS_mild",
     "(sep3,0)(sep3,1) | (skip,0)(dil3,1) | (skip,0)(skip,1) | (skip,0)(sep3,1)", _SNAS,
     "(max,0)(max,1) | (max,1)(skip,2) | (max,1)(skip,2) | (max,0)(dil5,2)", _SNAS),
    ("SNAS_mild_edge_all",
     "(sep3,0)(sep3,1) | (skip,0)(dil3,1)(none,2) | (skip,0)(skip,1)(none,3)(none,2) "
     "| (skip,0)(sep3,1)(none,4)(none,3)(none,2)", _SNAS,
     "(max,0)(max,1) | (none,0)(max,1)(skip,2) | (none,0)(max,1)(skip,2)(none,3) "
     "| (max,0)(dil5,2)(none,1)(none,3)(none,4)", _SNAS),
    ("SNAS_moderate",
     "(dil5,0)(skip,1) | (sep3,0)(skip,1) | (skip,0)(skip,1) | (sep3,0)(dil5,1)", _SNAS,
     "(max,0)(max,1) | (sep5,0)(dil5,1) | (sep5,0)(sep5,1) | (sep5,0)(sep5,1)", _SNAS),
    ("SNAS_moderate_edge_all",
     "(dil5,0)(skip,1) | (sep3,0)(skip,1)(none,2) | (skip,0)(none,3)(none,2)(skip,1) "
     "| (sep3,0)(dil5,1)(none,4)(none,3)(none,2)", _SNAS,
     "(max,0)(max,1) | (sep5,0)(none,2)(dil5,1) | (none,3)(none,2)(sep5,0)(sep5,1) "
     "| (none,4)(none,3)(none,2)(sep5,0)(sep5,1)", _SNAS),
    ("SNAS_aggressive",
     "(sep5,0)(skip,1) | (skip,0)(skip,1) | (dil5,1)(skip,0) | (skip,0)(dil5,1)", _SNAS,
     "(sep5,0)(none,1) | (sep5,0)(none,1) | (none,1)(none,0) | (none,1)(none,0)", _SNAS),
    ("SNAS_aggressive_edge_all",
     "(sep5,0)(skip,1) | (skip,0)(skip,1)(none,2) | (dil5,1)(skip,0)(none,2)(none,3) "
     "| (skip,0)(dil5,1)(none,2)(none,3)(none,4)", _SNAS,
     "(sep5,0)(none,1) | (sep5,0)(none,1)(none,2) | (none,0)(none,1)(none,2)(none,3) "
     "| (none,0)(none,1)(none,2)(none,3)(none,4)", _SNAS),
]
# fmt: on
REGISTRY: dict[str, Genotype] = {
    name: genotype_from_nodes(_nodes(normal), _nodes(reduce), n_concat, reduce_concat=r_concat)
    for name, normal, n_concat, reduce, r_concat in _PUBLISHED
}
# DARTS's own code calls its second-order result plain "DARTS".
REGISTRY["DARTS"] = REGISTRY["DARTS_V2"]


def get_genotype(name: str) -> Genotype:
    """Looks up a published genotype by name, e.g. ``get_genotype("SNAS_mild_edge_all")``.

    Raises:
        GenotypeError: for an unknown name, suggesting the nearest known one.
    """
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise GenotypeError(f"unknown genotype {name!r}{hint}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def load_genotype(name_or_path: str | os.PathLike[str]) -> Genotype:
    """Loads a genotype from a registry name or a JSON file written by ``save_genotype``.

    A string that is a registry name wins over a file of the same name. A string that names no
    file and looks like a name (no suffix, no folder) is reported as an unknown genotype name.

    Raises:
        GenotypeError: for an unknown name, a missing or unreadable file, invalid JSON, or an
            invalid genotype; the message names the file.
    """
    if isinstance(name_or_path, str) and name_or_path in REGISTRY:
        return REGISTRY[name_or_path]
    path = Path(name_or_path)
    looks_like_path = not isinstance(name_or_path, str) or path.suffix or len(path.parts) > 1
    if not looks_like_path and not path.exists():
        return get_genotype(str(name_or_path))
    return read_genotype(path)
