"""The study driver: resume by rerun, truthful trial states, conflicts, dead processes."""

from __future__ import annotations

import io
import logging
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from sqlalchemy.exc import OperationalError

from hptune import interrupt, objective, storage, study
from hptune.attrs import FAIL_REASON_ATTR, RETRY_OF_ATTR
from hptune.config import StudyConfig
from hptune.describe import summarize_result
from hptune.errors import StudyConflictError
from hptune.progress import Progress
from hptune.studyfile import load_study_file
from hptune.tracking import TrialRun
from tests.conftest import command_environment, hptune_command, study_yaml

SMALL = """name: small
n_trials: 2
data: {dataset: mnist, val_fraction: 0.2}
model: {width: 16, depth: 1}
train: {epochs: 2, batch_size: 32}
pruner: {name: none}
search_space:
  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
"""


# No accuracy reaches 1.01: a threshold pruner stops every trial after its first epoch.
PRUNED_AT_EPOCH_1 = SMALL.replace(
    "pruner: {name: none}", "pruner: {name: threshold, options: {lower: 1.01}}"
)


def small_study(tmp_path: Path, text: str = SMALL, overrides: tuple[str, ...] = ()) -> StudyConfig:
    return load_study_file(study_yaml(tmp_path / "small.yaml", text), overrides)


def runs(tracking: MlflowClient, role: str) -> list:
    return tracking.search_runs(
        [e.experiment_id for e in tracking.search_experiments()],
        filter_string=f"tags.`hptune.role` = '{role}'",
    )


