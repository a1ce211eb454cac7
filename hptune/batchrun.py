"""The study loop for ``batch_trials: K``: ask K trials, train those that share an architecture
as one stacked model (``hptune.batched``), tell each its own outcome.

Every member stays its own Optuna trial (parameters from the sampler or the table's queue,
per-epoch reports, its own pruning decision), its own MLflow run and its own seed; a pruned or
diverging member leaves the batch and the others go on. Trials that cannot share a model
(another architecture, optimizer, batch size, epochs or schedule) train in separate groups.

Optuna records heartbeats only inside ``study.optimize``; here they are recorded when a trial
is asked and then by a thread for every running member (``RDBStorage.record_heartbeat``, through
a storage opened from the study's URL), so a killed process's trials go stale and are retried by
the next run, as with one trial at a time.
An interrupt ends every member not yet told as FAIL with its parameters queued again.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from functools import partial
from typing import Any, cast

import optuna
import torch
from optuna.trial import TrialState

from hptune import interrupt
from hptune.batched import SHARED_FIELDS, train_batched
from hptune.config import Choice, StudyConfig
from hptune.models import ModelRejected
from hptune.objective import (
    TRIAL_FAILURES,
    Objective,
    Running,
    best_value,
    better,
    ended_with,
)
from hptune.optuna_private import trials_snapshot
from hptune.storage import open_storage, storage_url
from hptune.training import TrainResult, train


def optimize_batched(
    study: optuna.Study,
    objective: Objective,
    n_trials: int,
    timeout: float | None,
    batch_trials: int,
    table: bool,
) -> None:
    """Run up to ``n_trials`` trials, ``batch_trials`` at a time, until ``timeout`` seconds
    have passed (checked between batches). A table's worker asks no more trials than rows wait
    and stops when none waits."""
    started = time.monotonic()
    done = 0
    url = storage_url(objective.config.storage)
    with _Heartbeats(url, study.study_name) as heartbeats:
        while done < n_trials:
            if timeout is not None and time.monotonic() - started >= timeout:
                break
            size = min(batch_trials, n_trials - done)
            if table:
                waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                size = min(size, len(waiting))
                if size == 0:
                    break
            _Batch(study, objective, heartbeats).run(size)
            done += size


class _Batch:
    """One batch's members, and which of them Optuna has been told about."""

    def __init__(self, study: optuna.Study, objective: Objective, heartbeats: _Heartbeats):
        self.study, self.objective, self.heartbeats = study, objective, heartbeats
        self.members: list[Running] = []
        self.told: set[int] = set()

    def run(self, size: int) -> None:
        try:
            for _ in range(size):
                with warnings.catch_warnings():
                    # "Heartbeat of storage is supposed to be used with Study.optimize": this
                    # loop records the heartbeats itself (_Heartbeats).
                    warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                    trial = self.study.ask()
                self.heartbeats.add(trial)
                try:
                    self.members.append(self.objective.begin(trial))
                except BaseException:
                    self.heartbeats.discard(trial)
                    self.study.tell(trial, state=TrialState.FAIL)
                    raise
            with interrupt.allowed():  # a stop request raises in training, where it is handled
                for group in _groups(self.members):
                    self._train(group)
        except BaseException as error:  # an interrupt, or a bug: every member left ends with it
            for member in self.members:
                if member.trial.number not in self.told:
                    self.objective.record_error(member, error)
                    self._tell(member, TrialState.FAIL, ended_with(error))
            raise

    def _train(self, group: list[Running]) -> None:
        objective = self.objective
        built = [_build(objective, member) for member in group]  # a model, or why not
        ok = [k for k, model in enumerate(built) if isinstance(model, torch.nn.Module)]
        trained = [group[k] for k in ok]
        models = [cast(torch.nn.Module, built[k]) for k in ok]
        if not models:
            outcomes: list[Any] = []
        elif any(True for _ in models[0].buffers()):  # torch.func cannot stack their updates
            outcomes = _one_at_a_time(objective, trained, models)
        else:
            outcomes = train_batched(
                models,
                objective.splits,
                [member.config.train for member in trained],
                [member.seed for member in trained],
                lambda k, report: objective.report(trained[k], report),
                trials_snapshot,
            )
        by_member = dict(zip(ok, outcomes, strict=True))
        results = [by_member.get(k, built[k]) for k in range(len(group))]
        unexpected: BaseException | None = None
        best = best_value(self.study)  # once per batch; the members' values are added here
        with trials_snapshot():  # the samplers' after-trial reads: once, not per tell
            for member, model, result in zip(group, built, results, strict=True):
                if isinstance(result, BaseException):
                    objective.record_error(member, result)
                    pruned = isinstance(result, optuna.TrialPruned)
                    state = TrialState.PRUNED if pruned else TrialState.FAIL
                    self._tell(member, state, ended_with(result))
                    if not pruned and not isinstance(result, TRIAL_FAILURES):
                        unexpected = unexpected or result
                else:
                    trained_model = cast(torch.nn.Module, model)  # (built, as it has a result)
                    values = objective.complete(member, trained_model, result)  # one objective
                    if best is None or better(self.study, values[0], best):
                        best = values[0]
                    self._tell(member, values, objective.completed_with(values), best)
        if unexpected is not None:
            raise unexpected  # as study.optimize does with an error that is not a result

    def _tell(
        self,
        member: Running,
        outcome: list[float] | TrialState,
        text: str,
        best: float | None = None,
    ) -> None:
        """Tell Optuna a member's outcome; ``text`` and ``best`` (counting it) for progress."""
        self.heartbeats.discard(member.trial)
        self.told.add(member.trial.number)
        if isinstance(outcome, TrialState):
            self.study.tell(member.trial, state=outcome)
        else:
            self.study.tell(member.trial, outcome)
        self.objective.progress.trial_ended(member.trial.number, text, best)


