"""``hptune replay``: train one stored trial again, from its parameters and seed.

The replay is its own MLflow run under the study's parent run, tagged as a replay of the
original (``hptune.replay_of``), and trains with what the original recorded: its search-space
parameters (Optuna), its seed and precision (its run's params) and its CPU thread count (its
``hptune.worker`` record). Its per-epoch objective is set beside the original's: on the CPU in
fp32 with ``torch.use_deterministic_algorithms`` the two agree exactly, which is what makes a
trial's number a reproducible result rather than one draw.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from hptune import data
from hptune.attrs import RUN_ID_ATTR, WORKER_ATTR
from hptune.config import StudyConfig
from hptune.device import flush_denormals, precision_name, resolve_device
from hptune.errors import HptuneError
from hptune.models import build_model
from hptune.objective import logged_params, trial_seed
from hptune.registry import TRIAL_METRICS
from hptune.storage import load_existing_study, storage_url
from hptune.tracking import PARENT_RUN_ATTR, StudyReader, StudyTracker, resolve_tracking_uri
from hptune.training import EpochReport, seed_everything, train

REPLAY_OF_TAG = "hptune.replay_of"  # a replay's run: the original trial's run id


@dataclass(frozen=True)
class Replay:
    """A replayed trial: each objective's per-epoch values, original and replayed."""

    number: int
    run_id: str
    original_run_id: str
    precision: str
    metrics: list[str]
    original: dict[str, dict[int, float]]  # metric -> epoch -> value
    replayed: dict[str, dict[int, float]]

    def largest_difference(self, metric: str) -> float:
        """The largest absolute difference over the epochs both have (nan for none)."""
        both = self.original[metric].keys() & self.replayed[metric].keys()
        diffs = [abs(self.original[metric][e] - self.replayed[metric][e]) for e in both]
        return max(diffs) if diffs else math.nan


def replay_trial(config: StudyConfig, number: int) -> Replay:
    """Train trial ``number`` of the study again as a new MLflow run; compare its epochs.

    Raises:
        HptuneError: no such study or trial, or a trial without an MLflow run.
    """
    study = load_existing_study(config.name, storage_url(config.storage))
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise HptuneError(f"study {config.name!r} has no trial {number} (it has {len(trials)})")
    trial = trials[number]
    original_run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if original_run_id is None:
        raise HptuneError(f"trial {number} of {config.name!r} never started ({trial.state.name})")
    tracking_uri = resolve_tracking_uri(config.tracking.uri)
    reader = StudyReader(tracking_uri)
    original = reader.run(original_run_id)
    trial_config = config.with_params(trial.params)
    precision = original.params.get("precision", trial_config.train.precision)
    train_config = trial_config.train.model_copy(update={"precision": precision})
    trial_config = trial_config.model_copy(update={"train": train_config})
    seed = int(original.params.get("seed", trial_seed(trial_config.train, number)))
    # Per-epoch objectives (a model's size and latency are no training curve).
    metrics = [o.metric for o in config.objectives if o.metric not in TRIAL_METRICS]
    metrics = metrics or ["val/accuracy"]
    device = resolve_device(trial_config.train.device)
    flush_denormals()  # as the study's processes do (hptune.study)
    splits = data.load(trial_config.data, device)
    tracker = StudyTracker(config.experiment_name, tracking_uri)
    run = tracker.start_trial(
        study.user_attrs[PARENT_RUN_ATTR],
        config.name,
        number,
        {"trial_number": number, **logged_params(trial_config, seed, device)},
        {"hptune.role": "replay", REPLAY_OF_TAG: original_run_id},
        run_name=f"replay-of-trial-{number}",
    )
    replayed: dict[str, dict[int, float]] = {metric: {} for metric in metrics}

    def on_epoch(report: EpochReport) -> None:
        run.log_epoch(report.epoch, report.metrics)
        for metric in metrics:
            replayed[metric][report.epoch] = report.metrics[metric]

    status = "FAILED"
    try:
        with _as_the_original(trial.user_attrs.get(WORKER_ATTR, {}).get("threads")):
            seed_everything(seed)
            model = build_model(trial_config.model, splits.input_shape, len(splits.classes))
            train(model.to(device), splits, trial_config.train, seed, on_epoch)
        status = "FINISHED"
    finally:
        run.finish(status, {"hptune.state": "replay"})
        tracker.close()
    return Replay(
        number,
        run.run_id,
        original_run_id,
        precision_name(trial_config.train, device),
        metrics,
        {metric: dict(reader.history(original_run_id, metric)) for metric in metrics},
        replayed,
    )


@contextmanager
def _as_the_original(threads: int | None) -> Iterator[None]:
    """Deterministic algorithms and the original's thread count, restored afterwards."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    before = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(before)


def format_replay(replay: Replay) -> str:
    """Per-epoch objective, original next to replay, and each largest difference."""
    header = ["epoch"]
    for metric in replay.metrics:
        header += [f"{metric} original", "replay", "difference"]
    rows = [header]
    epochs = sorted(set().union(*(replay.replayed[m].keys() for m in replay.metrics)))
    for epoch in epochs:
        row = [str(epoch)]
        for metric in replay.metrics:
            old, new = replay.original[metric].get(epoch), replay.replayed[metric].get(epoch)
            diff = abs(old - new) if old is not None and new is not None else None
            row += [_num(old), _num(new), _num(diff, "g")]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.append(f"replay of trial {replay.number} ({replay.precision}): run {replay.run_id}")
    for metric in replay.metrics:
        lines.append(f"largest difference, {metric}: {replay.largest_difference(metric):g}")
    return "\n".join(lines)


def _num(value: float | None, spec: str = ".6f") -> str:
    return "-" if value is None else format(value, spec)
