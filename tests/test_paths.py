"""Path fields of the config: resolved on the driver, and a resolved config still resumes."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from snas_ray.config import (
    PATH_FIELDS,
    ExperimentConfig,
    config_difference,
    flatten,
    relative_paths,
    resolve_paths,
)
from snas_ray.engine.state import check_resumable


def _cfg(**fields: str) -> ExperimentConfig:
    return ExperimentConfig().replace(**fields)


def test_every_path_like_field_is_listed():
    # A new field that names a file or folder must join PATH_FIELDS (and so be resolved).
    def pathish(key: str) -> bool:
        name = key.rsplit(".", 1)[-1]
        return name in ("root", "genotype") or name.endswith(("_path", "_file", "_dir", "_root"))

    found = [k for k in flatten(ExperimentConfig().to_dict()) if pathish(k)]
    assert sorted(found) == sorted(PATH_FIELDS)


@pytest.mark.parametrize("field", PATH_FIELDS)
def test_each_relative_path_field_becomes_absolute_against_the_base(field, tmp_path):
    value = "some/where.json" if field == "train.genotype" else "some/where"
    resolved = resolve_paths(_cfg(**{field: value}), tmp_path)
    got = flatten(resolved.to_dict())[field]
    assert got == str(tmp_path / "some" / value.split("/")[1])
    assert relative_paths(resolved) == {}


@pytest.mark.parametrize("field", PATH_FIELDS)
def test_absolute_paths_stay_and_dots_and_home_are_normalised(field, tmp_path):
    absolute = str(tmp_path / "x.json")
    assert flatten(resolve_paths(_cfg(**{field: absolute})).to_dict())[field] == absolute
    dotted = resolve_paths(_cfg(**{field: "a/../b/./c.json"}), tmp_path)
    assert flatten(dotted.to_dict())[field] == str(tmp_path / "b" / "c.json")
    home = resolve_paths(_cfg(**{field: "~/g.json"}), tmp_path)
    assert flatten(home.to_dict())[field] == os.path.expanduser("~/g.json")


def test_default_base_is_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = resolve_paths(_cfg(**{"data.root": "data", "train.genotype": "g/genotype.json"}))
    assert cfg.data.root == str(tmp_path / "data")
    assert cfg.train.genotype == str(tmp_path / "g" / "genotype.json")


@pytest.mark.parametrize("name", ["SNAS_mild", "DARTS", "NoSuchGenotype"])
def test_genotype_names_are_not_paths(name, tmp_path):
    # Registry names, and bare words that name no file (an unknown name, reported later with
    # suggestions), are left alone.
    assert resolve_paths(_cfg(**{"train.genotype": name}), tmp_path).train.genotype == name


def test_a_bare_word_that_is_a_file_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mygenotype").write_text("{}")
    assert resolve_paths(_cfg(**{"train.genotype": "mygenotype"})).train.genotype == str(
        tmp_path / "mygenotype"
    )


@pytest.mark.parametrize("field", PATH_FIELDS)
def test_a_resolved_path_does_not_make_a_resume_refuse(field, tmp_path):
    relative = _cfg(**{field: "run/genotype.json"})
    resolved = resolve_paths(relative, tmp_path)
    assert config_difference(resolved.to_dict(), relative.to_dict()) is None
    saved = {"kind": "retrain", "config": relative.to_dict()}
    check_resumable("retrain", resolved.to_dict(), saved)  # no CheckpointError
    # Only the path may differ: another setting still refuses.
    other = dataclasses.replace(resolved, seed=resolved.seed + 1)
    assert config_difference(other.to_dict(), relative.to_dict())[0] == "seed"


def test_resolving_is_idempotent(tmp_path):
    once = resolve_paths(_cfg(**{"data.root": "d", "train.genotype": "g.json"}), tmp_path)
    assert resolve_paths(once, Path("/elsewhere")) == once
