"""Studies with ``batch_trials``: each member is its own trial, run and pruning decision."""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from hptune import optuna_private, storage, study
from hptune.attrs import RETRY_OF_ATTR, RUN_ID_ATTR
from tests.test_study import (
    PRUNED_AT_EPOCH_1,
    runs,
    small_study,
    start_worker_in_a_trial,
    wait_for_exit,
)

GRID = """name: grid
data: {dataset: mnist, val_fraction: 0.2}
model: {depth: 1}
train: {epochs: 2, batch_size: 32}
pruner: {name: none}
sampler: {name: grid}
search_space:
  width: {type: categorical, choices: [16, 24]}
  lr: {type: categorical, choices: [0.03, 0.01, 0.003]}
"""


@pytest.fixture
def tracking() -> MlflowClient:
    return MlflowClient()


def curves(client: MlflowClient, result: study.StudyResult) -> dict[tuple, list[float]]:
    """Each complete trial's val/loss curve, keyed by its parameters."""
    return {
        tuple(sorted(t.params.items())): [
            m.value
            for m in sorted(
                client.get_metric_history(t.user_attrs[RUN_ID_ATTR], "val/loss"),
                key=lambda m: m.step,
            )
        ]
        for t in result.completed
    }


def test_a_batched_table_runs_each_row_once_as_if_alone(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient
) -> None:
    # Six rows, four at a time: the batches split by width (two architectures), every row runs
    # once, and each curve is the one the same trial has when trained alone.
    # fp32: in bf16 the stacked and single matmuls round differently (tests/test_batched.py).
    exact = ("train.precision=fp32",)
    batched = study.optimize(small_study(tmp_path, GRID, ("batch_trials=4", *exact)))
    assert batched.configurations_run == 6 and len(batched.study.trials) == 6
    assert all(t.state == TrialState.COMPLETE for t in batched.study.trials)
    alone_text = GRID.replace("name: grid\n", "name: grid_alone\n", 1)
    alone = study.optimize(small_study(tmp_path, alone_text, exact))
    mine, reference = curves(tracking, batched), curves(tracking, alone)
    assert mine.keys() == reference.keys() and len(mine) == 6
    for key, curve in mine.items():
        assert curve == pytest.approx(reference[key], rel=1e-4), key
    # Each trial has its own run with both epochs logged, under the study's parent run.
    trial_runs = [r for r in runs(tracking, "trial") if r.data.tags["hptune.study"] == "grid"]
    assert len(trial_runs) == 6 and {r.info.status for r in trial_runs} == {"FINISHED"}
    # A rerun of the finished table adds nothing.
    again = study.optimize(small_study(tmp_path, GRID, ("batch_trials=4", *exact)))
    assert len(again.study.trials) == 6


def test_a_diverging_member_fails_alone_and_the_batch_goes_on(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient
) -> None:
    text = GRID.replace(
        "lr: {type: categorical, choices: [0.03, 0.01, 0.003]}",
        "lr: {type: categorical, choices: [1.0e+30, 0.01, 0.001]}",
    ).replace(
        "width: {type: categorical, choices: [16, 24]}", "width: {type: categorical, choices: [16]}"
    )
    text = text.replace("batch_size: 32}", "batch_size: 32, optimizer: sgd}")
    # lr 1e30 blows the loss up in the middle of the batch; the other two train on.
    result = study.optimize(small_study(tmp_path, text, ("batch_trials=3",)))
    states = {t.params["lr"]: t.state for t in result.study.trials}
    assert states[1e30] == TrialState.FAIL
    assert (
        "loss is not finite"
        in next(t for t in result.study.trials if t.params["lr"] == 1e30).user_attrs["fail_reason"]
    )
    assert states[0.01] == TrialState.COMPLETE and states[0.001] == TrialState.COMPLETE
    statuses = {r.data.params["lr"]: r.info.status for r in runs(tracking, "trial")}
    assert statuses == {"1e+30": "FAILED", "0.01": "FINISHED", "0.001": "FINISHED"}


def test_a_threshold_prunes_batch_members_each_at_their_epoch(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient
) -> None:
    result = study.optimize(small_study(tmp_path, PRUNED_AT_EPOCH_1, ("batch_trials=2",)))
    # No accuracy reaches 1.01: both members are pruned after epoch 1, each its own run.
    assert [t.state for t in result.study.trials] == [TrialState.PRUNED] * 2
    for run in runs(tracking, "trial"):
        assert run.info.status == "KILLED" and run.data.tags["hptune.pruned_at_epoch"] == "1"


