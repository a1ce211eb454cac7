"""Multi-objective studies: objectives as a list, the per-trial metrics model/params and
model/latency_ms, the Pareto front on the parent run and in the report, and the select rule."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient
from torch import nn

from hptune import pareto
from hptune.errors import ConfigError
from hptune.modelcost import latency_ms, trainable_parameters
from hptune.studyfile import validate_config
from tests.conftest import invoke, study_yaml

TWO = [{"metric": "val/accuracy"}, {"metric": "model/params"}]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"objective": TWO}, "pruner.name: Optuna cannot prune a study with 2 objectives"),
        (
            {"objective": {"metric": "model/params"}},
            "pruner.name: model/params is measured once after training, so it cannot prune",
        ),
        (
            {"objective": TWO, "pruner": {"name": "none"}, "sampler": {"name": "cmaes"}},
            "sampler.name: cmaes optimizes one objective",
        ),
        (
            {"objective": [TWO[0], TWO[0]], "pruner": {"name": "none"}},
            "objective: each metric may appear once",
        ),
        ({"select": {"rule": "knee"}}, "select: chooses among a Pareto front"),
        (
            {
                "objective": TWO,
                "pruner": {"name": "none"},
                "select": {"rule": "budget", "budget": {"val/loss": 0.5}},
            },
            "select: val/loss is not an objective",
        ),
        (
            {"objective": TWO, "pruner": {"name": "none"}, "select": {"rule": "budget"}},
            "rule 'budget' needs limits",
        ),
    ],
)
def test_what_several_objectives_do_not_allow(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config({"name": "s", **raw}, where="s.yaml")


def test_size_and_latency_are_minimized_by_default() -> None:
    config = validate_config({"name": "s", "objective": TWO, "pruner": {"name": "none"}})
    assert pareto.directions(config) == ["maximize", "minimize"]


def frozen(number: int, accuracy: float, params: float) -> optuna.trial.FrozenTrial:
    trial = optuna.trial.create_trial(values=[accuracy, params])
    trial.number = number
    return trial


# A front: accuracy up, size up.
FRONT = [frozen(0, 0.80, 1_000), frozen(1, 0.86, 10_000), frozen(2, 0.88, 50_000),
         frozen(3, 0.885, 400_000)]  # fmt: skip


@pytest.mark.parametrize(
    ("select", "expected"),
    [
        (None, 3),  # the front's best on the first objective
        ({"rule": "knee"}, 2),  # nearest the ideal point, both scaled to the front's range
        ({"rule": "budget", "budget": {"model/params": 20_000}}, 1),  # most accurate <= 20k
        ({"rule": "budget", "metric": "model/params", "budget": {"val/accuracy": 0.85}}, 1),
        ({"rule": "budget", "budget": {"model/params": 500}}, None),  # nothing fits
    ],
)
def test_the_select_rule_picks_one_trial_of_the_front(
    select: dict[str, Any] | None, expected: int | None
) -> None:
    raw = {"name": "s", "objective": TWO, "pruner": {"name": "none"}, "select": select}
    chosen = pareto.choose(FRONT, validate_config(raw))
    assert (chosen.number if chosen else None) == expected


def test_model_cost_metrics() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))
    # 784*16 + 16 + 16*10 + 10 trainable parameters.
    assert trainable_parameters(model) == 12_730
    import torch

    assert latency_ms(model, torch.zeros(8, 1, 28, 28)) > 0
    assert model.training  # left as it was


def test_latency_is_measured_only_when_an_objective_needs_it() -> None:
    import torch

    from hptune.objective import Objective

    objective = Objective.__new__(Objective)
    objective.splits = type("Splits", (), {"val_x": torch.zeros(300, 1, 28, 28)})()
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    objective.metrics = ["val/accuracy", "model/params"]
    assert objective.costs(model) == {"model/params": 7850.0}
    objective.metrics = ["val/accuracy", "model/latency_ms"]
    costs = objective.costs(model)
    # Timed over a fixed batch of 256 validation images, whose size is logged beside it.
    assert costs["model/latency_ms"] > 0 and costs["model/latency_batch_size"] == 256


STUDY = """name: pareto
n_trials: 4
objective:
  - {metric: val/accuracy, direction: maximize}
  - {metric: model/params, direction: minimize}
select: {rule: budget, budget: {model/params: 5000}}
sampler: {name: nsga2, seed: 1, options: {population_size: 4}}
pruner: {name: none}
data: {dataset: mnist, val_fraction: 0.2}
model: {depth: 1}
train: {epochs: 1, batch_size: 32}
search_space:
  width: {type: categorical, choices: [2, 4, 8, 32]}
"""


def test_a_two_objective_study_tags_its_front_and_reports_it(
    tmp_path: Path, mnist_dir: Path
) -> None:
    path = study_yaml(tmp_path / "pareto.yaml", STUDY)
    code, _, err = invoke("optimize", str(path))
    assert code == 0, err
    study = optuna.load_study(study_name="pareto", storage="sqlite:///mlruns/optuna.db")
    front = pareto.front(study)
    client = MlflowClient()
    (parent,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`hptune.role` = 'study'"
    )
    # Each trial's second value is its model's trainable parameters: 784w + w + 10w + 10.
    for trial in study.trials:
        width = trial.params["width"]
        assert trial.values[1] == 795 * width + 10
    # Optuna takes no epoch reports with several objectives: the epoch is kept for status.
    assert [t.user_attrs["hptune.epoch"] for t in study.trials] == [1] * 4
    assert all(not t.intermediate_values for t in study.trials)
    # The parent run names the Pareto-optimal trials, and the rule.
    tags = parent.data.tags
    assert tags["hptune.pareto_trials"] == ",".join(str(t.number) for t in front)
    assert "model/params <= 5000" in tags["hptune.select"]
    # The best model: the most accurate front trial within 5,000 parameters (width <= 4).
    within = [t for t in front if t.values[1] <= 5000]
    chosen = max(within, key=lambda t: (t.values[0], -t.number))
    assert tags["best_trial_run_id"] == chosen.user_attrs["hptune.mlflow_run_id"]
    assert "test/accuracy" in parent.data.metrics

    code, out, err = invoke("status", str(path))
    assert code == 0, err
    assert f"pareto front: {len(front)} trials" in out

    code, _, err = invoke("export-report", str(path), "--out", "report")
    assert code == 0, err
    with open("report/pareto.csv") as f:
        rows = list(csv.DictReader(f))
    # One row per front trial, the chosen one marked.
    assert [int(row["trial"]) for row in rows] == [t.number for t in front]
    assert [row["trial"] for row in rows if row["selected"] == "yes"] == [str(chosen.number)]
    assert "Pareto front" in Path("report/report.md").read_text()
