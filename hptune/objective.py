"""One trial of a study: its parameters, its MLflow run, its training and its outcome.

``Objective`` is what ``optuna.Study.optimize`` calls for each trial (``hptune.study``); its
``begin``, ``report``, ``record_error`` and ``complete`` also serve each member of a batch of
trials trained together (``hptune.batchrun``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import torch

from hptune import data, interrupt, space
from hptune.attrs import FAIL_REASON_ATTR, FIT_ATTR, RETRY_OF_ATTR, RUN_ID_ATTR, WORKER_ATTR
from hptune.config import Choice, StudyConfig, TrainConfig
from hptune.device import GPU_ENV, precision_name
from hptune.metrics import classification_details, curve_summary, fit_diagnosis
from hptune.models import build_model
from hptune.progress import Progress
from hptune.tracking import StudyTracker, TrialRun
from hptune.training import Diverged, EpochReport, TrainResult, seed_everything, train

# A trial ending in one of these is a recorded result (a FAILED trial), and the study goes on.
TRIAL_FAILURES: tuple[type[Exception], ...] = (Diverged, torch.OutOfMemoryError)


@dataclass(frozen=True)
class BestModel:
    """The best complete trial this process trained, with its weights (on the CPU)."""

    number: int
    run_id: str
    value: float
    model: torch.nn.Module


class StudyStopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the study's trials; ``best`` is the best complete trial this
    process (or its workers) trained before, so that its model is still logged."""

    def __init__(self, best: BestModel | None) -> None:
        super().__init__()
        self.best = best


def trial_seed(config: TrainConfig, number: int) -> int:
    """The trial's seed: derived from the study seed and trial number, or the study seed."""
    if not config.seed_per_trial:
        return config.seed
    return int(np.random.SeedSequence([config.seed, number]).generate_state(1)[0])


def logged_params(config: StudyConfig, seed: int, device: torch.device) -> dict[str, Choice]:
    """Every hyperparameter of a resolved trial config under its stable name."""
    model, train_config = config.model, config.train
    params: dict[str, Choice] = {
        "dataset": config.data.dataset,
        "normalize": config.data.normalize,
        "family": model.family,
        "activation": model.activation,
        "optimizer": train_config.optimizer,
        "lr": train_config.lr,
        "batch_size": train_config.batch_size,
        "epochs": train_config.epochs,
        "scheduler": train_config.scheduler,
        "seed": seed,
        "device": str(device),
        "precision": precision_name(train_config, device),
    }
    if model.family == "mlp":
        params.update(
            width=model.width,
            depth=len(model.layer_sizes),
            hidden_sizes="-".join(map(str, model.layer_sizes)),
            dropout=model.dropout,
        )
    if model.family == "convnet":
        params.update(
            conv_blocks=model.conv_blocks,
            filters=model.filters,
            dense_layers=model.dense_layers,
            neurons=model.neurons,
        )
    if train_config.weight_decay is not None:
        params["weight_decay"] = train_config.weight_decay
    return params


@dataclass(frozen=True)
class Running:
    """A trial between its start (parameters chosen, MLflow run created) and its end."""

    trial: optuna.Trial
    params: dict[str, Choice | None]
    config: StudyConfig
    seed: int
    run: TrialRun