_said: set[str] = set()


def _build(objective: Objective, member: Running) -> torch.nn.Module | ModelRejected:
    """A member's model, or the reason its parameters give none (that member fails alone)."""
    try:
        return objective.build(member)
    except ModelRejected as error:
        return error


def _one_at_a_time(
    objective: Objective, group: list[Running], models: list[torch.nn.Module]
) -> list[TrainResult | Exception]:
    """Members of a model with buffers (BatchNorm's running statistics, which torch.func
    cannot stack), trained one after another; each one's result or the error that ended it,
    as ``train_batched`` returns them. Said once per process."""
    if "buffers" not in _said:
        _said.add("buffers")
        print(
            "note: the model has buffers (e.g. BatchNorm statistics), so hptune trains batched "
            "members one at a time",
            file=sys.stderr,
            flush=True,
        )
    results: list[TrainResult | Exception] = []
    for member, model in zip(group, models, strict=True):
        try:
            report = partial(objective.report, member)
            train_config = member.config.train
            results.append(train(model, objective.splits, train_config, member.seed, report))
        except Exception as error:  # pruned or diverged: this member's outcome
            results.append(error)
    return results


def batch_key(config: StudyConfig) -> tuple[object, ...]:
    """What trials must share to train as one stacked model (their resolved configs)."""
    return (
        config.model.model_dump_json(),
        *(getattr(config.train, name) for name in SHARED_FIELDS),
    )


def group_rows(config: StudyConfig, rows: list[dict[str, Choice]]) -> list[dict[str, Choice]]:
    """A table's rows with those that can share a model next to each other (otherwise in file
    order), so that K consecutive rows - a batch - fill one stacked model."""
    keys = {id(row): batch_key(config.with_params(row)) for row in rows}
    first_seen: dict[tuple[object, ...], int] = {}
    for index, row in enumerate(rows):
        first_seen.setdefault(keys[id(row)], index)
    return sorted(rows, key=lambda row: first_seen[keys[id(row)]])


def _groups(members: list[Running]) -> list[list[Running]]:
    """Members that can train as one stacked model, in ask order."""
    groups: dict[tuple[object, ...], list[Running]] = {}
    for member in members:
        groups.setdefault(batch_key(member.config), []).append(member)
    return list(groups.values())


class _Heartbeats:
    """Heartbeats of the running members, recorded at once and then every interval, through a
    storage of their own opened from the study's URL (``optuna.Study`` does not expose its
    storage) and its public API."""

    def __init__(self, url: str, study_name: str) -> None:
        storage: Any = open_storage(url)  # an RDBStorage, or hptune's cache in front of one
        self.storage = storage
        self.study_id: int = storage.get_study_id_from_name(study_name)
        self.interval: float = storage.get_heartbeat_interval() or 60
        self.ids: dict[int, int] = {}  # trial number -> the trial's id in the storage
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="hptune-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeats:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()

    def add(self, trial: optuna.Trial) -> None:
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
        self.storage.record_heartbeat(trial_id)
        with self.lock:
            self.ids[trial.number] = trial_id

    def discard(self, trial: optuna.Trial) -> None:
        with self.lock:
            self.ids.pop(trial.number, None)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            with self.lock:
                ids = list(self.ids.values())
            for trial_id in ids:
                self.storage.record_heartbeat(trial_id)
