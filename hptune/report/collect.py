"""Everything a report shows, read once from the Optuna storage and from MLflow."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna

from hptune.attrs import FAIL_REASON_ATTR, FINGERPRINT_ATTR, FIT_ATTR, RUN_ID_ATTR
from hptune.storage import load_existing_study
from hptune.tracking import RunRecord, StudyReader

INTERRUPTED = "interrupted"  # a trial's fail_reason (Optuna) or hptune.state (MLflow) when stopped
CURVES = ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "val/f1_macro")


@dataclass
class TrialData:
    """One Optuna trial with its MLflow run's curves (empty when it never logged)."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    run_id: str | None
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    fit: str | None = None
    fail_reason: str | None = None
    device: str | None = None
    epochs: str | None = None  # as the trial's run logged it (searched or fixed)
    distributions: dict[str, optuna.distributions.BaseDistribution] = field(default_factory=dict)

    def final(self, key: str) -> float | None:
        """The metric's value at the trial's last logged epoch."""
        points = self.curves.get(key)
        return points[-1][1] if points else None

    @property
    def best_epoch(self) -> int | None:
        """Epoch of the highest val accuracy (experiment A's "best epoch")."""
        points = self.curves.get("val/accuracy")
        return max(points, key=lambda p: p[1])[0] if points else None


@dataclass
class BestData:
    """The best trial's extra material: its classification details and per-layer curves."""

    trial: TrialData
    validation: dict[str, Any] | None
    test_metrics: dict[str, float]
    test: dict[str, Any] | None
    gallery_png: bytes | None
    layer_curves: dict[str, list[tuple[int, float]]]
    lr: list[tuple[int, float]]


@dataclass
class ReportData:
    study: optuna.Study
    storage: str
    tracking_uri: str
    experiment: str
    parent: RunRecord | None
    trials: list[TrialData]
    best: BestData | None
    queued: int = 0  # trials waiting to run: a table's rows, stopped trials queued again

    @property
    def metric(self) -> str:
        """The objective's metric key, as recorded in the study's fingerprint."""
        fingerprint = self.study.user_attrs.get(FINGERPRINT_ATTR)
        return str(json.loads(fingerprint)["objective"]) if fingerprint else "objective"

    @property
    def maximize(self) -> bool:
        return self.study.directions[0] == optuna.study.StudyDirection.MAXIMIZE

    def tag(self, key: str) -> str | None:
        """A tag of the study's parent run (None without one)."""
        return self.parent.tags.get(key) if self.parent else None

    @property
    def val_size(self) -> int | None:
        """Validation images, as the parent run recorded them (None for older studies)."""
        size = self.tag("hptune.val_size")
        return int(size) if size and size.isdigit() else None

    def noise(self) -> float | None:
        """One standard error of the best value, ``sqrt(p(1-p)/n_val)``: the validation set's
        sampling noise for an accuracy (for macro-F1, an approximation of it). None for losses
        and where the validation size is unknown."""
        ranked = self.ranked()
        return self.standard_error(ranked[0].value) if ranked else None

    def standard_error(self, value: float | None) -> float | None:
        """``sqrt(p(1-p)/n_val)`` at ``p = value`` (see ``noise``)."""
        size = self.val_size
        if value is None or not size or self.metric.endswith("loss") or not 0 <= value <= 1:
            return None
        return math.sqrt(value * (1 - value) / size)

    def counts(self) -> dict[str, int]:
        counts = {"complete": 0, "pruned": 0, "failed": 0, "interrupted": 0, "running": 0}
        for trial in self.trials:
            counts[trial.state] = counts.get(trial.state, 0) + 1
        return counts

    def ranked(self) -> list[TrialData]:
        """Complete trials, best first."""
        complete = [t for t in self.trials if t.state == "complete" and t.value is not None]
        return sorted(complete, key=lambda t: t.value or 0.0, reverse=self.maximize)

    def wall_time_s(self) -> float | None:
        """From the first trial's start to the last trial's end (or now, if one runs)."""
        frozen = self.study.get_trials(deepcopy=False)
        starts = [t.datetime_start for t in frozen if t.datetime_start]
        ends = [t.datetime_complete or datetime.now() for t in frozen if t.datetime_start]
        return (max(ends) - min(starts)).total_seconds() if starts else None