class Objective:
    """Trains one trial; logs it, reports each epoch to Optuna, and ends its run truthfully.

    ``begin``, ``report``, ``record_error`` and ``complete`` are also what the batched driver
    (``hptune.batchrun``) uses for each member of a batch."""

    def __init__(
        self,
        config: StudyConfig,
        splits: data.Splits,
        device: torch.device,
        tracker: StudyTracker,
        parent_run_id: str,
        progress: Progress,
        worker: int = 0,
    ) -> None:
        self.config = config
        self.worker = worker  # the worker process's index (hptune.workers), 0: the main one
        self.splits = splits
        self.device = device
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        self.progress = progress
        self.val_labels = splits.val_y.cpu().numpy()
        self.best: BestModel | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        running = self.begin(trial)
        self.progress.trial_started(trial.number, running.config.train.epochs)
        try:
            with interrupt.allowed():  # a stop request raises here, where it is handled
                model = self.build(running)
                result = train(
                    model,
                    self.splits,
                    running.config.train,
                    running.seed,
                    lambda report: self.report(running, report),
                )
        except BaseException as error:
            self.record_error(running, error)
            raise
        finally:
            self.progress.trial_ended()
        value = self.complete(running, model, result)
        # The stored best does not hold this trial yet (Optuna stores it after this returns).
        best = best_value(trial.study)
        if best is None or _better(trial.study, value, best):
            best = value
        self.progress.show_best(best)
        return value

    def begin(self, trial: optuna.Trial) -> Running:
        """Choose the trial's parameters and create its MLflow run."""
        params = space.suggest(trial, self.config)
        trial_config = self.config.with_params(params)
        seed = trial_seed(trial_config.train, trial.number)
        run = self.tracker.start_trial(
            self.parent_run_id,
            self.config.name,
            trial.number,
            {"trial_number": trial.number, **logged_params(trial_config, seed, self.device)},
            self.run_tags(),
        )
        running = Running(trial, params, trial_config, seed, run)
        try:
            trial.set_user_attr(RUN_ID_ATTR, run.run_id)
            trial.set_user_attr(WORKER_ATTR, self.process_info(trial_config))
        except BaseException as error:  # e.g. Ctrl-C: the run just created ends with it
            self.record_error(running, error)
            raise
        return running

    def run_tags(self) -> dict[str, str]:
        """The worker process and the GPU it is pinned to (``hptune.workers``), when set."""
        gpu = os.environ.get(GPU_ENV)
        return {
            **({"hptune.worker": str(self.worker)} if self.worker else {}),
            **({"hptune.gpu": gpu} if gpu is not None else {}),
        }

    def process_info(self, trial_config: StudyConfig) -> dict[str, Any]:
        """Where the trial runs, for ``hptune status``: host, process, GPU, planned epochs."""
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "gpu": os.environ.get(GPU_ENV),
            "epochs": trial_config.train.epochs,
            "threads": torch.get_num_threads(),  # (a replay computes with as many)
        }

    def build(self, running: Running) -> torch.nn.Module:
        """The trial's model, initialized from its seed, on the training device."""
        seed_everything(running.seed)
        model = build_model(running.config.model, self.splits.input_shape, len(self.splits.classes))
        return model.to(self.device)

    def report(self, running: Running, report: EpochReport) -> None:
        """An epoch's metrics to MLflow and the objective to Optuna; raise to prune (or to
        stop, when a stop signal's KeyboardInterrupt was lost: ``hptune.interrupt``)."""
        interrupt.check()
        # Held: a stop raised inside these calls could leave a lock of Python's threading half
        # taken (the MLflow writer's pool, SQLAlchemy's connection pool, the progress bar); a
        # worker stopped inside the writer's submit hung so, waiting for that lock (1 run in
        # ~70 of a test). Raised right after them instead.
        with interrupt.held():
            running.run.log_epoch(report.epoch, report.metrics)
            self.progress.epoch(report.metrics)
            running.trial.report(report.metrics[self.config.objective.metric], report.epoch)
            prune = running.trial.should_prune()
        interrupt.check()
        if prune:
            raise optuna.TrialPruned(str(report.epoch))

    def record_error(self, running: Running, error: BaseException) -> None:
        """End the trial's run for what stopped it (Optuna's state is set by the caller)."""
        run, trial = running.run, running.trial
        if isinstance(error, optuna.TrialPruned):
            run.finish("KILLED", {"hptune.state": "pruned", "hptune.pruned_at_epoch": str(error)})
        elif isinstance(error, TRIAL_FAILURES):
            trial.set_user_attr(FAIL_REASON_ATTR, str(error))
            run.finish("FAILED", {"hptune.state": "failed", "hptune.fail_reason": str(error)})
        elif isinstance(error, KeyboardInterrupt):
            # Optuna records the trial as FAIL; queue its parameters so a rerun repeats it.
            trial.study.enqueue_trial(running.params, user_attrs={RETRY_OF_ATTR: trial.number})
            run.finish("KILLED", {"hptune.state": "interrupted"})
        else:
            run.finish("FAILED", {"hptune.state": "failed", "hptune.fail_reason": repr(error)})

    def complete(self, running: Running, model: torch.nn.Module, result: TrainResult) -> float:
        """Log a trained trial's outcome and return its objective value."""
        trial, run = running.trial, running.run
        value = result.history[-1].metrics[self.config.objective.metric]
        predictions = result.val_predictions
        history = [(report.epoch, report.metrics) for report in result.history]
        fit = fit_diagnosis([m for _, m in history])
        trial.set_user_attr(FIT_ATTR, fit)
        run.log_outcome(
            curve_summary([m for _, m in history]),
            # Computed by the writer thread (scikit-learn's scores: ~4 ms per trial).
            lambda: classification_details(self.val_labels, predictions, self.splits.classes),
            history,
        )
        run.finish("FINISHED", {"hptune.state": "complete", FIT_ATTR: fit})
        if self.best is None or _better(trial.study, value, self.best.value):
            # The best trial this process trained: ``optimize`` logs its model if it is the
            # study's best (``_finish``), so it is compared with this process's trials only,
            # without a storage read per trial.
            self.best = BestModel(trial.number, run.run_id, value, model.cpu())
        return value


def best_value(study: optuna.Study) -> float | None:
    """The best complete trial's value, or None before any trial completed."""
    try:
        return study.best_value
    except ValueError:
        return None


def _better(study: optuna.Study, value: float, than: float) -> bool:
    """Whether ``value`` beats ``than`` in the study's direction."""
    return value > than if study.direction == optuna.study.StudyDirection.MAXIMIZE else value < than