@pytest.fixture
def optuna_log(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What Optuna's own log handler writes (to the stderr of its first use, otherwise)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # (creates the handler)
    buffer = io.StringIO()
    streams = [h for h in logging.getLogger("optuna").handlers if type(h) is logging.StreamHandler]
    assert streams, logging.getLogger("optuna").handlers
    for handler in streams:  # (not pytest's own handlers, where its logging plugin runs)
        monkeypatch.setattr(handler, "stream", buffer)
    return buffer


@pytest.fixture
def tracking() -> MlflowClient:
    return MlflowClient()  # MLflow's default store in the test's own folder


@pytest.mark.parametrize("entry", ["optimize", "worker"])
def test_a_study_flushes_denormals_before_torch_starts_its_threads(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    calls: list[str] = []

    def load(*args: object) -> None:
        calls.append("load the data")  # torch's first parallel operations
        raise RuntimeError("enough")

    monkeypatch.setattr(study, "flush_denormals", lambda: calls.append("flush"))
    monkeypatch.setattr(study.data, "load", load)
    config = small_study(tmp_path)
    with pytest.raises(RuntimeError, match="enough"):
        if entry == "optimize":
            study.optimize(config)
        else:  # a worker process's share of the study (hptune.workers)
            study.work(config, n_trials=1, table=False, worker=1)
    # Threads copy the setting when they start: it must come first (hptune.training).
    assert calls == ["flush", "load the data"]


def test_rerun_adds_n_trials_to_the_same_study(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient
) -> None:
    study.optimize(small_study(tmp_path))
    result = study.optimize(small_study(tmp_path))
    # n_trials is per invocation: two runs of 2 give one study of 4 trials, numbered 0..3.
    assert [t.number for t in result.study.trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in result.study.trials)
    # One parent run for the study, one child run per trial, linked to it.
    (parent,) = runs(tracking, "study")
    children = runs(tracking, "trial")
    assert len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}


def test_trial_run_holds_params_and_per_epoch_metrics(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient
) -> None:
    result = study.optimize(small_study(tmp_path, overrides=("n_trials=1",)))
    (child,) = runs(tracking, "trial")
    trial = result.study.trials[0]
    # Sampled and fixed hyperparameters under their stable names (MLflow keeps strings).
    # A sampled float to 4 significant digits, as a person writes it (Optuna keeps it exact).
    assert child.data.params["lr"] == f"{trial.params['lr']:.4g}"
    assert child.data.params["hidden_sizes"] == "16"
    assert child.data.params["trial_number"] == "0"
    assert child.data.params["seed"] == str(objective.trial_seed(small_study(tmp_path).train, 0))
    history = tracking.get_metric_history(child.info.run_id, "val/accuracy")
    # One value per epoch at step=epoch, matching what Optuna was told.
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == [
        trial.intermediate_values[1],
        trial.intermediate_values[2],
    ]
    assert child.info.status == "FINISHED"


def test_changed_search_space_is_refused_and_writes_nothing(
    tmp_path: Path, mnist_dir: Path
) -> None:
    study.optimize(small_study(tmp_path, overrides=("n_trials=1",)))
    changed = small_study(tmp_path, overrides=("search_space.lr.high=0.5",))
    # A rerun whose space no longer fits the stored study suggests a new study name.
    with pytest.raises(StudyConflictError, match="--study-name NEW"):
        study.optimize(changed)
    stored = optuna.load_study(study_name="small", storage=storage.DEFAULT_STORAGE)
    assert len(stored.trials) == 1


def test_diverging_trial_is_recorded_failed_and_the_study_goes_on(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient, optuna_log: io.StringIO
) -> None:
    text = (
        SMALL.replace(
            "  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}",
            "  lr: {type: categorical, choices: [1.0e+30, 0.01]}",
        )
        .replace("pruner: {name: none}", "pruner: {name: none}\nsampler: {name: grid}")
        .replace("batch_size: 32}", "batch_size: 32, optimizer: sgd}")
    )
    result = study.optimize(small_study(tmp_path, text))
    states = {t.params["lr"]: t.state for t in result.study.trials}
    # lr=1e30 blows the loss up: a FAILED trial with its reason; lr=0.01 still completes.
    assert states == {1e30: TrialState.FAIL, 0.01: TrialState.COMPLETE}
    failed = next(t for t in result.study.trials if t.state == TrialState.FAIL)
    assert "loss is not finite" in failed.user_attrs["fail_reason"]
    (run,) = [r for r in runs(tracking, "trial") if r.info.status == "FAILED"]
    assert "loss is not finite" in run.data.tags["hptune.fail_reason"]
    # Optuna's log says why in one line; a traceback would look like a crash.
    log = optuna_log.getvalue()
    assert "failed with parameters" in log and "loss is not finite" in log
    assert "Traceback" not in log


def test_pruned_trial_ends_killed_with_its_epoch_and_curves(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient
) -> None:
    result = study.optimize(small_study(tmp_path, PRUNED_AT_EPOCH_1, ("n_trials=1",)))
    # No accuracy reaches 1.01, so the pruner stops the trial after its first epoch.
    assert result.study.trials[0].state == TrialState.PRUNED
    (run,) = runs(tracking, "trial")
    assert run.info.status == "KILLED"
    assert run.data.tags["hptune.pruned_at_epoch"] == "1"
    # The curve up to the prune stays.
    assert len(tracking.get_metric_history(run.info.run_id, "train/loss")) == 1


def test_interrupted_trial_is_queued_again(
    tmp_path: Path,
    mnist_dir: Path,
    tracking: MlflowClient,
    monkeypatch: pytest.MonkeyPatch,
    optuna_log: io.StringIO,
) -> None:
    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(objective, "train", interrupt)
        with pytest.raises(KeyboardInterrupt):
            study.optimize(small_study(tmp_path))
    log = optuna_log.getvalue()  # Optuna's log of the failed trial: one line, no traceback
    assert "KeyboardInterrupt" in log and "Traceback" not in log
    # Ctrl-C: the trial's run is KILLED (not left RUNNING), and so is the study's parent run.
    assert {r.info.status for r in runs(tracking, "trial")} == {"KILLED"}
    assert {r.info.status for r in runs(tracking, "study")} == {"KILLED"}
    result = study.optimize(small_study(tmp_path, overrides=("n_trials=1",)))
    first, again = result.study.trials
    # The rerun repeats the interrupted parameters instead of losing them.
    assert first.state == TrialState.FAIL and again.state == TrialState.COMPLETE
    assert again.params == first.params
    assert again.user_attrs[RETRY_OF_ATTR] == 0
    # Optuna's record says it was interrupted (the report reads it); its rerun is no failure.
    assert first.user_attrs[FAIL_REASON_ATTR] == "interrupted"
    assert FAIL_REASON_ATTR not in again.user_attrs
    # The summary says "interrupted", not "failed" without a reason.
    summary = summarize_result(result, tmp_path / "small.yaml", None)
    assert summary.startswith(
        "study small: 2 trials (1 complete, 0 pruned, 0 failed, 1 interrupted)\n"
    )


def interrupt_trial(number: int) -> Any:
    """``train``, but Ctrl-C in the trial with this (0-based) number, at its training's start."""
    real, calls = objective.train, 0

    def train(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == number + 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return train


def test_a_stopped_study_still_logs_its_best_model(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(objective, "train", interrupt_trial(1))
    with pytest.raises(KeyboardInterrupt):
        study.optimize(small_study(tmp_path, overrides=("n_trials=3",)))
    # Trial 0 completed, trial 1 was interrupted: the study's run ends KILLED, but with what the
    # end of a run records: the best trial, its registered model and its test evaluation.
    (parent,) = runs(tracking, "study")
    assert parent.info.status == "KILLED"
    statuses = {r.data.tags["hptune.trial"]: r for r in runs(tracking, "trial")}
    assert {k: r.info.status for k, r in statuses.items()} == {"0": "FINISHED", "1": "KILLED"}
    assert parent.data.tags["best_trial_run_id"] == statuses["0"].info.run_id
    assert 0 <= parent.data.metrics["test/accuracy"] <= 1
    (version,) = tracking.search_model_versions("name = 'small'")
    assert version.run_id == statuses["0"].info.run_id


@pytest.mark.parametrize("batch_trials", [1, 2])
@pytest.mark.parametrize(
    "space",
    ["search_space:\n  lr: {type: categorical, choices: [0.01]}\n", ""],
    ids=["one_value", "no_search_space"],
)
def test_a_one_point_grid_runs_to_its_end(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient, batch_trials: int, space: str
) -> None:
    # One grid point (a grid narrowed to one value, or no search space at all): Optuna's
    # GridSampler failed each tell of such a table with KeyError 'grid_id'.
    text = SMALL.split("search_space:")[0] + "sampler: {name: grid}\n" + space
    result = study.optimize(small_study(tmp_path, text, (f"batch_trials={batch_trials}",)))
    (trial,) = result.study.trials
    assert trial.state == TrialState.COMPLETE
    # The end of the run happened: the study's run finished, with the best model registered.
    (parent,) = runs(tracking, "study")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["best_trial_run_id"] == trial.user_attrs["hptune.mlflow_run_id"]
    assert len(tracking.search_model_versions("name = 'small'")) == 1
    # A rerun of the finished table runs nothing.
    assert len(study.optimize(small_study(tmp_path, text)).study.trials) == 1


# Rows run in file order: a poor learning rate, a good one, another poor one.
THREE_ROWS = (
    SMALL.split("search_space:")[0]
    + """configurations:
  - {lr: 1.0e-7}
  - {lr: 1.0e-2}
  - {lr: 2.0e-7}
"""
)


def test_each_run_logs_a_model_only_for_a_new_best_of_the_study(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient
) -> None:
    config = small_study(tmp_path, THREE_ROWS, ("n_trials=1",))
    for _ in range(3):  # one row per run
        result = study.optimize(config)
    values = [t.value for t in result.study.trials]
    assert values[1] > max(values[0], values[2])
    # Run 1's trial was the study's best then, run 2's beat it, run 3's did not: two versions.
    trial_runs = {r.data.tags["hptune.trial"]: r.info.run_id for r in runs(tracking, "trial")}
    versions = tracking.search_model_versions("name = 'small'")
    assert sorted(v.run_id for v in versions) == sorted([trial_runs["0"], trial_runs["1"]])


@pytest.mark.parametrize("batch_trials", [1, 2])
def test_the_progress_bar_shows_the_best_value_with_the_last_trial(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, batch_trials: int
) -> None:
    shown: list[float | None] = []

    class Recorded(Progress):
        def trial_ended(
            self, number: int | None = None, outcome: str = "", best: float | None = None
        ) -> None:
            shown.append(best)
            super().trial_ended(number, outcome, best)

    monkeypatch.setattr(study, "Progress", Recorded)
    # The good row runs last: the bar's last best is its value.
    rows = THREE_ROWS.replace("  - {lr: 2.0e-7}\n", "")
    overrides = (f"batch_trials={batch_trials}",)
    result = study.optimize(small_study(tmp_path, rows, overrides))
    first, last = (t.value for t in result.study.trials)
    assert last > first
    assert shown[-1] == last


def test_a_second_stop_skips_logging_the_best_model(
    tmp_path: Path,
    mnist_dir: Path,
    tracking: MlflowClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def interrupted_again(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(objective, "train", interrupt_trial(1))
    monkeypatch.setattr(study.StudyTracker, "log_model", interrupted_again)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(small_study(tmp_path, overrides=("n_trials=3",)))
    assert "trial 0's model, the study's best" in capsys.readouterr().err
    # The best trial is still named on the study's run; its model was not logged.
    (parent,) = runs(tracking, "study")
    assert parent.info.status == "KILLED" and "best_trial_run_id" in parent.data.tags
    assert "test/accuracy" not in parent.data.metrics
    assert tracking.search_model_versions("name = 'small'") == []


def running_trials(database: Path) -> int:
    """Running trials with a heartbeat and an MLflow run: a read-only peek at the worker's
    storage (creating tables from here would race the worker)."""
    query = (
        "SELECT count(*) FROM trials JOIN trial_heartbeats USING (trial_id) "
        "JOIN trial_user_attributes USING (trial_id) "
        "WHERE state='RUNNING' AND key='hptune.mlflow_run_id'"
    )
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            return connection.execute(query).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def start_worker_in_a_trial(
    tmp_path: Path, args: tuple[str, ...] = ("--n-trials", "1"), trials: int = 1
) -> subprocess.Popen[bytes]:
    """A real ``hptune optimize`` process, returned once ``trials`` trials are running and
    logged."""
    path = study_yaml(tmp_path / "small.yaml", SMALL.replace("epochs: 2", "epochs: 100000"))
    worker = subprocess.Popen(
        hptune_command("optimize", str(path), *args),
        cwd=tmp_path,
        # faulthandler: wait_for_exit can make a stuck worker print every thread's stack.
        env=command_environment(PYTHONFAULTHANDLER="1"),
    )
    deadline = time.monotonic() + 60
    while running_trials(Path("mlruns/optuna.db")) < trials:
        if time.monotonic() > deadline:
            worker.kill()
            pytest.fail("the worker never started a trial")
        time.sleep(0.5)
    return worker


def wait_for_exit(worker: subprocess.Popen[bytes], timeout: float = 90) -> int:
    """The worker's exit code; a worker still running after ``timeout`` s dumps its threads'
    stacks (SIGABRT under faulthandler, into the test's captured output) and fails the test."""
    try:
        return worker.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in child_processes(worker.pid):  # its own workers (--workers) first
            os.kill(child, signal.SIGABRT)
        worker.send_signal(signal.SIGABRT)
        worker.wait(timeout=30)
        pytest.fail(f"the worker did not exit within {timeout} s; its stacks are printed above")


def child_processes(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux's /proc; none elsewhere)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        if parent == pid:
            children.append(int(stat.parent.name))
    return children


def test_killed_process_trial_is_failed_and_rerun(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = start_worker_in_a_trial(tmp_path)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    monkeypatch.setattr(storage, "GRACE_PERIOD_S", 1)
    time.sleep(3)  # heartbeats are stored to the second: wait past the 1 s grace surely
    # The dead process trained 100,000-epoch trials so as to be inside one when killed; a rerun
    # with other epochs is refused as other settings (tests/test_settings.py), not here.
    monkeypatch.setattr(study, "_check_settings", lambda stored, config: None)
    result = study.optimize(small_study(tmp_path, overrides=("n_trials=1",)))
    dead, retried = result.study.trials
    # The dead process's trial is failed, its parameters run again, and its run is closed.
    assert dead.state == TrialState.FAIL and retried.state == TrialState.COMPLETE
    assert retried.params == dead.params
    statuses = {r.data.tags["hptune.trial"]: r.info.status for r in runs(tracking, "trial")}
    assert statuses == {"0": "FAILED", "1": "FINISHED"}
    # Optuna's record says why it failed too (the report reads it); its retry is no failure.
    assert dead.user_attrs[FAIL_REASON_ATTR] == "stale: its process stopped sending heartbeats"
    assert FAIL_REASON_ATTR not in retried.user_attrs
    # The summary counts it apart from the trials that failed as a result.
    summary = summarize_result(result, tmp_path / "small.yaml", None)
    assert summary.startswith("study small: 2 trials (1 complete, 0 pruned, 0 failed, 1 killed)\n")


def test_sigterm_stops_like_ctrl_c(tmp_path: Path, mnist_dir: Path, tracking: MlflowClient) -> None:
    worker = start_worker_in_a_trial(tmp_path)
    worker.send_signal(signal.SIGTERM)
    code = wait_for_exit(worker)
    # The worker exits as after Ctrl-C: its trial queued again, its run closed as KILLED.
    assert code == 130
    stored = optuna.load_study(study_name="small", storage=storage.storage_url(None))
    assert [t.state for t in stored.trials] == [TrialState.FAIL, TrialState.WAITING]
    (run,) = runs(tracking, "trial")
    assert run.info.status == "KILLED" and run.data.tags["hptune.state"] == "interrupted"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the lost one
def test_a_lost_interrupt_still_stops_the_study(
    tmp_path: Path, mnist_dir: Path, stop_requested: None
) -> None:
    class Collected:
        def __del__(self) -> None:
            interrupt.stop(signal.SIGTERM, None)

    # A signal arriving during garbage collection: its KeyboardInterrupt is printed and lost.
    Collected()
    with pytest.raises(KeyboardInterrupt):
        study.optimize(small_study(tmp_path))
    # The first epoch's report raised it again: the trial stopped and was queued again.
    stored = optuna.load_study(study_name="small", storage=storage.storage_url(None))
    assert [t.state for t in stored.trials] == [TrialState.FAIL, TrialState.WAITING]


@pytest.mark.parametrize("batch_trials", [1, 2])
def test_a_stop_right_after_optunas_ask_still_queues_the_trial_again(
    tmp_path: Path,
    mnist_dir: Path,
    tracking: MlflowClient,
    monkeypatch: pytest.MonkeyPatch,
    stop_requested: None,
    batch_trials: int,
) -> None:
    ask = optuna.Study.ask

    def ask_then_signal(self: optuna.Study, *args: Any, **kwargs: Any) -> optuna.Trial:
        trial = ask(self, *args, **kwargs)  # stored RUNNING ...
        interrupt.stop(signal.SIGTERM, None)  # ... and SIGTERM arrives before the objective
        return trial

    monkeypatch.setattr(optuna.Study, "ask", ask_then_signal)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(small_study(tmp_path, overrides=(f"batch_trials={batch_trials}",)))
    # Held until the trials' training began, the stop ended them as Ctrl-C does: failed, their
    # parameters queued again, their runs KILLED. Raised at once, it left a trial RUNNING.
    stored = optuna.load_study(study_name="small", storage=storage.storage_url(None))
    states = [t.state for t in stored.trials]
    assert states == [TrialState.FAIL] * batch_trials + [TrialState.WAITING] * batch_trials
    asked, queued = stored.trials[:batch_trials], stored.trials[batch_trials:]
    assert [t.system_attrs["fixed_params"] for t in queued] == [t.params for t in asked]
    statuses = {(r.info.status, r.data.tags["hptune.state"]) for r in runs(tracking, "trial")}
    assert statuses == {("KILLED", "interrupted")}


def test_a_stop_during_an_epochs_logging_lets_it_finish_then_stops_the_trial(
    tmp_path: Path,
    mnist_dir: Path,
    tracking: MlflowClient,
    monkeypatch: pytest.MonkeyPatch,
    stop_requested: None,
) -> None:
    log_epoch = TrialRun.log_epoch

    def signalled_inside(self: TrialRun, epoch: int, metrics: Any) -> None:
        interrupt.stop(signal.SIGTERM, None)  # the signal lands inside the epoch's writes ...
        log_epoch(self, epoch, metrics)  # ... which still run whole

    monkeypatch.setattr(TrialRun, "log_epoch", signalled_inside)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(small_study(tmp_path))
    # Raised there, a stop could leave a threading lock half taken (a worker hung so). Held,
    # the first epoch is logged, and the stop then ends the trial as Ctrl-C does.
    (run,) = runs(tracking, "trial")
    assert [m.step for m in tracking.get_metric_history(run.info.run_id, "train/loss")] == [1]
    assert run.info.status == "KILLED" and run.data.tags["hptune.state"] == "interrupted"
    stored = optuna.load_study(study_name="small", storage=storage.storage_url(None))
    assert [t.state for t in stored.trials] == [TrialState.FAIL, TrialState.WAITING]


def test_a_resumed_study_does_not_replay_its_random_draws(tmp_path: Path, mnist_dir: Path) -> None:
    text = SMALL.replace("pruner: {name: none}", "pruner: {name: none}\nsampler: {name: random}")
    study.optimize(small_study(tmp_path, text, ("n_trials=2", "train.epochs=1")))
    result = study.optimize(small_study(tmp_path, text, ("n_trials=2", "train.epochs=1")))
    learning_rates = [t.params["lr"] for t in result.study.trials]
    # The second run's sampler is seeded from the study's history, not the file's seed alone,
    # so it does not draw the first run's learning rates again.
    assert len(set(learning_rates)) == 4


def locked_once(monkeypatch: pytest.MonkeyPatch, method: str, message: str) -> list[int]:
    """Make Optuna's RDB ``method`` fail once as a rolled-back commit whose cause is ``message``
    from SQLite; returns the list of attempts (one entry each)."""
    real = getattr(optuna.storages.RDBStorage, method)
    attempts: list[int] = []

    def flaky(self: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            cause = OperationalError("UPDATE trials ...", {}, sqlite3.OperationalError(message))
            raise optuna.exceptions.StorageInternalError("during the commit") from cause
        return real(self, *args, **kwargs)

    monkeypatch.setattr(optuna.storages.RDBStorage, method, flaky)
    return attempts


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # asked outside Study.optimize
@pytest.mark.parametrize("method", ["set_trial_state_values", "set_trial_intermediate_value"])
def test_a_trial_write_that_finds_sqlite_locked_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    stored = optuna.create_study(storage=storage.open_storage(f"sqlite:///{tmp_path}/s.db"))
    trial = stored.ask()
    attempts = locked_once(monkeypatch, method, "database is locked")
    trial.report(0.5, 1)
    stored.tell(trial, 1.0)
    # The write failed once ("locked" at once, as SQLite answers a stale transaction), then
    # went through: the trial is complete with its report.
    assert len(attempts) == 2
    (done,) = stored.get_trials()
    assert done.state == TrialState.COMPLETE and done.intermediate_values == {1: 0.5}


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # asked outside Study.optimize
def test_other_storage_errors_are_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = optuna.create_study(storage=storage.open_storage(f"sqlite:///{tmp_path}/s.db"))
    trial = stored.ask()
    attempts = locked_once(monkeypatch, "set_trial_state_values", "disk I/O error")
    with pytest.raises(optuna.exceptions.StorageInternalError):
        stored.tell(trial, 1.0)
    assert len(attempts) == 1


def test_hptune_sqlite_files_use_wal_and_other_sqlite_files_are_left_alone(
    tmp_path: Path, mnist_dir: Path
) -> None:
    from sqlalchemy import create_engine, text

    result = study.optimize(small_study(tmp_path))
    optuna_db = storage.sqlite_file(result.storage)
    mlflow_db = storage.sqlite_file(result.tracking_uri)
    assert optuna_db is not None and mlflow_db is not None
    for path in (optuna_db, mlflow_db):
        mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal", path
    # An SQLite database of the user's own in the same process keeps its journal mode.
    with create_engine(f"sqlite:///{tmp_path / 'mine.db'}").connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "delete"
