"""Search-space entries map onto Optuna's public suggest API and its distributions."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hptune import space
from hptune.studyfile import load_study_file
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
    params = space.suggest(trial, config)
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


def test_a_conditional_parameter_is_suggested_only_when_its_condition_holds(
    tmp_path: Path,
) -> None:
    text = """name: demo
search_space:
  family: {type: categorical, choices: [mlp, cnn]}
  width: {type: int, low: 64, high: 128, when: {family: mlp}}
"""
    config = load_study_file(study_yaml(tmp_path / "s.yaml", text))
    study = optuna.create_study()
    study.enqueue_trial({"family": "cnn"})
    study.enqueue_trial({"family": "mlp", "width": 96})
    # The CNN trial never sees width; the MLP trial does.
    assert space.suggest(study.ask(), config) == {"family": "cnn"}
    assert space.suggest(study.ask(), config) == {"family": "mlp", "width": 96}
