"""Search-space entries map onto Optuna's public suggest API and its distributions."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hptune import space
from hptune.config import load_study_file
from hptune.samplers import grid_size
from tests.conftest import study_yaml

SPACE = """name: demo
search_space:
  activation: {type: categorical, choices: [relu, tanh]}
  lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
  dropout: {type: float, low: 0.0, high: 0.5, step: 0.1}
  width: {type: int, low: 64, high: 256, step: 64}
  depth: {type: int, low: 1, high: 4}
"""


def test_entries_become_optuna_distributions(tmp_path: Path) -> None:
    config = load_study_file(study_yaml(tmp_path / "s.yaml", SPACE))
    study = optuna.create_study()
    trial = study.ask()
    params = space.suggest(trial, config.search_space)
    frozen = study.tell(trial, 0.0)
    # Each YAML entry is exactly one Optuna distribution with the same bounds, step and scale.
    assert frozen.distributions == {
        "activation": CategoricalDistribution(["relu", "tanh"]),
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "dropout": FloatDistribution(0.0, 0.5, step=0.1),
        "width": IntDistribution(64, 256, step=64),
        "depth": IntDistribution(1, 4),
    }
    assert params == frozen.params


def test_describe_shows_range_scale_and_step(tmp_path: Path) -> None:
    config = load_study_file(study_yaml(tmp_path / "s.yaml", SPACE))
    lines = {name: space.describe(p) for name, p in config.search_space.items()}
    assert lines["activation"] == "categorical  relu, tanh"
    assert lines["lr"].endswith("[0.0001, 0.1] log")
    assert lines["width"].endswith("[64, 256] step 64")


def test_fingerprint_ignores_overrides_but_not_the_space(tmp_path: Path) -> None:
    path = study_yaml(tmp_path / "s.yaml", SPACE)
    base = space.fingerprint(load_study_file(path))
    # Training overrides keep the study comparable; a changed range does not.
    assert space.fingerprint(load_study_file(path, ["train.epochs=1"])) == base
    assert space.fingerprint(load_study_file(path, ["search_space.depth.high=5"])) != base


def test_grid_size_is_the_product_of_value_counts(tmp_path: Path) -> None:
    text = """name: demo
sampler: {name: grid}
search_space:
  lr: {type: categorical, choices: [0.005, 0.001, 0.0005, 0.0001]}
  width: {type: categorical, choices: [64, 128, 256]}
"""
    config = load_study_file(study_yaml(tmp_path / "s.yaml", text))
    # Experiment E's 4 learning rates x 3 hidden sizes.
    assert grid_size(config) == 12