def test_sigterm_queues_every_member_again(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient
) -> None:
    worker = start_worker_in_a_trial(tmp_path, ("--set", "batch_trials=2"), trials=2)
    worker.send_signal(signal.SIGTERM)
    code = wait_for_exit(worker)
    assert code == 130
    stored = optuna.load_study(study_name="small", storage=storage.storage_url(None))
    states = [t.state for t in stored.trials]
    assert states == [TrialState.FAIL] * 2 + [TrialState.WAITING] * 2
    assert [t.user_attrs[RETRY_OF_ATTR] for t in stored.trials[2:]] == [0, 1]
    assert {r.info.status for r in runs(tracking, "trial")} == {"KILLED"}


def test_a_killed_batch_is_failed_and_rerun(
    tmp_path: Path, mnist_dir: Path, tracking: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = start_worker_in_a_trial(tmp_path, ("--set", "batch_trials=2"), trials=2)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    monkeypatch.setattr(storage, "GRACE_PERIOD_S", 1)
    time.sleep(3)  # heartbeats are stored to the second: wait past the 1 s grace surely
    # The dead process trained 100,000-epoch trials so as to be inside them when killed; a
    # rerun with other epochs is refused as other settings (tests/test_settings.py), not here.
    monkeypatch.setattr(study, "_check_settings", lambda stored, config: None)
    result = study.optimize(small_study(tmp_path, overrides=("n_trials=2", "batch_trials=2")))
    dead, retried = result.study.trials[:2], result.study.trials[2:]
    # Both members' heartbeats went stale: failed, their parameters run again, runs closed.
    assert [t.state for t in dead] == [TrialState.FAIL] * 2
    assert [t.state for t in retried] == [TrialState.COMPLETE] * 2
    assert sorted(t.params["lr"] for t in retried) == sorted(t.params["lr"] for t in dead)
    statuses = sorted(r.info.status for r in runs(tracking, "trial"))
    assert statuses == ["FAILED", "FAILED", "FINISHED", "FINISHED"]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # asked outside Study.optimize
def test_heartbeats_are_recorded_at_once_and_then_every_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from hptune.batchrun import _Heartbeats

    monkeypatch.setattr(storage, "HEARTBEAT_INTERVAL_S", 1)
    url = f"sqlite:///{tmp_path / 'beats.db'}"
    stored = optuna.create_study(study_name="beats", storage=storage.open_storage(url))
    stored.ask()
    trial = stored.ask()

    def beats() -> list[tuple[int, str]]:
        with sqlite3.connect(tmp_path / "beats.db") as connection:
            query = "SELECT trial_id, heartbeat FROM trial_heartbeats"
            return list(connection.execute(query))

    # Through a storage of their own, opened from the study's URL: the trial's own id there.
    with _Heartbeats(url, "beats") as heartbeats:
        heartbeats.add(trial)
        first = beats()
        expected_id = stored.get_trials(deepcopy=False)[1]._trial_id
        # Recorded when the trial was asked, not an interval later, for that trial only.
        assert [trial_id for trial_id, _ in first] == [expected_id]
        time.sleep(2.5)
        assert beats()[0][1] > first[0][1]  # and kept fresh while it runs


def test_table_rows_that_share_a_model_are_enqueued_side_by_side(tmp_path: Path) -> None:
    from hptune.batchrun import group_rows
    from hptune.grid import table

    # lr-major file order alternates widths; batching groups them (first width first), keeping
    # file order within a width.
    text = GRID.replace("  width: {type: categorical, choices: [16, 24]}\n", "") + (
        "  width: {type: categorical, choices: [16, 24]}\n"
    )
    config = small_study(tmp_path, text)
    rows = table(config)
    assert [row["width"] for row in rows] == [16, 24, 16, 24, 16, 24]
    grouped = group_rows(config, rows)
    assert [(row["width"], row["lr"]) for row in grouped] == [
        (16, 0.03), (16, 0.01), (16, 0.003), (24, 0.03), (24, 0.01), (24, 0.003),
    ]  # fmt: skip


MEDIAN = """name: median
n_trials: 8
data: {dataset: mnist, val_fraction: 0.2}
model: {width: 16, depth: 1}
train: {epochs: 3, batch_size: 32, precision: fp32}
pruner: {name: median, options: {n_startup_trials: 2, n_warmup_steps: 0}}
sampler: {name: grid}
search_space:
  lr: {type: categorical, choices: [1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 0.0003]}
batch_trials: 4
"""


def test_one_storage_read_per_epoch_gives_the_same_pruning_decisions(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second batch's members are pruned against the first batch's median, read once per
    # epoch (a snapshot), not once per member: the same trials end the same way, in fewer reads.
    from hptune import batchrun

    reads = 0
    read = optuna.storages.RDBStorage._get_trials

    def counted(self: optuna.storages.RDBStorage, *args: object, **kwargs: object) -> list:
        nonlocal reads
        reads += 1
        return read(self, *args, **kwargs)

    monkeypatch.setattr(optuna.storages.RDBStorage, "_get_trials", counted)

    def outcomes(name: str) -> tuple[list[tuple], int]:
        nonlocal reads
        reads = 0
        text = MEDIAN.replace("name: median\n", f"name: {name}\n", 1)
        result = study.optimize(small_study(tmp_path, text))
        trials = [(t.params, t.state, t.value, t.intermediate_values) for t in result.study.trials]
        return trials, reads

    snapshot, snapshot_reads = outcomes("snapshot")
    monkeypatch.setattr(batchrun, "trials_snapshot", contextlib.nullcontext)
    every_time, every_time_reads = outcomes("every_time")
    assert snapshot == every_time
    states = [state for _, state, _, _ in snapshot[4:]]
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states  # decisions were made
    assert snapshot_reads < every_time_reads - 10


def two_handles(tmp_path: Path) -> tuple[optuna.Study, optuna.Study]:
    """One SQLite study opened twice, as two processes would: each with its own cache."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    mine = optuna.create_study(study_name="s", storage=storage.open_storage(url))
    return mine, optuna.load_study(study_name="s", storage=storage.open_storage(url))


def record_reads(study: optuna.Study, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """From now on, the trial numbers that each database read of ``study``'s cache returns."""
    backend = study._storage._backend  # type: ignore[attr-defined]
    reads: list[list[int]] = []
    read = backend._get_trials

    def recorded(*args: object, **kwargs: object) -> list:
        trials = read(*args, **kwargs)
        reads.append([t.number for t in trials])
        return trials

    monkeypatch.setattr(backend, "_get_trials", recorded)
    return reads


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # asked outside Study.optimize
def test_a_snapshot_reads_the_trials_once_and_later_reads_see_other_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, other = two_handles(tmp_path)
    mine.ask()
    reads = record_reads(mine, monkeypatch)
    with optuna_private.trials_snapshot():
        assert [t.state for t in mine.get_trials()] == [TrialState.RUNNING]
        other.tell(0, 0.5)
        # Read once: the snapshot still shows the trial as it was at its first read.
        assert [t.state for t in mine.get_trials()] == [TrialState.RUNNING]
        assert len(reads) == 1
    # The next read after it sees the other writer's change.
    assert [t.state for t in mine.get_trials()] == [TrialState.COMPLETE]
    assert len(reads) == 2


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # asked outside Study.optimize
def test_an_ask_reads_the_queued_trials_and_no_running_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, other = two_handles(tmp_path)
    for x in (0.1, 0.2):
        mine.enqueue_trial({"x": x})
    first = mine.ask()
    first.suggest_float("x", 0, 1)
    mine.tell(first, 1.0)  # finished: the cache now skips trial ids up to it
    for _ in range(5):
        mine.ask().suggest_float("x", 0, 1)
    other.enqueue_trial({"x": 0.25})  # queued by another process: mine has never read it
    reads = record_reads(mine, monkeypatch)
    queued = mine._pop_waiting_trial_id()  # what Study.ask does first
    assert reads == [[6]]  # the queued trial; none of the five running ones
    assert mine._pop_waiting_trial_id() is None  # taken exactly once
    trial = optuna.Trial(mine, queued)  # the rest of the ask
    assert trial.number == 6 and trial.suggest_float("x", 0, 1) == 0.25
    mine.tell(trial, 2.0)
    # Later reads see it as it is now, through the cache, and every trial once.
    trials = mine.get_trials()
    assert [t.number for t in trials] == list(range(7))
    assert [t.state for t in trials] == [TrialState.COMPLETE] + [TrialState.RUNNING] * 5 + [
        TrialState.COMPLETE
    ]
    assert trials[-1].params == {"x": 0.25} and trials[-1].value == 2.0
