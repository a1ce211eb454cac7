"""Studies with ``workers: N``: worker processes share the study; nothing is lost or repeated."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from hptune import interrupt, storage, study
from hptune.attrs import RUN_ID_ATTR, SETTINGS_ATTR
from hptune.objective import StudyStopped, compared_settings
from hptune.workers import shares
from tests.conftest import command_environment, hptune_command, study_yaml
from tests.test_batchrun import GRID
from tests.test_study import (
    PRUNED_AT_EPOCH_1,
    runs,
    small_study,
    start_worker_in_a_trial,
    wait_for_exit,
)

TAKE_QUEUED = """
import json, sys
import optuna
from hptune import storage
optuna.logging.set_verbosity(optuna.logging.WARNING)
url = sys.argv[1]
study = optuna.load_study(study_name="queue", storage=storage.open_storage(url))
json.dump([study.ask().number for _ in range(int(sys.argv[2]))], sys.stdout)
"""


@pytest.fixture
def tracking() -> MlflowClient:
    return MlflowClient()


@pytest.mark.parametrize(
    ("n_trials", "workers", "expected"),
    [
        (5, 2, [3, 2]),  # split evenly: 5 in total
        (1, 3, [1]),  # no worker without a trial
        (None, 2, [None, None]),  # until the timeout, each
    ],
)
def test_trials_are_shared_without_one_more_or_less(
    n_trials: int | None, workers: int, expected: list[int | None]
) -> None:
    assert shares(n_trials, workers) == expected


def queued_study(tmp_path: Path, rows: int) -> str:
    """A SQLite study "queue" with ``rows`` queued trials (x = 0, 1, ...); returns its URL."""
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    queue = optuna.create_study(study_name="queue", storage=storage.open_storage(url))
    for x in range(rows):
        queue.enqueue_trial({"x": x})
    return url


def test_two_processes_never_take_the_same_queued_trial(tmp_path: Path) -> None:
    url = queued_study(tmp_path, 200)
    # Two processes take 100 queued trials each, at the same time. Without the lock, Optuna's
    # take (read WAITING, then mark RUNNING) let both take one trial now and then (15 of 300).
    command = [sys.executable, "-c", TAKE_QUEUED, url, "100"]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE) for _ in range(2)]
    taken = [json.loads(process.communicate(timeout=120)[0]) for process in processes]
    assert sorted(taken[0] + taken[1]) == list(range(200))


def test_two_workers_share_one_study(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient
) -> None:
    result = study.optimize(small_study(tmp_path, overrides=("n_trials=4", "workers=2")))
    trials = result.study.trials
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    # Each worker ran its share under its own sampler seed: no parameters drawn twice.
    assert len({t.params["lr"] for t in trials}) == 4
    trial_runs = runs(tracking, "trial")
    assert sorted(r.data.tags["hptune.worker"] for r in trial_runs) == ["1", "1", "2", "2"]
    assert {r.info.status for r in trial_runs} == {"FINISHED"}
    # The main process recorded the best and evaluated the best trial's model on the test set.
    (parent,) = runs(tracking, "study")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_value"] == pytest.approx(result.study.best_value)
    assert "test/accuracy" in parent.data.metrics
    (version,) = tracking.search_model_versions("name='small'")
    assert version.run_id == result.study.best_trial.user_attrs[RUN_ID_ATTR]


def test_workers_run_each_row_of_a_table_once(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient
) -> None:
    # Three rows each: a worker never asks for a trial after the queue is empty, which would
    # be sampled (a row run twice; seen when workers took rows until none waited).
    result = study.optimize(small_study(tmp_path, GRID, ("workers=2",)))
    rows = sorted((t.params["width"], t.params["lr"]) for t in result.study.trials)
    assert result.configurations_run == 6
    assert rows == sorted((w, lr) for w in (16, 24) for lr in (0.03, 0.01, 0.003))
    again = study.optimize(small_study(tmp_path, GRID, ("workers=2",)))
    assert len(again.study.trials) == 6


def test_sigterm_stops_every_worker_and_the_study_continues(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient
) -> None:
    main = start_worker_in_a_trial(tmp_path, ("--n-trials", "2", "--workers", "2"), trials=2)
    main.send_signal(signal.SIGTERM)
    assert wait_for_exit(main) == 130
    stored = optuna.load_study(study_name="small", storage=storage.storage_url(None))
    # Both running trials ended as after Ctrl-C: failed, their parameters queued again.
    states = sorted(t.state.name for t in stored.trials)
    assert states == ["FAIL", "FAIL", "WAITING", "WAITING"]
    assert {r.info.status for r in runs(tracking, "trial")} == {"KILLED"}
    (parent,) = runs(tracking, "study")
    assert parent.info.status == "KILLED"
    # Continued: the two queued trials run (once each), with the interrupted parameters.
    rerun = small_study(tmp_path, overrides=("n_trials=2", "workers=2", "train.epochs=1"))
    # The stopped run trained 100,000-epoch trials so as to be inside them at the stop; a rerun
    # with other epochs is refused as other settings (tests/test_settings.py), not here.
    stored.set_user_attr(SETTINGS_ATTR, compared_settings(rerun))
    result = study.optimize(rerun)
    interrupted = {t.params["lr"] for t in stored.trials if t.state == TrialState.FAIL}
    complete = [t for t in result.study.trials if t.state == TrialState.COMPLETE]
    assert {t.params["lr"] for t in complete} == interrupted and len(complete) == 2


# Each worker's share is two rows: a one-epoch row, then one that runs until it is stopped.
FAST_THEN_STOPPED = """name: small
data: {dataset: mnist, val_fraction: 0.2}
model: {width: 16, depth: 1}
train: {batch_size: 32}
pruner: {name: none}
configurations:
  - {lr: 0.01, epochs: 1}
  - {lr: 0.03, epochs: 1}
  - {lr: 0.02, epochs: 100000}
  - {lr: 0.04, epochs: 100000}
