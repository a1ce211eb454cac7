"""What a study is doing, read from its Optuna storage alone (``hptune status``).

Every process that runs a trial records its host, process id, planned epochs and GPU on the
trial when it starts (``WORKER_ATTR``) and reports each epoch to Optuna, so any machine that
reaches the storage (SQLite file, PostgreSQL) sees the running trials without a server. The
estimated time to finish is the mean finished trial's duration, times the trials left, divided
by the processes running trials now.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hptune import pareto
from hptune.attrs import EPOCH_ATTR, PLANNED_ATTR, WORKER_ATTR

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
STATES = ("complete", "pruned", "fail", "running", "waiting")  # Optuna's names, in this order


@dataclass(frozen=True)
class RunningTrial:
    """A trial some process is training now."""

    number: int
    host: str | None
    pid: int | None
    gpu: str | None
    epoch: int | None  # the last epoch it reported
    epochs: int | None  # the epochs it runs
    elapsed_s: float


@dataclass(frozen=True)
class StudyStatus:
    """One look at a study's storage."""

    name: str
    counts: dict[str, int]  # Optuna's state name -> trials
    running: list[RunningTrial]
    best: list[tuple[int, list[float]]]  # trial number and values: one, or a Pareto front's
    directions: list[str]
    mean_trial_s: float | None  # of finished trials
    trials_left: int
    workers: int  # processes running trials now
    eta_s: float | None


def read_status(study: optuna.Study, now: datetime.datetime | None = None) -> StudyStatus:
    """The study's trials by state, its running trials, best so far and time to finish."""
    now = now or datetime.datetime.now()
    trials = study.get_trials(deepcopy=False)
    counts = {name: 0 for name in STATES}
    for trial in trials:
        counts[trial.state.name.lower()] += 1
    running = [_running(t, now) for t in trials if t.state == TrialState.RUNNING]
    durations = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.state in FINISHED and t.datetime_start and t.datetime_complete
    ]
    mean = sum(durations) / len(durations) if durations else None
    finished = sum(counts[s.name.lower()] for s in FINISHED)
    planned = study.user_attrs.get(PLANNED_ATTR)
    left = counts["running"] + counts["waiting"]
    if isinstance(planned, int):
        left = max(left, planned - finished)
    workers = len({(t.host, t.pid) for t in running})
    eta = mean * left / workers if mean is not None and workers else None
    return StudyStatus(
        name=study.study_name,
        counts=counts,
        running=running,
        best=[(t.number, list(t.values)) for t in _best_trials(study, trials)],
        directions=[d.name.lower() for d in study.directions],
        mean_trial_s=mean,
        trials_left=left,
        workers=workers,
        eta_s=eta,
    )


def _running(trial: FrozenTrial, now: datetime.datetime) -> RunningTrial:
    worker: dict[str, Any] = trial.user_attrs.get(WORKER_ATTR) or {}
    reported = trial.intermediate_values
    start = trial.datetime_start
    return RunningTrial(
        number=trial.number,
        host=worker.get("host"),
        pid=worker.get("pid"),
        gpu=worker.get("gpu"),
        epoch=max(reported) if reported else trial.user_attrs.get(EPOCH_ATTR),
        epochs=worker.get("epochs"),
        elapsed_s=(now - start).total_seconds() if start else 0.0,
    )


def _best_trials(study: optuna.Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The best complete trial, or the front, among ``trials`` (the same read as the counts)."""
    return pareto.front_of(trials, [d.name for d in study.directions])[
        : None if len(study.directions) > 1 else 1
    ]


def format_status(status: StudyStatus) -> str:
    """The status as ``hptune status`` prints it."""
    total = sum(status.counts.values())
    counts = ", ".join(f"{n} {state}" for state, n in status.counts.items())
    lines = [f"study {status.name}: {total} trials ({counts})"]
    for trial in status.running:
        where = f"{trial.host or '?'} pid {trial.pid or '?'}"
        where += f" gpu {trial.gpu}" if trial.gpu is not None else ""
        epoch = "no epoch yet" if trial.epoch is None else f"epoch {trial.epoch}"
        epoch += f"/{trial.epochs}" if trial.epochs and trial.epoch is not None else ""
        lines.append(
            f"  running: trial {trial.number} on {where}, {epoch}, {_duration(trial.elapsed_s)}"
        )
    if status.counts["waiting"]:
        lines.append(f"queued: {status.counts['waiting']} (table rows and retries not run yet)")
    lines += _best_lines(status)
    if status.mean_trial_s is not None:
        lines.append(f"mean trial time: {_duration(status.mean_trial_s)}")
    if status.eta_s is not None:
        lines.append(
            f"eta: {_duration(status.eta_s)} ({status.trials_left} trials left, "
            f"{status.workers} worker{'s' if status.workers != 1 else ''} running)"
        )
    elif not status.workers:
        lines.append("eta: none (no trial is running)")
    return "\n".join(lines)


def _best_lines(status: StudyStatus) -> list[str]:
    if not status.best:
        return ["best: none yet"]
    if len(status.directions) == 1:
        number, values = status.best[0]
        return [f"best: trial {number}, value {values[0]:.6g}"]
    lines = [f"pareto front: {len(status.best)} trials"]
    for number, values in status.best:
        lines.append(f"  trial {number}: {', '.join(f'{v:.6g}' for v in values)}")
    return lines


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
