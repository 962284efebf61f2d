"""One typed experiment config: dataclass defaults -> YAML file -> ``--set key=value`` -> validate.

``sections`` holds the dataclasses, ``load`` builds one from a file and overrides, ``resume`` says
which fields may differ between a run and its resumption, ``paths`` makes the path fields
absolute, ``typed_yaml`` is the generic parser.
"""

from snas_ray.config.load import apply_overrides, load_config, read_config_file
from snas_ray.config.paths import PATH_FIELDS, is_genotype_file, relative_paths, resolve_paths
from snas_ray.config.resume import RESUME_MAY_DIFFER, config_difference, flatten
from snas_ray.config.sections import (
    BUDGET_METRICS,
    BUDGET_SEPARATION,
    DATASETS,
    ESTIMATORS,
    PRECISIONS,
    SEPARATIONS,
    CostConfig,
    DatasetConfig,
    ExperimentConfig,
    OptimConfig,
    OutputConfig,
    SamplingConfig,
    SearchConfig,
    SpaceConfig,
    TrainConfig,
    check_network_size,
)
from snas_ray.config.typed_yaml import MAX_INT, build_section, dump_value, parse_yaml

__all__ = [
    "BUDGET_METRICS",
    "BUDGET_SEPARATION",
    "DATASETS",
    "ESTIMATORS",
    "PATH_FIELDS",
    "MAX_INT",
    "PRECISIONS",
    "RESUME_MAY_DIFFER",
    "SEPARATIONS",
    "CostConfig",
    "DatasetConfig",
    "ExperimentConfig",
    "OptimConfig",
    "OutputConfig",
    "SamplingConfig",
    "SearchConfig",
    "SpaceConfig",
    "TrainConfig",
    "apply_overrides",
    "build_section",
    "check_network_size",
    "config_difference",
    "dump_value",
    "flatten",
    "is_genotype_file",
    "load_config",
    "parse_yaml",
    "read_config_file",
    "relative_paths",
    "resolve_paths",
]
