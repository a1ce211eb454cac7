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

from hptune import data, fastpaths, interrupt, pareto, registry, space
from hptune.attrs import (
    EPOCH_ATTR,
    FAIL_REASON_ATTR,
    FIT_ATTR,
    INTERRUPTED,
    RETRY_OF_ATTR,
    RUN_ID_ATTR,
    WORKER_ATTR,
)
from hptune.config import MODEL_SETTINGS, Choice, ModelConfig, StudyConfig, TrainConfig
from hptune.device import GPU_ENV, precision_name
from hptune.errors import ConfigError
from hptune.imports import spec_text
from hptune.metrics import classification_details, curve_summary, fit_diagnosis
from hptune.modelcost import LATENCY_BATCH, latency_ms, trainable_parameters
from hptune.models import ModelRejected, build_model, check_output
from hptune.progress import Progress
from hptune.tracking import StudyTracker, TrialRun
from hptune.training import Diverged, EpochReport, TrainResult, seed_everything, train

# A trial ending in one of these is a recorded result (a FAILED trial), and the study goes on.
PARAMS_METRIC = "model/params"  # the model's trainable parameters, logged when it is built
TRIAL_FAILURES: tuple[type[Exception], ...] = (Diverged, ModelRejected, torch.OutOfMemoryError)


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


# Settings that do not change what a trial computes (where and how fast it runs, and the test
# set, which trials are not compared on): a rerun may change them and still join the study.
NOT_COMPARED = frozenset(
    {
        "data.data_dir",
        "data.download",
        "data.test_subset",
        "train.device",
        "train.precision",
        "train.cuda_graphs",
        "train.fast_paths",
    }
)


def effective_settings(config: StudyConfig) -> dict[str, str]:
    """The data, model and training settings of a config (after ``--set`` overrides) under
    dotted keys (``data.train_subset``, ``train.epochs``), as text: what MLflow stores."""
    settings: dict[str, str] = {}
    for section in ("data", "model", "train"):
        for field, value in getattr(config, section).model_dump(mode="json").items():
            text = "-".join(map(str, value)) if isinstance(value, list) else str(value)
            settings[f"{section}.{field}"] = text
    return settings


def compared_settings(config: StudyConfig) -> dict[str, str]:
    """``effective_settings`` less ``NOT_COMPARED``: what trials of one study must share."""
    return {k: v for k, v in effective_settings(config).items() if k not in NOT_COMPARED}


def logged_params(config: StudyConfig, seed: int, device: torch.device) -> dict[str, Choice]:
    """Every hyperparameter of a resolved trial config under its stable name (a user factory's
    parameters under their own names), then its whole effective data, model and training
    configuration under dotted keys; ``device`` and ``precision`` are what the trial ran with."""
    model, train_config = config.model, config.train
    params: dict[str, Choice] = {
        "dataset": config.data.source_name,
        "normalize": config.data.normalize,
        "optimizer": train_config.optimizer,
        "lr": train_config.lr,
        "batch_size": train_config.batch_size,
        "epochs": train_config.epochs,
        "scheduler": train_config.scheduler,
        "seed": seed,
        "device": str(device),
        "precision": precision_name(train_config, device),
    }
    params |= _model_params(model)
    if train_config.weight_decay is not None:
        params["weight_decay"] = train_config.weight_decay
    return {**params, **effective_settings(config)}


def _model_params(model: ModelConfig) -> dict[str, Choice]:
    """The model's hyperparameters: its family's fields, or a factory's path and arguments."""
    if model.factory is not None:
        settings = {name: getattr(model, name) for name in MODEL_SETTINGS & model.model_fields_set}
        return {
            "factory": spec_text(model.factory),
            **{k: _loggable(v) for k, v in {**settings, **model.params}.items()},
        }
    params: dict[str, Choice] = {"family": model.family, "activation": model.activation}
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
    return params


