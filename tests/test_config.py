"""The study file schema: every error names the file, the key path and the rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hptune.errors import ConfigError
from hptune.studyfile import load_study_file
from tests.conftest import study_yaml

MINIMAL = "name: demo\n"


def errors_of(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> list[str]:
    path = study_yaml(tmp_path / "study.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_study_file(path, overrides)
    return caught.value.problems


def test_minimal_file_gets_documented_defaults(tmp_path: Path) -> None:
    config = load_study_file(study_yaml(tmp_path / "s.yaml", MINIMAL))
    # The defaults the README documents: validation accuracy maximized, TPE + median pruning.
    assert config.objective.metric == "val/accuracy"
    assert config.objective.resolved_direction == "maximize"
    assert (config.sampler.name, config.pruner.name) == ("tpe", "median")
    assert config.model.layer_sizes == [128, 128]
    assert config.source == tmp_path / "s.yaml"


def test_loss_objective_defaults_to_minimize(tmp_path: Path) -> None:
    config = load_study_file(
        study_yaml(tmp_path / "s.yaml", MINIMAL + "objective: {metric: val/loss}\n")
    )
    # A loss is minimized unless the file says otherwise.
    assert config.objective.resolved_direction == "minimize"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: demo\ntrain: {epochs: 0}\n",
            r"study.yaml: train.epochs: Input should be greater than or equal to 1 \(got 0\)",
        ),
        ("name: demo\ntrain: {epoch: 3}\n", r"study.yaml: train.epoch: unknown key"),
        (
            "name: demo\nmodel: {activation: swish}\n",
            r"model.activation: unknown activation 'swish'; valid names: relu, leaky_relu",
        ),
        (
            "name: demo\ntrain: {optimizer: lion}\n",
            r"train.optimizer: unknown optimizer 'lion'; valid names: sgd, sgd_momentum",
        ),
        (
            "name: demo\nsampler: {name: bayes}\n",
            r"sampler.name: unknown sampler 'bayes'; valid names: tpe, random",
        ),
        ("name: demo\npruner: {name: early}\n", r"pruner.name: unknown pruner 'early'"),
        (
            "name: demo\ndata: {dataset: cifar10}\n",
            r"data.dataset: unknown dataset 'cifar10'; valid names: fashion_mnist, mnist",
        ),
        (
            "name: demo\ndata: {val_fraction: 1.5}\n",
            r"data.val_fraction: Input should be less than 1",
        ),
        (
            "name: demo\ndata: {val_fraction: 0}\n",
            r"data: validation='split' needs val_fraction > 0",
        ),
        (
            "name: demo\nmodel: {family: cnn, width: 64}\n",
            r"model: width not used by model family 'cnn'",
        ),
        (
            "name: demo\nmodel: {hidden_sizes: [64], width: 32}\n",
            r"hidden_sizes replaces width and depth",
        ),
        (
            "name: demo\nsearch_space: {lr: {type: float, low: 0.1, high: 0.01}}\n",
            r"search_space.lr: low must not exceed high, but got low=0.1, high=0.01",
        ),
        (
            "name: demo\nsearch_space: {lr: {type: float, low: 0, high: 0.1, log: true}}\n",
            r"search_space.lr: log scale needs low > 0",
        ),
        (
            "name: demo\nsearch_space: {lr: {type: uniform, low: 0, high: 1}}\n",
            r"search_space.lr: Input tag 'uniform' found using 'type' does not match",
        ),
        (
            "name: demo\nsearch_space: {colour: {type: categorical, choices: [red]}}\n",
            r"search_space.colour: unknown parameter 'colour'; valid names: family, activation",
        ),
        (
            "name: demo\nsearch_space: {activation: {type: categorical, choices: [relu, swish]}}\n",
            r"search_space.activation.choices\[1\]: unknown activation 'swish'",
        ),
        (
            "name: demo\nsearch_space: {width: {type: int, low: 0, high: 64}}\n",
            r"search_space.width.low: Input should be greater than or equal to 1 \(got 0\)",
        ),
        (
            "name: demo\nsearch_space: {width: {type: float, low: 1, high: 64}}\n",
            r"search_space.width: width takes whole numbers; use type: int",
        ),
        (
            "name: demo\ntrain: {lr: 0.1}\n"
            "search_space: {lr: {type: float, low: 0.001, high: 0.1}}\n",
            r"train.lr: is fixed here and also searched by search_space.lr; keep one",
        ),
        ("name: bad name\n", r"name: String should match pattern"),
        ("train: {}\n", r"study.yaml: name: required key is missing"),
    ],
)
def test_invalid_file_names_key_and_rule(tmp_path: Path, text: str, expected: str) -> None:
    problems = errors_of(tmp_path, text)
    # The rule is reported once, with the file and key path in front of it.
    assert any(re.search(expected, p) for p in problems), problems


def test_every_problem_is_reported_one_per_line(tmp_path: Path) -> None:
    problems = errors_of(tmp_path, "name: demo\ntrain: {epochs: -1, batch_size: 0, colour: red}\n")
    # Three independent mistakes give three lines, not just the first.
    assert len(problems) == 3
    assert all(p.startswith(f"{tmp_path / 'study.yaml'}: train.") for p in problems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "a study file is a mapping of keys, but this one is empty"),
        ("- a\n- b\n", "but this one is a list"),
        ("name: [unclosed\n", "study.yaml:2:1: not valid YAML"),
    ],
)
def test_malformed_yaml_is_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    problems = errors_of(tmp_path, text)
    # Broken YAML names the file (and line) instead of raising a parser traceback.
    assert len(problems) == 1 and expected in problems[0]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: no such study file"):
        load_study_file(tmp_path / "nope.yaml")


def test_override_sets_nested_keys_with_yaml_types(tmp_path: Path) -> None:
    path = study_yaml(tmp_path / "s.yaml", MINIMAL)
    config = load_study_file(
        path, ["train.epochs=2", "data.train_subset=3000", "model.hidden_sizes=[64, 32]"]
    )
    # Values are parsed as YAML, so numbers and lists arrive typed.
    assert config.train.epochs == 2
    assert config.data.train_subset == 3000
    assert config.model.layer_sizes == [64, 32]


def test_invalid_override_is_validated_like_the_file(tmp_path: Path) -> None:
    problems = errors_of(tmp_path, MINIMAL, ("train.epochs=abc",))
    # The error says which --set caused it.
    assert problems == [
        f"{tmp_path / 'study.yaml'}: train.epochs: Input should be a valid integer, "
        "unable to parse string as an integer (got 'abc') [from --set train.epochs=abc]"
    ]


def test_override_of_a_searched_key_names_the_conflict(tmp_path: Path) -> None:
    text = MINIMAL + "search_space: {lr: {type: float, low: 0.001, high: 0.1, log: true}}\n"
    problems = errors_of(tmp_path, text, ("train.lr=0.01",))
    # Fixing a searched parameter from the CLI is refused, naming both places.
    assert len(problems) == 1
    assert (
        "train.lr: is searched by search_space.lr, so --set train.lr=0.01 conflicts" in problems[0]
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("name=other", "a study's identity is its name; use --study-name"),
        ("train.epochs", "expected KEY.PATH=VALUE"),
        ("name.sub=1", "name is a value, not a section"),
    ],
)
def test_bad_override_syntax(tmp_path: Path, override: str, expected: str) -> None:
    problems = errors_of(tmp_path, MINIMAL, (override,))
    assert expected in problems[0]


def test_study_name_option_renames_the_study(tmp_path: Path) -> None:
    config = load_study_file(study_yaml(tmp_path / "s.yaml", MINIMAL), study_name="demo-2")
    # --study-name is the one deliberate way to change a study's identity.
    assert config.name == "demo-2"


def test_with_params_writes_searched_values_into_sections(tmp_path: Path) -> None:
    config = load_study_file(study_yaml(tmp_path / "s.yaml", MINIMAL))
    trial = config.with_params({"activation": "tanh", "lr": 0.01, "width": 64, "depth": 3})
    assert (trial.model.activation, trial.train.lr, trial.model.layer_sizes) == (
        "tanh",
        0.01,
        [64] * 3,
    )
    # The base config is unchanged (configs are immutable values).
    assert config.model.activation == "relu"
