"""Every experiment of SEED_EXPERIMENTS.md is a study file that runs each configuration once."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from hptune import grid, storage
from hptune.studyfile import load_study_file
from tests.conftest import invoke

STUDIES = Path(__file__).resolve().parent.parent / "studies"

# The list of study files and the size of each experiment's table.
CONFIGURATIONS = {
    "fashion_cnn_activation_optimizer": 6,  # A: six named pairs
    "fashion_mlp_dynamics": 120,  # B: 6 activations x 5 optimizers x 4 schedulers
    "mnist_fit_regimes": 3,  # C: under-, good, over-fit
    "mnist_mlp_activations": 8,  # C: 4 activations x 2 shapes
    "mnist_cnn_baseline": 1,  # D
    "mnist_cnn_depth_width": 9,  # D: 3 (blocks, dense) x 3 neurons
    "mnist_cnn_activations": 11,  # D
    "mnist_cnn_activation_depth": 15,  # D: 5 activations x 3 depths
    "mnist_cnn_optimizer_lr": 20,  # D: 5 optimizers x 4 lr
    "mnist_cnn_batch_epochs": 60,  # D: 5 activations x 4 batch sizes x 3 epochs
    "mnist_dense_sgd": 1,  # D: no convolution
    "fashion_mlp_lr_hidden": 12,  # E: 4 lr x 3 hidden sizes
}


def test_the_studies_folder_holds_exactly_the_experiments_and_the_flagship() -> None:
    names = {path.stem for path in STUDIES.glob("*.yaml")}
    assert names == {*CONFIGURATIONS, "fashion", "fashion_pareto"}


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
def test_validate_prints_the_number_of_configurations(name: str) -> None:
    path = STUDIES / f"{name}.yaml"
    code, out, err = invoke("validate", str(path))
    assert code == 0, err
    # A table study says how many runs it is, on a line of its own.
    assert re.search(rf"^configurations: {CONFIGURATIONS[name]}$", out, re.MULTILINE)
    # Each file opens (after the schema line, tests/test_schema.py) with a comment naming the
    # experiment it reproduces.
    assert path.read_text().splitlines()[1].startswith("# Experiment ")


def test_the_flagship_searches_both_families_with_conditional_mlp_parameters() -> None:
    config = load_study_file(STUDIES / "fashion.yaml")
    assert not grid.is_exhaustive(config)
    assert config.search_space["family"].choices == ["mlp", "cnn"]  # type: ignore[union-attr]
    for name in ("width", "depth", "dropout"):
        assert config.search_space[name].when == {"family": "mlp"}


def runs_of(experiment: str, role: str) -> list:
    """The MLflow runs of one study, by role (``study`` or ``trial``)."""
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    return client.search_runs([found.experiment_id], f"tags.`hptune.role` = '{role}'")


def trials_of(name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(
        study_name=name, storage=storage.open_storage(storage.storage_url(None))
    )
    return study.get_trials(deepcopy=False)


def run_twice(path: Path, *overrides: str) -> tuple[str, str]:
    args = ["optimize", str(path), "--device", "cpu"]
    for override in overrides:
        args += ["--set", override]
    code, first, err = invoke(*args)
    assert code == 0, err
    code, second, err = invoke(*args)
    assert code == 0, err
    return first, second


def assert_each_row_ran_once(name: str) -> list[optuna.trial.FrozenTrial]:
    config = load_study_file(STUDIES / f"{name}.yaml")
    trials = trials_of(name)
    ran = sorted(grid.row_key(t.params) for t in trials)
    # One trial per configuration of the table: none missing, none repeated.
    assert ran == sorted(grid.row_key(row) for row in grid.table(config))
    return trials


def test_experiment_a_runs_its_six_pairs_once_and_a_rerun_adds_none(
    fashion_mnist: Path,
) -> None:
    name = "fashion_cnn_activation_optimizer"
    first, second = run_twice(
        STUDIES / f"{name}.yaml",
        "train.epochs=1",
        "data.train_subset=2000",
        "data.test_subset=500",
    )
    assert "configurations: 6 of 6 run" in first
    trials = assert_each_row_ran_once(name)
    assert len(trials) == 6 and "configurations: 6 of 6 run" in second
    # The listed params, not a sampler's, in file order.
    assert [t.params for t in trials[:2]] == [
        {"activation": "relu", "optimizer": "sgd"},
        {"activation": "relu", "optimizer": "adam"},
    ]


def test_experiment_c_fit_regimes_run_once_with_a_fit_label(mnist_dir: Path) -> None:
    name = "mnist_fit_regimes"
    run_twice(STUDIES / f"{name}.yaml", "train.epochs=3", "data.train_subset=150")
    trials = assert_each_row_ran_once(name)
    assert len(trials) == 3
    runs = runs_of(name, "trial")
    # Every trial is diagnosed with one of the three documented labels, in MLflow and Optuna.
    assert {r.data.tags["hptune.fit"] for r in runs} <= {"under-fit", "good fit", "over-fit"}
    assert len(runs) == 3
    assert {t.user_attrs["hptune.fit"] for t in trials} == {r.data.tags["hptune.fit"] for r in runs}
    # The over-fit shape really is 784-1024-512-256-128-10, trained on the first 150 images.
    shapes = {r.data.params["hidden_sizes"] for r in runs}
    assert shapes == {"32", "128-64", "1024-512-256-128"}


def test_experiment_e_selects_by_macro_f1_and_tests_only_that_run(fashion_mnist: Path) -> None:
    name = "fashion_mlp_lr_hidden"
    run_twice(STUDIES / f"{name}.yaml", "train.epochs=1", "data.train_subset=2000")
    trials = assert_each_row_ran_once(name)
    assert len(trials) == 12
    (parent,) = runs_of(name, "study")
    best = max(
        (t for t in trials if t.state == optuna.trial.TrialState.COMPLETE),
        key=lambda t: t.value or 0.0,
    )
    # The best run is the one with the highest val macro-F1, and the parent holds its test scores.
    assert parent.data.tags["best_trial_run_id"] == best.user_attrs["hptune.mlflow_run_id"]
    best_run = MlflowClient().get_run(best.user_attrs["hptune.mlflow_run_id"])
    assert best_run.data.metrics["val/f1_macro"] == pytest.approx(best.value)
    assert {"test/accuracy", "test/f1_macro"} <= set(parent.data.metrics)


def test_diverging_activations_are_recorded_and_the_study_goes_on(mnist_dir: Path) -> None:
    name = "mnist_cnn_activation_depth"
    # Deep exponential nets overflow; a huge learning rate makes sure one does here.
    invoke_args = ["optimize", str(STUDIES / f"{name}.yaml"), "--device", "cpu"]
    for override in ("train.epochs=2", "train.lr=5.0", "model.neurons=16"):
        invoke_args += ["--set", override]
    code, out, err = invoke(*invoke_args)
    assert code == 0, err
    trials = assert_each_row_ran_once(name)
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    # Failures are results with their reason; the other configurations still ran.
    assert failed and all("not finite" in t.user_attrs["fail_reason"] for t in failed)
    assert "configurations: 15 of 15 run" in out


def test_a_report_of_experiment_a_says_validation_is_the_test_set(fashion_mnist: Path) -> None:
    name = "fashion_cnn_activation_optimizer"
    path = STUDIES / f"{name}.yaml"
    code, _, err = invoke(
        "optimize", str(path), "--device", "cpu", "--n-trials", "2", "--set", "train.epochs=1",
        "--set", "data.train_subset=1000", "--set", "data.test_subset=300",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = invoke("export-report", str(path))
    assert code == 0, err
    page = (Path("reports") / name / "report.html").read_text()
    # The report repeats the study file's warning: val/* numbers are test-set numbers.
    assert "Validation is the test set" in page
    # Only 2 of the 6 rows ran (--n-trials 2); the others are still queued, not lost.
    assert "2: 2 complete" in page
