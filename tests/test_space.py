"""Search-space entries map onto Optuna's public suggest API and its distributions."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
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


@pytest.mark.filterwarnings("ignore:The distribution is specified by")  # Optuna's own note
@pytest.mark.parametrize(
    ("name", "entry", "highest"),
    [
        ("width", "{type: int, low: 64, high: 200, step: 64}", 192),
        ("width", "{type: int, low: 64, high: 192, step: 64}", 192),
        ("lr", "{type: float, low: 0.1, high: 1.0, step: 0.4}", 0.9),
        ("dropout", "{type: float, low: 0.0, high: 0.5, step: 0.1}", 0.5),
        ("dropout", "{type: float, low: 0.0, high: 0.5, step: 0.15}", 0.45),
        ("lr", "{type: float, low: 0.001, high: 0.01}", 0.01),
    ],
)
def test_the_highest_value_is_the_one_optuna_runs(
    tmp_path: Path, name: str, entry: str, highest: float
) -> None:
    path = study_yaml(tmp_path / "s.yaml", f"name: s\nsearch_space:\n  {name}: {entry}\n")
    config = load_study_file(path)
    study = optuna.create_study()
    trial = study.ask()
    space.suggest(trial, config)
    distribution = study.tell(trial, 0.0).distributions[name]
    # What hptune says is the highest value is the high Optuna's distribution runs with.
    assert config.search_space[name].highest == distribution.high == highest  # type: ignore[union-attr]


def test_a_step_that_does_not_divide_its_range_is_a_warning(tmp_path: Path) -> None:
    from tests.conftest import invoke

    path = study_yaml(
        tmp_path / "s.yaml",
        "name: s\ndata: {dataset: mnist}\nsearch_space:\n"
        "  width: {type: int, low: 64, high: 200, step: 64}\n"
        "  depth: {type: int, low: 1, high: 3}\n",
    )
    warning = (
        f"warning: {path}: search_space.width: step 64 does not divide [64, 200], so 200 never "
        "runs: the highest value is 192 (write high: 192 to say so)"
    )
    code, _, err = invoke("validate", str(path))
    # validate: the key, what never runs and what does, once; other ranges are not named.
    assert code == 0 and err.splitlines() == [warning]
    code, _, err = invoke("optimize", str(path))
    # optimize says it too, before it starts (here it then stops: no data).
    assert code == 2 and err.splitlines()[0] == warning