"""


def trial_states(database: Path) -> list[str]:
    """The stored trials' states, read-only (as ``running_trials``)."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            return [row[0] for row in connection.execute("SELECT state FROM trials")]
    except sqlite3.OperationalError:  # not created yet
        return []


def test_a_stopped_study_with_workers_logs_its_best_model(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient
) -> None:
    path = study_yaml(tmp_path / "small.yaml", FAST_THEN_STOPPED)
    main = subprocess.Popen(
        hptune_command("optimize", str(path), "--workers", "2"),
        cwd=tmp_path,
        env=command_environment(PYTHONFAULTHANDLER="1"),
    )
    deadline = time.monotonic() + 90
    while not (
        (states := trial_states(Path("mlruns/optuna.db"))).count("COMPLETE") == 2
        and "RUNNING" in states
    ):
        if time.monotonic() > deadline or main.poll() is not None:
            main.kill()
            pytest.fail(f"the one-epoch rows did not complete: {states}")
        time.sleep(0.5)
    main.send_signal(signal.SIGTERM)
    assert wait_for_exit(main) == 130
    # The best of the two complete rows, trained by a worker (which may still have been
    # running its long row), has its model registered from its own run, as at a normal end.
    (parent,) = runs(tracking, "study")
    assert parent.info.status == "KILLED"
    best_run = parent.data.tags["best_trial_run_id"]
    (version,) = tracking.search_model_versions("name = 'small'")
    assert version.run_id == best_run
    assert 0 <= parent.data.metrics["test/accuracy"] <= 1


def test_a_worker_stopped_right_after_its_trials_still_hands_over_its_best(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, stop_requested: None
) -> None:
    # The study and its run, as the main process opens them (its one trial pruned).
    study.optimize(small_study(tmp_path, PRUNED_AT_EPOCH_1, ("n_trials=1",)))
    config = small_study(tmp_path, overrides=("n_trials=1",))
    run_trials = study.run_trials

    def then_stopped(*args: Any, **kwargs: Any) -> Any:
        best = run_trials(*args, **kwargs)
        interrupt.stop(signal.SIGTERM, None)  # the main process's SIGTERM, just too late
        return best

    monkeypatch.setattr(study, "run_trials", then_stopped)
    with pytest.raises(StudyStopped) as stopped:
        study.work(config, 1, False, 1)
    # The worker's trial (number 1) completed, the study's first: the stop carries it along.
    assert stopped.value.best is not None and stopped.value.best.number == 1


def test_workers_stop_when_the_main_process_is_killed(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient
) -> None:
    main = start_worker_in_a_trial(tmp_path, ("--n-trials", "2", "--workers", "2"), trials=2)
    main.send_signal(signal.SIGKILL)
    main.wait()
    stored = optuna.load_study(study_name="small", storage=storage.storage_url(None))
    deadline = time.monotonic() + 60

    def stopped() -> bool:
        states = sorted(t.state.name for t in stored.trials)
        statuses = {r.info.status for r in runs(tracking, "trial")}
        (parent,) = runs(tracking, "study")
        return (
            states == ["FAIL", "FAIL", "WAITING", "WAITING"]
            and statuses == {"KILLED"}
            and parent.info.status == "KILLED"
        )

    # Orphaned, each worker stops as on SIGTERM: its trial failed and queued, its run KILLED;
    # and the study's run, which the main process would have ended, ends KILLED too.
    while not stopped():
        assert time.monotonic() < deadline, [t.state.name for t in stored.trials]
        time.sleep(0.5)
