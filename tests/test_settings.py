"""A study is what it trained on: effective settings are recorded, and a rerun that would
train on other data, another model or other training settings is refused."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from hptune import storage
from hptune.tracking import EFFECTIVE_STUDY_FILE
from tests.conftest import invoke, study_yaml

TINY = """name: tiny
n_trials: 1
data: {dataset: mnist, val_fraction: 0.2}
model: {width: 8, depth: 1}
train: {epochs: 1, batch_size: 32}
pruner: {name: none}
search_space:
  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
"""


def runs(role: str) -> list:
    client = MlflowClient()
    return client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`hptune.role` = '{role}'",
    )


def stored_trials() -> int:
    return len(optuna.load_study(study_name="tiny", storage=storage.DEFAULT_STORAGE).trials)


@pytest.fixture
def tiny(tmp_path: Path, mnist_dir: Path) -> Path:
    return study_yaml(tmp_path / "tiny.yaml", TINY)


def test_overrides_are_trial_params_and_in_the_parent_runs_effective_file(tiny: Path) -> None:
    code, _, err = invoke("optimize", str(tiny), "--set", "data.train_subset=120")
    assert code == 0, err
    (trial,) = runs("trial")
    params = trial.data.params
    # The effective configuration, after --set, under dotted keys.
    assert params["data.train_subset"] == "120"
    assert params["train.epochs"] == "1"
    assert params["model.width"] == "8"
    # The searched value is the trial's own, not the file's default.
    # (Both shown to 4 significant digits: MLflow params are text, as a user reads them.)
    assert float(params["train.lr"]) == pytest.approx(float(params["lr"]), rel=1e-3)
    # What the trial ran on, beside what was configured.
    assert params["device"] == "cpu" and params["train.device"] == "auto"
    assert params["precision"] in ("fp32", "bf16")
    (parent,) = runs("study")
    assert parent.data.tags["hptune.overrides"] == "data.train_subset=120"
    # 120 images less the 20% validation split; the test set is the whole 100.
    assert parent.data.tags["hptune.train_size"] == "96"
    assert parent.data.tags["hptune.val_size"] == "24"
    assert parent.data.tags["hptune.test_size"] == "100"
    effective = MlflowClient().download_artifacts(parent.info.run_id, EFFECTIVE_STUDY_FILE)
    text = Path(effective).read_text()
    assert text.startswith(f"# {tiny} as run, with --set data.train_subset=120\n")
    assert yaml.safe_load(text)["data"]["train_subset"] == 120


def test_a_rerun_on_other_data_is_refused_with_exit_2(tiny: Path) -> None:
    assert invoke("optimize", str(tiny), "--set", "data.train_subset=120")[0] == 0
    code, _, err = invoke("optimize", str(tiny), "--set", "data.train_subset=150")
    # Trials trained on 120 and 150 images would not compare: a user error, nothing written.
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("error: study 'tiny' in ")
    assert "(data.train_subset: 120 -> 150)" in line and "--study-name NEW" in line
    assert stored_trials() == 1 and len(runs("trial")) == 1


@pytest.mark.parametrize(
    "other", [("--n-trials", "2"), ("--device", "cpu"), ("--set", "data.test_subset=50")]
)
def test_a_rerun_may_change_what_does_not_change_a_trial(
    tiny: Path, other: tuple[str, str]
) -> None:
    assert invoke("optimize", str(tiny))[0] == 0
    code, _, err = invoke("optimize", str(tiny), *other)
    # How many trials, where they run and the test set do not change what a trial computes.
    assert code == 0, err
    assert stored_trials() == (3 if other[0] == "--n-trials" else 2)
