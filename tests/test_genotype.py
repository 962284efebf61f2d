"""Tests for snas_ray.genotype: registry contents (spec §12), reading rules, round trips, errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from snas_ray.errors import GenotypeError
from snas_ray.genotype import (
    KNOWN_OPS,
    PRIMITIVES,
    Genotype,
    genotype_from_nodes,
    save_genotype,
)
from snas_ray.published import REGISTRY, get_genotype, load_genotype

NAMES = sorted(REGISTRY)
SNAS_LEVELS = ("mild", "moderate", "aggressive")
CELLS = ("normal", "reduce")


def _non_none(node: list[tuple[str, int]]) -> Counter[tuple[str, int]]:
    return Counter(entry for entry in node if entry[0] != "none")


def _darts_v2() -> dict:
    return REGISTRY["DARTS_V2"].to_dict()


def test_registry_holds_every_published_genotype() -> None:
    expected = {"NASNet", "AmoebaNet", "DARTS_V1", "DARTS_V2", "DARTS"}
    expected |= {f"SNAS_{lvl}{sfx}" for lvl in SNAS_LEVELS for sfx in ("", "_edge_all")}
    assert set(REGISTRY) == expected
    assert REGISTRY["DARTS"] is REGISTRY["DARTS_V2"]


def test_primitives_order_matches_logit_columns() -> None:
    assert PRIMITIVES[0] == "none" and len(PRIMITIVES) == 8
    assert PRIMITIVES.index("sep_conv_3x3") == 4 and PRIMITIVES.index("dil_conv_5x5") == 7
    assert KNOWN_OPS[-2:] == ("sep_conv_7x7", "conv_7x1_1x7")


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_is_valid_and_round_trips(name: str, tmp_path: Path) -> None:
    g = REGISTRY[name]
    assert Genotype(g.normal, g.normal_concat, g.reduce, g.reduce_concat) == g
    d = g.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert Genotype.from_dict(json.loads(json.dumps(d))) == g
    path = tmp_path / f"{name}.json"
    save_genotype(g, path)
    assert load_genotype(path) == g
    assert load_genotype(str(path)) == g
    assert load_genotype(name) is g
    assert get_genotype(name) is g
    nodes = g.node_inputs("normal"), g.node_inputs("reduce")
    assert genotype_from_nodes(*nodes, g.normal_concat, reduce_concat=g.reduce_concat) == g


def test_registry_shapes() -> None:
    for name in ("NASNet", "AmoebaNet"):
        g = REGISTRY[name]
        assert len(g.normal) == len(g.reduce) == 10
        assert g.steps("normal") == g.steps("reduce") == 5
    assert REGISTRY["NASNet"].normal_concat == (2, 3, 4, 5, 6)
    assert REGISTRY["NASNet"].reduce_concat == (4, 5, 6)
    assert REGISTRY["AmoebaNet"].reduce_concat == (3, 4, 6)
    assert REGISTRY["AmoebaNet"].reduce[-2:] == (("conv_7x1_1x7", 0), ("sep_conv_3x3", 5))
    for name in NAMES:
        g = REGISTRY[name]
        assert g.is_edge_all == name.endswith("_edge_all")
        if name not in ("NASNet", "AmoebaNet"):
            assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)
            assert len(g.normal) == len(g.reduce) == (14 if g.is_edge_all else 8)
            assert g.steps("normal") == g.steps("reduce") == 4


# A second, independent transcription of spec §12 (op as one letter, then the source), so that a
# typo in the registry shows up; the edge_all entries are checked against these 8-entry ones.
_OP_INITIALS = {"m": "max_pool_3x3", "a": "avg_pool_3x3", "k": "skip_connect", "c": "conv_7x1_1x7"}
_OP_INITIALS |= {"3": "sep_conv_3x3", "5": "sep_conv_5x5", "7": "sep_conv_7x7", "n": "none"}
_OP_INITIALS |= {"d": "dil_conv_3x3", "D": "dil_conv_5x5"}


@pytest.mark.parametrize(
    ("name", "normal", "reduce"),
    [
        ("NASNet", "51 30 50 30 a1 k0 a0 a0 31 k1", "51 70 m1 70 a1 50 k3 a2 32 m1"),
        ("AmoebaNet", "a0 m1 30 52 30 a3 31 k1 k0 a1", "a0 31 m0 72 70 a1 m0 m1 c0 35"),
        ("DARTS_V1", "31 30 k0 31 k0 31 30 k2", "m0 m1 k2 m0 m0 k2 k2 a0"),
        ("DARTS_V2", "30 31 30 31 31 k0 k0 d2", "m0 m1 k2 m1 m0 k2 k2 m1"),
        ("SNAS_mild", "30 31 k0 d1 k0 k1 k0 31", "m0 m1 m1 k2 m1 k2 m0 D2"),
        ("SNAS_moderate", "D0 k1 30 k1 k0 k1 30 D1", "m0 m1 50 D1 50 51 50 51"),
        ("SNAS_aggressive", "50 k1 k0 k1 D1 k0 k0 D1", "50 n1 50 n1 n1 n0 n1 n0"),
    ],
)
def test_eight_and_ten_entry_genotypes_match_spec(name: str, normal: str, reduce: str) -> None:
    g = REGISTRY[name]
    for cell, text in (("normal", normal), ("reduce", reduce)):
        expected = tuple((_OP_INITIALS[t[0]], int(t[1])) for t in text.split())
        assert getattr(g, cell) == expected


def test_edge_all_keeps_reference_order_within_nodes() -> None:
    # Within a node the reference sorts by edge strength, not by source; the order is kept.
    mild = REGISTRY["SNAS_mild_edge_all"]
    assert mild.node_inputs("reduce")[3] == [
        ("max_pool_3x3", 0),
        ("dil_conv_5x5", 2),
        ("none", 1),
        ("none", 3),
        ("none", 4),
    ]
    moderate = REGISTRY["SNAS_moderate_edge_all"].node_inputs("reduce")
    assert [src for _, src in moderate[3]] == [4, 3, 2, 0, 1]


@pytest.mark.parametrize("level", SNAS_LEVELS)
@pytest.mark.parametrize("cell", CELLS)
def test_edge_all_and_eight_entry_forms_agree(level: str, cell: str) -> None:
    eight = REGISTRY[f"SNAS_{level}"].node_inputs(cell)
    edge_all = REGISTRY[f"SNAS_{level}_edge_all"].node_inputs(cell)
    assert [len(n) for n in eight] == [2, 2, 2, 2]
    assert [len(n) for n in edge_all] == [2, 3, 4, 5]
    for k, node in enumerate(edge_all):
        # edge_all keeps every candidate edge of node k exactly once.
        assert sorted(src for _, src in node) == list(range(k + 2))
    assert [_non_none(n) for n in eight] == [_non_none(n) for n in edge_all]
    if level != "aggressive":
        # Spec §12: the 8-entry genotype is the edge_all one with 'none' removed, order kept.
        assert eight == [[e for e in node if e[0] != "none"] for node in edge_all]
    edges = REGISTRY[f"SNAS_{level}"].active_edges(cell)
    assert edges == REGISTRY[f"SNAS_{level}_edge_all"].active_edges(cell)


def test_aggressive_keeps_none_placeholders() -> None:
    reduce = REGISTRY["SNAS_aggressive"].node_inputs("reduce")
    assert reduce[2] == [("none", 1), ("none", 0)]
    assert sum(op == "none" for op, _ in REGISTRY["SNAS_aggressive"].reduce) == 6


def test_aggressive_edge_all_reduce_nodes_4_and_5_are_all_none() -> None:
    g = REGISTRY["SNAS_aggressive_edge_all"]
    nodes = g.node_inputs("reduce")
    assert {op for op, _ in nodes[2]} == {op for op, _ in nodes[3]} == {"none"}
    assert g.active_edges("reduce") == [(2, "sep_conv_5x5", 0), (3, "sep_conv_5x5", 0)]


def test_node_inputs_grouping() -> None:
    v1 = REGISTRY["DARTS_V1"]
    assert v1.node_inputs("normal") == [
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0)],
        [("skip_connect", 0), ("sep_conv_3x3", 1)],
        [("skip_connect", 0), ("sep_conv_3x3", 1)],
        [("sep_conv_3x3", 0), ("skip_connect", 2)],
    ]
    ea = REGISTRY["SNAS_moderate_edge_all"].node_inputs("normal")
    assert ea[1] == [("sep_conv_3x3", 0), ("skip_connect", 1), ("none", 2)]
    assert ea[2] == [("skip_connect", 0), ("none", 3), ("none", 2), ("skip_connect", 1)]
    assert [len(n) for n in REGISTRY["NASNet"].node_inputs("normal")] == [2] * 5


def test_fourteen_entries_with_other_concat_read_two_per_node() -> None:
    normal = [("skip_connect", 0), ("skip_connect", 1)] * 7
    g = Genotype(normal, [2, 8], REGISTRY["DARTS"].reduce, [2, 3, 4, 5])
    assert g.steps("normal") == 7 and not g.is_edge_all


def test_lists_are_normalised_to_tuples_and_hashable() -> None:
    g = Genotype.from_dict(_darts_v2())
    assert isinstance(g.normal, tuple) and all(isinstance(e, tuple) for e in g.normal)
    assert isinstance(g.reduce_concat, tuple)
    assert hash(g) == hash(REGISTRY["DARTS_V2"])
    with pytest.raises(AttributeError):
        g.normal = ()  # type: ignore[misc]


def test_format_lists_nodes_and_ops() -> None:
    text = REGISTRY["SNAS_mild"].format()
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("normal: n2 <- sep_conv_3x3(0), sep_conv_3x3(1) | n3 <- ")
    assert lines[0].endswith("concat [2,3,4,5]")
    assert lines[1].startswith("reduce: n2 <- max_pool_3x3(0), max_pool_3x3(1)")
    assert "dil_conv_5x5(2)" in lines[1] and lines[0].count(" | ") == 3


def test_unknown_op_message_names_op_suggestion_and_allowed() -> None:
    d = _darts_v2()
    d["normal"][3] = ["sep_conv_3x4", 1]
    with pytest.raises(GenotypeError) as info:
        Genotype.from_dict(d)
    msg = str(info.value)
    assert "\n" not in msg
    assert "normal[3]" in msg and "'sep_conv_3x4'" in msg
    assert "did you mean 'sep_conv_3x3'" in msg
    assert all(op in msg for op in KNOWN_OPS)


@pytest.mark.parametrize(
    ("cell", "index", "entry", "expected"),
    [
        ("normal", 0, ["sep_conv_3x3", 2], "node n2, which accepts sources 0..1"),
        ("reduce", 7, ["max_pool_3x3", 5], "node n5, which accepts sources 0..4"),
        ("normal", 1, ["sep_conv_3x3", -1], "sources 0..1"),
        ("normal", 1, ["sep_conv_3x3", "1"], "integer state id"),
        ("normal", 1, ["sep_conv_3x3", True], "integer state id"),
        ("normal", 1, ["sep_conv_3x3"], "(op, source) pair"),
        ("normal", 1, "sep_conv_3x3", "(op, source) pair"),
    ],
)
def test_bad_entry(cell: str, index: int, entry: object, expected: str) -> None:
    d = _darts_v2()
    d[cell][index] = entry
    with pytest.raises(GenotypeError, match=rf"{cell}\[{index}\]") as info:
        Genotype.from_dict(d)
    assert expected in str(info.value)


def test_bad_source_in_edge_all_node() -> None:
    d = REGISTRY["SNAS_mild_edge_all"].to_dict()
    d["normal"][4] = ["none", 4]  # third entry of node n3, which reads states 0..2
    with pytest.raises(GenotypeError, match=r"normal\[4\].*n3.*sources 0\.\.2"):
        Genotype.from_dict(d)


@pytest.mark.parametrize(
    ("concat", "expected"),
    [
        ([2, 3, 6], "state 6 out of range"),
        ([], "empty or repeated"),
        ([2, 2], "empty or repeated"),
        ("2345", "list of state ids"),
        ([2.0, 3], "list of state ids"),
    ],
)
def test_bad_concat(concat: object, expected: str) -> None:
    d = _darts_v2()
    d["reduce_concat"] = concat
    with pytest.raises(GenotypeError, match=r"reduce_concat") as info:
        Genotype.from_dict(d)
    assert expected in str(info.value)


@pytest.mark.parametrize("entries", [[], [("skip_connect", 0)] * 7])
def test_entry_count_that_cannot_be_grouped(entries: list) -> None:
    with pytest.raises(GenotypeError, match=r"genotype normal: \d+ entries cannot be read"):
        Genotype(entries, [2], REGISTRY["DARTS"].reduce, [2, 3, 4, 5])


def test_from_dict_rejects_typo_and_missing_keys() -> None:
    d = _darts_v2()
    d["normal_concta"] = d.pop("normal_concat")
    with pytest.raises(GenotypeError) as info:
        Genotype.from_dict(d)
    assert "unknown key 'normal_concta'" in str(info.value)
    assert "did you mean 'normal_concat'" in str(info.value)
    d = _darts_v2()
    del d["reduce"]
    with pytest.raises(GenotypeError, match="missing key 'reduce'"):
        Genotype.from_dict(d)
    with pytest.raises(GenotypeError, match="expected an object"):
        Genotype.from_dict([1, 2])  # type: ignore[arg-type]


def test_unknown_name_suggests_nearest() -> None:
    with pytest.raises(GenotypeError) as info:
        get_genotype("SNAS_mild_edgeall")
    msg = str(info.value)
    assert "unknown genotype 'SNAS_mild_edgeall'" in msg
    assert "did you mean 'SNAS_mild_edge_all'" in msg and "DARTS_V1" in msg
    with pytest.raises(GenotypeError, match="did you mean 'DARTS_V2'"):
        load_genotype("DARTS_V3")


def test_unknown_cell_name() -> None:
    with pytest.raises(GenotypeError, match="unknown cell 'reduction'"):
        REGISTRY["DARTS"].node_inputs("reduction")


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(GenotypeError, match=r"genotype file .*nope\.json.*cannot read"):
        load_genotype(missing)
    bad = tmp_path / "bad.json"
    bad.write_text('{"normal": [', encoding="utf-8")
    with pytest.raises(GenotypeError, match=r"bad\.json.*invalid JSON"):
        load_genotype(str(bad))
    typo = tmp_path / "typo.json"
    d = _darts_v2()
    d["reduce_concta"] = d.pop("reduce_concat")
    typo.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(GenotypeError) as info:
        load_genotype(typo)
    msg = str(info.value)
    assert "typo.json" in msg and "did you mean 'reduce_concat'" in msg and "\n" not in msg
    wrong = tmp_path / "wrong.json"
    wrong.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(GenotypeError, match=r"wrong\.json.*expected an object"):
        load_genotype(wrong)


def test_save_is_atomic_and_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "genotype.json"
    save_genotype(REGISTRY["DARTS_V1"], path)
    save_genotype(REGISTRY["SNAS_mild_edge_all"], path)
    assert [p.name for p in tmp_path.iterdir()] == ["genotype.json"]
    assert json.loads(path.read_text(encoding="utf-8")) == REGISTRY["SNAS_mild_edge_all"].to_dict()
    assert load_genotype(path) == REGISTRY["SNAS_mild_edge_all"]
    with pytest.raises(GenotypeError, match="expected a Genotype"):
        save_genotype(REGISTRY["DARTS"].to_dict(), path)  # type: ignore[arg-type]


def test_active_edges() -> None:
    g = REGISTRY["SNAS_mild_edge_all"]
    assert g.active_edges("normal") == [
        (2, "sep_conv_3x3", 0),
        (2, "sep_conv_3x3", 1),
        (3, "skip_connect", 0),
        (3, "dil_conv_3x3", 1),
        (4, "skip_connect", 0),
        (4, "skip_connect", 1),
        (5, "skip_connect", 0),
        (5, "sep_conv_3x3", 1),
    ]


def test_genotype_from_nodes_rejects_sizes_it_cannot_store() -> None:
    nodes = [[("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0)]] * 4
    with pytest.raises(GenotypeError, match=r"node sizes \[3, 3, 3, 3\]"):
        genotype_from_nodes(nodes, REGISTRY["DARTS"].node_inputs("reduce"))
    uniform = genotype_from_nodes(
        REGISTRY["DARTS"].node_inputs("normal"), REGISTRY["DARTS"].node_inputs("reduce")
    )
    assert uniform == REGISTRY["DARTS"]
