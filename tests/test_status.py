"""``hptune status``: a study's trials by state, its running trials, best and time to finish,
read from the Optuna storage by any process (SQLite, PostgreSQL)."""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from hptune import objective
from hptune.attrs import PLANNED_ATTR, WORKER_ATTR
from hptune.status import format_status, read_status
from hptune.storage import load_existing_study, open_storage
from tests.conftest import invoke, study_yaml
from tests.test_scale_out import Database, postgres  # noqa: F401 (the fixture)
from tests.test_study import SMALL

START = datetime.datetime(2026, 1, 1, 12, 0, 0)


def finished(number: int, state: TrialState, value: float | None, seconds: float) -> FrozenTrial:
    return FrozenTrial(
        number=number,
        state=state,
        value=value,
        datetime_start=START,
        datetime_complete=START + datetime.timedelta(seconds=seconds),
        params={"lr": 0.01},
        distributions={"lr": FloatDistribution(1e-3, 1e-1, log=True)},
        user_attrs={},
        system_attrs={},
        intermediate_values={0: 0.5},
        trial_id=number,
    )


def a_study_in_progress(url: str) -> optuna.Study:
    """Three finished trials (60 s, 120 s, 30 s), one running at its epoch 2 of 5, one queued;
    ten trials planned."""
    study = optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize")
    study.add_trial(finished(0, TrialState.COMPLETE, 0.8, 60))
    study.add_trial(finished(1, TrialState.COMPLETE, 0.9, 120))
    study.add_trial(finished(2, TrialState.PRUNED, None, 30))
    study.enqueue_trial({"lr": 0.02})
    study.enqueue_trial({"lr": 0.03})
    trial = study.ask()  # takes the first queued trial
    trial.set_user_attr(WORKER_ATTR, {"host": "node7", "pid": 4242, "epochs": 5})
    trial.report(0.6, 1)
    trial.report(0.7, 2)
    study.set_user_attr(PLANNED_ATTR, 10)
    return study


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # (trials asked by hand)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_counts_running_trials_best_and_eta(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'optuna.db'}"
    else:
        url = request.getfixturevalue("postgres")("status")
    a_study_in_progress(url)
    study = load_existing_study("s", url)  # read as another process would
    running = study.get_trials(states=(TrialState.RUNNING,))[0]
    now = running.datetime_start + datetime.timedelta(seconds=75)
    status = read_status(study, now=now)
    # Optuna's state names, each counted.
    assert status.counts == {"complete": 2, "pruned": 1, "fail": 0, "running": 1, "waiting": 1}
    # The running trial: where it runs, its last reported epoch, how long it has run.
    (trial,) = status.running
    where = (trial.number, trial.host, trial.pid, trial.epoch, trial.epochs)
    assert where == (3, "node7", 4242, 2, 5)
    assert trial.elapsed_s == pytest.approx(75, abs=1)
    assert status.best == [(1, [0.9])]
    # ETA: mean finished trial (70 s) x trials left (10 planned - 3 finished) / 1 worker.
    assert status.mean_trial_s == pytest.approx(70)
    assert status.trials_left == 7
    assert status.eta_s == pytest.approx(490)
    text = format_status(status)
    assert "study s: 5 trials (2 complete, 1 pruned, 0 fail, 1 running, 1 waiting)" in text
    assert "running: trial 3 on node7 pid 4242, epoch 2/5, 1m15s" in text
    assert "eta: 8m10s (7 trials left, 1 worker running)" in text


def test_status_during_and_after_a_real_study(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = study_yaml(tmp_path / "small.yaml", SMALL)
    seen: list[Any] = []
    report = objective.Objective.report

    def report_then_look(self: objective.Objective, running: Any, epoch: Any) -> None:
        report(self, running, epoch)
        if running.trial.number == 1 and epoch.epoch == 1:  # while trial 1 trains
            seen.append(read_status(load_existing_study("small", "sqlite:///mlruns/optuna.db")))

    monkeypatch.setattr(objective.Objective, "report", report_then_look)
    code, _, err = invoke("optimize", str(path))
    assert code == 0, err
    (during,) = seen
    assert during.counts == {"complete": 1, "pruned": 0, "fail": 0, "running": 1, "waiting": 0}
    (trial,) = during.running
    # The trial names this process and its host, at its first of two epochs.
    assert (trial.host, trial.pid, trial.epoch, trial.epochs) == (
        socket.gethostname(),
        os.getpid(),
        1,
        2,
    )
    # One of the two planned trials left (the running one), one worker.
    assert during.trials_left == 1
    assert during.eta_s == pytest.approx(during.mean_trial_s)

    code, out, err = invoke("status", str(path))
    assert code == 0, err
    assert "study small: 2 trials (2 complete, 0 pruned, 0 fail, 0 running, 0 waiting)" in out
    assert "best: trial " in out
    assert "eta: none (no trial is running)" in out


def test_an_unknown_study_is_a_clear_error_and_creates_nothing(tmp_path: Path) -> None:
    code, _, err = invoke("status", "--study", "nope")
    # One error line, exit code 2, and no database created by looking.
    assert code == 2
    assert err.startswith("error: no study storage at ") and err.count("\n") == 1
    assert not (tmp_path / "mlruns").exists()
    url = f"sqlite:///{tmp_path / 'other.db'}"
    optuna.create_study(study_name="there", storage=url)
    code, _, err = invoke("status", "--study", "nope", "--storage", url)
    assert code == 2
    assert "no study named 'nope'" in err and "studies there: there" in err