_STATES = {
    optuna.trial.TrialState.COMPLETE: "complete",
    optuna.trial.TrialState.PRUNED: "pruned",
    optuna.trial.TrialState.FAIL: "failed",
    optuna.trial.TrialState.RUNNING: "running",
}


def collect(study_name: str, storage: str, tracking_uri: str | None, experiment: str) -> ReportData:
    """Load the study and its runs.

    Raises:
        HptuneError: no study of that name in the storage, or a tracking store that cannot
            be reached.
    """
    reader = StudyReader(tracking_uri)  # first: it checks that the tracking store answers
    study = load_existing_study(study_name, storage)  # (a report makes no new store)
    parent = reader.parent(experiment, study_name)
    runs = {run.run_id: run for run in reader.trials(parent)} if parent else {}
    trials, queued = [], 0
    for frozen in study.get_trials(deepcopy=False):
        if frozen.state not in _STATES:
            queued += 1  # WAITING: not run yet
            continue
        run_id = frozen.user_attrs.get(RUN_ID_ATTR)
        trial = TrialData(
            number=frozen.number,
            state=_STATES[frozen.state],
            value=frozen.values[0] if frozen.values else None,  # (the first objective)
            params=dict(frozen.params),
            run_id=run_id,
            fit=frozen.user_attrs.get(FIT_ATTR),
            fail_reason=frozen.user_attrs.get(FAIL_REASON_ATTR),
            distributions=dict(frozen.distributions),
        )
        if run_id in runs:
            trial.curves = {key: reader.history(run_id, key) for key in CURVES}
            trial.device = runs[run_id].params.get("device")
            trial.epochs = runs[run_id].params.get("epochs")
            # A dead worker's trial has its reason only on the run hptune closed for it.
            trial.fail_reason = trial.fail_reason or runs[run_id].tags.get("hptune.fail_reason")
            if runs[run_id].tags.get("hptune.state") == INTERRUPTED:
                trial.fail_reason = INTERRUPTED
        if trial.state == "failed" and trial.fail_reason == INTERRUPTED:
            trial.state = INTERRUPTED  # stopped (Ctrl-C, SIGTERM), not a result
        trials.append(trial)
    data = ReportData(
        study, storage, reader.tracking_uri, experiment, parent, trials, best=None, queued=queued
    )
    data.best = _best(data, reader, runs)
    return data


def _best(data: ReportData, reader: StudyReader, runs: dict[str, RunRecord]) -> BestData | None:
    ranked = data.ranked()
    trial = ranked[0] if ranked else None
    run_id = trial.run_id if trial else None
    if trial is None or run_id is None:
        return None
    run_keys = runs[run_id].metrics if run_id in runs else {}
    layer_curves = {  # (grad/: the name before weight_grad/, in older stores)
        key: reader.history(run_id, key)
        for key in sorted(run_keys)
        if key.startswith(("weight_grad/", "grad/"))
    }
    test_metrics: dict[str, float] = {}
    test = gallery = None
    parent = data.parent
    # The parent's test numbers belong to the best trial only if it is the one evaluated.
    if parent and parent.tags.get("best_trial_run_id") == run_id:
        test_metrics = {k: v for k, v in parent.metrics.items() if k.startswith("test/")}
        test = _json(reader.artifact(parent.run_id, "test_confusion_matrix.json"))
        per_class = _json(reader.artifact(parent.run_id, "test_per_class.json"))
        if test is not None:
            test["per_class"] = per_class
        gallery = reader.artifact(parent.run_id, "test_gallery.png")
    validation = _json(reader.artifact(run_id, "confusion_matrix.json"))
    if validation is not None:
        validation["per_class"] = _json(reader.artifact(run_id, "per_class.json"))
    return BestData(
        trial=trial,
        validation=validation,
        test_metrics=test_metrics,
        test=test,
        gallery_png=gallery,
        layer_curves=layer_curves,
        lr=reader.history(run_id, "lr"),
    )


def _json(raw: bytes | None) -> Any:
    return None if raw is None else json.loads(raw)
