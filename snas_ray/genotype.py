"""Cell genotypes: operation names, the validated ``Genotype`` type and its JSON file format.

Stdlib only (plus ``errors`` and ``layout``), so every layer may import it. Layout and reading
rules: snas-spec.md §8, §11.1, §12; the published genotypes are in :mod:`snas_ray.published`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snas_ray.errors import GenotypeError
from snas_ray.layout import atomic_write_text

__all__ = [
    "EXTRA_OPS",
    "KNOWN_OPS",
    "PRIMITIVES",
    "Genotype",
    "GenotypeError",
    "genotype_from_nodes",
    "read_genotype",
    "save_genotype",
]

# Column order of the architecture logits (spec §1.1); do not reorder.
PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
# Not searchable; only the NASNet and AmoebaNet genotypes use them.
EXTRA_OPS: tuple[str, ...] = ("sep_conv_7x7", "conv_7x1_1x7")
KNOWN_OPS: tuple[str, ...] = PRIMITIVES + EXTRA_OPS

_Entries = tuple[tuple[str, int], ...]
_CELLS = ("normal", "reduce")
_KEYS = ("normal", "normal_concat", "reduce", "reduce_concat")
_EDGE_ALL_CONCAT = (2, 3, 4, 5)
_EDGE_ALL_SIZES = (2, 3, 4, 5)


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_list(value: Any) -> bool:
    # A string is a Sequence too, but "sep_conv_3x3" where a list belongs is always a mistake.
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but True as a state id is always a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def _norm_entries(cell: str, entries: Any) -> _Entries:
    if not _is_list(entries):
        raise GenotypeError(f"genotype {cell}: expected a list of (op, src) pairs, got {entries!r}")
    out = []
    for i, entry in enumerate(entries):
        where = f"genotype {cell}[{i}]"
        if not _is_list(entry) or len(entry) != 2:
            raise GenotypeError(f"{where}: expected an (op, source) pair, got {entry!r}")
        op, src = entry
        if not isinstance(op, str) or op not in KNOWN_OPS:
            hint = _did_you_mean(op, KNOWN_OPS) if isinstance(op, str) else ""
            raise GenotypeError(
                f"{where}: unknown op {op!r}{hint}; allowed: {', '.join(KNOWN_OPS)}"
            )
        if not _is_int(src):
            raise GenotypeError(f"{where}: source must be an integer state id, got {src!r}")
        out.append((op, src))
    return tuple(out)


def _norm_concat(cell: str, concat: Any) -> tuple[int, ...]:
    if not _is_list(concat) or not all(_is_int(c) for c in concat):
        raise GenotypeError(f"genotype {cell}_concat: expected a list of state ids, got {concat!r}")
    return tuple(concat)


def _node_sizes(entries: _Entries, concat: tuple[int, ...]) -> tuple[int, ...]:
    # The reference tells the two layouts apart only by length and concat (spec §11.1, §12).
    if len(entries) == sum(_EDGE_ALL_SIZES) and concat == _EDGE_ALL_CONCAT:
        return _EDGE_ALL_SIZES
    return (2,) * (len(entries) // 2)


def _group(entries: _Entries, concat: tuple[int, ...]) -> list[list[tuple[str, int]]]:
    nodes, start = [], 0
    for size in _node_sizes(entries, concat):
        nodes.append(list(entries[start : start + size]))
        start += size
    return nodes


def _check_cell(cell: str, entries: _Entries, concat: tuple[int, ...]) -> None:
    nodes = _group(entries, concat)
    if not nodes or sum(map(len, nodes)) != len(entries):
        raise GenotypeError(
            f"genotype {cell}: {len(entries)} entries cannot be read two per node; expected a "
            f"positive even count, or 14 entries with concat {list(_EDGE_ALL_CONCAT)} (edge_all)"
        )
    i = 0
    for k, node in enumerate(nodes):
        for op, src in node:
            if not 0 <= src <= k + 1:
                raise GenotypeError(
                    f"genotype {cell}[{i}]: {op}({src}) feeds node n{k + 2}, which accepts "
                    f"sources 0..{k + 1}"
                )
            i += 1
    last = len(nodes) + 1
    bad = [c for c in concat if not 0 <= c <= last]
    if not concat or bad or len(set(concat)) != len(concat):
        what = f"state {bad[0]} out of range" if bad else "empty or repeated state ids"
        raise GenotypeError(
            f"genotype {cell}_concat: {what} in {list(concat)}; allowed distinct ids 0..{last}"
        )


@dataclass(frozen=True)
class Genotype:
    """A normal and a reduction cell: flat (op, source state) entries plus the output states.

    States 0 and 1 are the cell inputs; node k (0-based) is state k + 2 and may read states 0..k+1.
    Entries are read two per node, except a 14-entry cell with concat [2, 3, 4, 5], which is the
    SNAS "edge_all" form read 2, 3, 4, 5 per node. Lists are normalised to tuples on construction.

    Attributes:
        normal: Entries of the normal cell, in reference order.
        normal_concat: States of the normal cell concatenated into its output.
        reduce: Entries of the reduction cell, in reference order.
        reduce_concat: States of the reduction cell concatenated into its output.
    """

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        """Normalises lists to tuples and raises GenotypeError on the first invalid field."""
        for cell in _CELLS:
            entries = _norm_entries(cell, getattr(self, cell))
            concat = _norm_concat(cell, getattr(self, f"{cell}_concat"))
            object.__setattr__(self, cell, entries)
            object.__setattr__(self, f"{cell}_concat", concat)
            _check_cell(cell, entries, concat)

    def _cell(self, cell: str) -> tuple[_Entries, tuple[int, ...]]:
        if cell not in _CELLS:
            raise GenotypeError(f"unknown cell {cell!r}; allowed: {', '.join(_CELLS)}")
        return getattr(self, cell), getattr(self, f"{cell}_concat")

    def node_inputs(self, cell: str) -> list[list[tuple[str, int]]]:
        """Groups a cell's entries per intermediate node (node k is state k + 2).

        Args:
            cell: ``"normal"`` or ``"reduce"``.

        Returns:
            One list of (op, source) pairs per node, in entry order.
        """
        return _group(*self._cell(cell))

    @property
    def is_edge_all(self) -> bool:
        """Whether both cells use the 14-entry edge_all layout."""
        return all(_node_sizes(*self._cell(cell)) == _EDGE_ALL_SIZES for cell in _CELLS)

    def steps(self, cell: str) -> int:
        """Number of intermediate nodes of ``cell`` (``"normal"`` or ``"reduce"``)."""
        return len(self.node_inputs(cell))

    def active_edges(self, cell: str) -> list[tuple[int, str, int]]:
        """Lists the entries of ``cell`` other than ``'none'``: all that a child network builds.

        Returns:
            ``(node_state_id, op, source)`` triples in entry order.
        """
        nodes = self.node_inputs(cell)
        return [(k + 2, op, s) for k, node in enumerate(nodes) for op, s in node if op != "none"]

    def to_dict(self) -> dict[str, list[Any]]:
        """Returns a JSON-ready dict; :meth:`from_dict` inverts it exactly."""
        out: dict[str, list[Any]] = {}
        for cell in _CELLS:
            entries, concat = self._cell(cell)
            out[cell] = [[op, src] for op, src in entries]
            out[f"{cell}_concat"] = list(concat)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Genotype:
        """Builds a genotype from :meth:`to_dict` output, rejecting unknown or missing keys.

        Raises:
            GenotypeError: naming the offending key, or the entry that fails validation.
        """
        if not isinstance(d, Mapping):
            raise GenotypeError(f"genotype: expected an object with keys {', '.join(_KEYS)}")
        for key in d:
            if key not in _KEYS:
                hint = _did_you_mean(str(key), _KEYS)
                raise GenotypeError(
                    f"genotype: unknown key {key!r}{hint}; allowed keys: {', '.join(_KEYS)}"
                )
        missing = [key for key in _KEYS if key not in d]
        if missing:
            raise GenotypeError(f"genotype: missing key {missing[0]!r}")
        return cls(**{key: d[key] for key in _KEYS})

    def format(self) -> str:
        """Readable text, one line per cell: ``normal: n2 <- sep_conv_3x3(0), ... | n3 <- ...``."""
        lines = []
        for cell in _CELLS:
            nodes = " | ".join(
                f"n{k + 2} <- " + ", ".join(f"{op}({src})" for op, src in node)
                for k, node in enumerate(self.node_inputs(cell))
            )
            concat = ",".join(str(c) for c in self._cell(cell)[1])
            lines.append(f"{cell}: {nodes}  concat [{concat}]")
        return "\n".join(lines)


def genotype_from_nodes(
    normal_nodes: Sequence[Sequence[tuple[str, int]]],
    reduce_nodes: Sequence[Sequence[tuple[str, int]]],
    concat: Sequence[int] = _EDGE_ALL_CONCAT,
    *,
    reduce_concat: Sequence[int] | None = None,
) -> Genotype:
    """Flattens per-node entry lists into a genotype; the inverse of :meth:`Genotype.node_inputs`.

    Args:
        normal_nodes: For each node of the normal cell, its (op, source) pairs.
        reduce_nodes: The same for the reduction cell.
        concat: States concatenated into the normal cell's output, and into the reduction
            cell's unless ``reduce_concat`` is given.
        reduce_concat: States concatenated into the reduction cell's output, if they differ.

    Raises:
        GenotypeError: if the node sizes would be read back differently (each node must have 2
            entries, or the nodes must have 2, 3, 4, 5 entries with concat [2, 3, 4, 5]).
    """
    given = {"normal": normal_nodes, "reduce": reduce_nodes}
    flat = {cell: [entry for node in nodes for entry in node] for cell, nodes in given.items()}
    r_concat = concat if reduce_concat is None else reduce_concat
    genotype = Genotype(flat["normal"], tuple(concat), flat["reduce"], tuple(r_concat))
    for cell, nodes in given.items():
        wanted = [len(node) for node in nodes]
        if [len(node) for node in genotype.node_inputs(cell)] != wanted:
            raise GenotypeError(
                f"genotype {cell}: node sizes {wanted} would not be read back as given; use 2 "
                f"entries per node, or 2, 3, 4, 5 entries with concat {list(_EDGE_ALL_CONCAT)}"
            )
    return genotype


def read_genotype(path: str | os.PathLike[str]) -> Genotype:
    """Reads a genotype JSON file written by :func:`save_genotype`.

    Registry names are read by :func:`snas_ray.published.load_genotype`, which also takes files.

    Raises:
        GenotypeError: for a missing or unreadable file, invalid JSON, or an invalid genotype;
            the message names the file.
    """
    path = Path(path)
    where = f"genotype file {str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GenotypeError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise GenotypeError(f"{where}: not UTF-8 text: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GenotypeError(f"{where}: invalid JSON: {exc}") from None
    except RecursionError:
        raise GenotypeError(f"{where}: nested too deeply to be a genotype") from None
    try:
        return Genotype.from_dict(data)
    except GenotypeError as exc:
        # Drop the leading "genotype" so the file reads as the subject of the message.
        raise GenotypeError(f"{where}: {re.sub(r'^genotype:? ', '', str(exc))}") from None


def save_genotype(genotype: Genotype, path: str | os.PathLike[str]) -> None:
    """Writes ``genotype`` as JSON with :func:`snas_ray.layout.atomic_write_text`.

    Readers, and a crash mid-write, therefore see either the old file or the complete new one.
    """
    if not isinstance(genotype, Genotype):
        raise GenotypeError(f"save_genotype: expected a Genotype, got {type(genotype).__name__}")
    path = Path(path)
    # One key per line keeps the file diffable without spreading every pair over three lines.
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in genotype.to_dict().items())
    atomic_write_text(path, "{\n" + body + "\n}\n")