def _loggable(value: object) -> Choice:
    """A parameter value as MLflow stores it: scalars as they are, anything else as text."""
    return value if isinstance(value, bool | int | float | str) else str(value)


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
        self.metrics = [objective.metric for objective in config.objectives]
        # The metric reported to Optuna each epoch (for pruning): one per-epoch objective.
        single = len(self.metrics) == 1 and self.metrics[0] not in registry.TRIAL_METRICS
        self.reported = self.metrics[0] if single else None
        self._best: BestModel | None = None
        self.front: dict[int, BestModel] = {}  # several objectives: this process's front
        self.values: dict[int, list[float]] = {}  # its values, each to be minimized
        self.study: optuna.Study | None = None

    @property
    def best(self) -> BestModel | None:
        """The best complete trial this process trained, with its model: for several
        objectives, the ``select`` rule's trial of the study's front if it is one of ours."""
        if len(self.metrics) == 1 or self.study is None:
            return self._best
        chosen = pareto.select(self.study, self.config)
        return self.front.get(chosen.number) if chosen is not None else None

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
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
            self.progress.trial_ended(trial.number, ended_with(error))
            raise
        values = self.complete(running, model, result)
        if len(values) > 1:
            self.progress.trial_ended(trial.number, self.completed_with(values))
            return values
        # The stored best does not hold this trial yet (Optuna stores it after this returns).
        best = best_value(trial.study)
        if best is None or better(trial.study, values[0], best):
            best = values[0]
        self.progress.trial_ended(trial.number, self.completed_with(values), best)
        return values[0]

    def completed_with(self, values: list[float]) -> str:
        """How a complete trial ended, for the progress line."""
        scores = ", ".join(
            f"{o.metric} {v:.4g}" for o, v in zip(self.config.objectives, values, strict=True)
        )
        return f"complete: {scores}"

    def begin(self, trial: optuna.Trial) -> Running:
        """Choose the trial's parameters and create its MLflow run."""
        fastpaths.start_trial()
        params = space.suggest(trial, self.config)
        trial_config = self.config.with_params(params)
        seed = trial_seed(trial_config.train, trial.number)
        run = self.tracker.start_trial(
            self.parent_run_id,
            self.config.name,
            trial.number,
            {"trial_number": trial.number, **logged_params(trial_config, seed, self.device)},
            self.run_tags(),
            searched=params,
            objective=self.config.objectives[0].metric,
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
        """The trial's model, initialized from its seed, on the training device.

        Raises:
            ModelRejected: the trial's parameters give no model, or (a user's factory) one
                whose output on two training images is not one logit per class.
        """
        seed_everything(running.seed)
        config = running.config
        try:
            model = build_model(
                config.model, self.splits.input_shape, len(self.splits.classes), config.folder
            ).to(self.device)
            if config.model.factory is not None:  # (the built-in families' shapes are known)
                sample = self.splits.train_x[:2]
                check_output(model, sample, len(self.splits.classes), config.model)
        except ConfigError as error:
            raise ModelRejected("; ".join(error.problems)) from error
        # Its size is known now: logged for every trial, pruned and failed ones too.
        running.run.log_metrics({PARAMS_METRIC: float(trainable_parameters(model))})
        return model

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
            prune = False
            if self.reported is not None:
                running.trial.report(report.metrics[self.reported], report.epoch)
                prune = running.trial.should_prune()
            else:  # Optuna takes no reports here: the epoch, for hptune status
                running.trial.set_user_attr(EPOCH_ATTR, report.epoch)
        interrupt.check()
        if prune:
            raise optuna.TrialPruned(str(report.epoch))

    def record_error(self, running: Running, error: BaseException) -> None:
        """End the trial's run for what stopped it (Optuna's state is set by the caller)."""
        run, trial = running.run, running.trial
        run.set_tags(fastpaths.trial_tags())
        if isinstance(error, optuna.TrialPruned):
            run.finish("KILLED", {"hptune.state": "pruned", "hptune.pruned_at_epoch": str(error)})
        elif isinstance(error, TRIAL_FAILURES):
            trial.set_user_attr(FAIL_REASON_ATTR, str(error))
            run.finish("FAILED", {"hptune.state": "failed", "hptune.fail_reason": str(error)})
        elif isinstance(error, KeyboardInterrupt):
            # Optuna records the trial as FAIL: say why, and queue its parameters so that a
            # rerun repeats it.
            trial.set_user_attr(FAIL_REASON_ATTR, INTERRUPTED)
            trial.study.enqueue_trial(running.params, user_attrs={RETRY_OF_ATTR: trial.number})
            run.finish("KILLED", {"hptune.state": "interrupted"})
        else:
            run.finish("FAILED", {"hptune.state": "failed", "hptune.fail_reason": repr(error)})

    def costs(self, model: torch.nn.Module) -> dict[str, float]:
        """The trained model's per-trial metrics: its size, and its latency when an objective
        needs it (a measurement costs ~``REPEATS`` forward passes)."""
        costs = {PARAMS_METRIC: float(trainable_parameters(model))}
        if "model/latency_ms" in self.metrics:
            images = self.splits.val_x[:LATENCY_BATCH]
            costs["model/latency_ms"] = latency_ms(model, images)
            costs["model/latency_batch_size"] = float(len(images))
        return costs

    def complete(
        self, running: Running, model: torch.nn.Module, result: TrainResult
    ) -> list[float]:
        """Log a trained trial's outcome and return its objective values (one per objective)."""
        trial, run = running.trial, running.run
        run.set_tags(fastpaths.trial_tags())
        costs = self.costs(model)
        run.log_metrics({k: v for k, v in costs.items() if k != PARAMS_METRIC})  # (logged)
        final = {**result.history[-1].metrics, **costs}
        values = [final[metric] for metric in self.metrics]
        value = values[0]
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
        kept = BestModel(trial.number, run.run_id, value, model.cpu())
        if len(values) > 1:
            self.study = trial.study
            self._keep_on_front(kept, values)
        elif self._best is None or better(trial.study, value, self._best.value):
            # The best trial this process trained: ``optimize`` logs its model if it is the
            # study's best (``_finish``), so it is compared with this process's trials only,
            # without a storage read per trial.
            self._best = kept
        return values

    def _keep_on_front(self, kept: BestModel, values: list[float]) -> None:
        """Keep the model of a trial that no earlier trial of this process dominates, and drop
        the ones it dominates: the select rule's trial is on the study's front, so on ours."""
        mine = pareto.lower_is_better(values, pareto.directions(self.config))
        scored = {number: self.values[number] for number in self.front}
        if any(pareto.dominates(other, mine) for other in scored.values()):
            return
        for number, other in scored.items():
            if pareto.dominates(mine, other):
                del self.front[number], self.values[number]
        self.front[kept.number] = kept
        self.values[kept.number] = mine


def ended_with(error: BaseException) -> str:
    """How a trial that raised ``error`` ended, for the progress line."""
    if isinstance(error, optuna.TrialPruned):
        return f"pruned at epoch {error}"
    if isinstance(error, TRIAL_FAILURES):
        return f"failed: {error}"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (queued to run again)"
    return f"failed: {error!r}"


def best_value(study: optuna.Study) -> float | None:
    """The best complete trial's value, or None before any trial completed."""
    if len(study.directions) > 1:
        return None  # a front, not one value
    try:
        return study.best_value
    except ValueError:
        return None


def better(study: optuna.Study, value: float, than: float) -> bool:
    """Whether ``value`` beats ``than`` in the study's direction."""
    return value > than if study.direction == optuna.study.StudyDirection.MAXIMIZE else value < than
