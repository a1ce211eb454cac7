"""The study driver: wires data, models, training and tracking into an Optuna study.

Each call of ``optimize`` runs ``n_trials`` more trials of the study named in the config; the
study lives in persistent storage, so running the same command again continues it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import optuna

from hptune import data, datacache, fastpaths, grid, interrupt, notes, pareto, space
from hptune.allocator import long_lived_frozen
from hptune.attrs import FINGERPRINT_ATTR, PLANNED_ATTR, RUN_ID_ATTR, SETTINGS_ATTR
from hptune.config import Choice, StudyConfig
from hptune.device import flush_denormals, resolve_device, visible_gpus, worker_gpus
from hptune.environment import restored_environment
from hptune.errors import ConfigError, StudyConflictError
from hptune.imports import spec_text
from hptune.metrics import classification_details
from hptune.models import dry_run
from hptune.objective import (
    TRIAL_FAILURES,
    BestModel,
    Objective,
    StudyStopped,
    compared_settings,
)
from hptune.plots import gallery_figure, gallery_indices
from hptune.progress import Progress
from hptune.redact import redact
from hptune.runs_view import study_config_view
from hptune.samplers import build_pruner, build_sampler
from hptune.storage import (
    check_writable,
    database_lock,
    enqueue_lock,
    open_storage,
    storage_url,
)
from hptune.studyfile import effective_text
from hptune.tracking import PARENT_RUN_ATTR, StudyTracker, check_tracking, resolve_tracking_uri
from hptune.training import evaluate

GALLERY_SIZE = 8  # test images shown with true vs predicted labels (experiment A)


@dataclass(frozen=True)
class StudyResult:
    """What one ``optimize`` call leaves behind, for the summary."""

    study: optuna.Study
    storage: str
    tracking_uri: str
    experiment: str
    experiment_id: str | None = None  # MLflow's, for the runs page's address
    objective: str | None = None  # the objective metric, the runs page's order
    runs_view: str | None = None  # the key of the runs page's saved view, if it was written
    configurations: int | None = None  # rows of an exhaustive study's table
    configurations_run: int = 0
    registered_model: str | None = None  # the model this run logged and registered

    @property
    def completed(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hptune")
    except PackageNotFoundError:
        return "unknown"


def _git_commit(config: StudyConfig) -> str | None:
    """The commit of the repository holding the study file, when there is one."""
    import subprocess

    folder = config.source.parent if config.source else None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def open_study(config: StudyConfig, worker: int = 0) -> optuna.Study:
    """Load the named study or create it; refuse one whose search space no longer fits.

    ``worker``: the index of a worker process (``hptune.workers``), 0 in the main process."""
    storage = open_storage(storage_url(config.storage))
    sampler, pruner = build_sampler(config), build_pruner(config)
    fingerprint = space.fingerprint(config)
    # Created with its fingerprint by one process: another started at the same instant loads
    # it (finding it, and its fingerprint, once the lock is free).
    with database_lock(storage_url(config.storage), "study", config.name):
        try:
            study = optuna.load_study(
                study_name=config.name, storage=storage, sampler=sampler, pruner=pruner
            )
        except KeyError:
            study = optuna.create_study(
                study_name=config.name,
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                directions=pareto.directions(config),  # type: ignore[arg-type]
            )
            study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
            study.set_user_attr(SETTINGS_ATTR, compared_settings(config))
            return study
    if study.user_attrs.get(FINGERPRINT_ATTR) != fingerprint:
        raise StudyConflictError(
            f"study {config.name!r} in {redact(storage_url(config.storage))} was run with another "
            "search space or objective; continue it with the old file, or start a new study "
            "with --study-name NEW"
        )
    _check_settings(study, config)
    resumed_at = len(study.get_trials(deepcopy=False))
    study.sampler = build_sampler(config, resumed_at=resumed_at, worker=worker)
    return study


def _check_settings(study: optuna.Study, config: StudyConfig) -> None:
    """Refuse a rerun whose data, model or training settings differ from the stored study's
    (``objective.NOT_COMPARED`` may differ): its trials would not compare with the stored ones.
    A study stored before settings were recorded gets this run's; a setting only one side
    knows (a field added since) is not compared."""
    current = compared_settings(config)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, current)
        return
    changed = [k for k in sorted(stored.keys() & current.keys()) if stored[k] != current[k]]
    if changed:
        differences = "; ".join(f"{k}: {stored[k]} -> {current[k]}" for k in changed)
        raise StudyConflictError(
            f"study {config.name!r} in {redact(storage_url(config.storage))} trained its trials "
            f"with other settings ({differences}), so its trials would not compare with this "
            "run's; continue it with the stored settings, or start a new study with "
            "--study-name NEW"
        )


def optimize(config: StudyConfig) -> StudyResult:
    """Run ``config.n_trials`` more trials (or until ``config.timeout``) of the study.

    Raises:
        HptuneError: missing data, absent CUDA, or a stored study that does not fit.
    """
    with restored_environment():  # the caller's: what libraries write to it is undone
        return _optimize(config)


def _optimize(config: StudyConfig) -> StudyResult:
    _prepare_process()
    # Everything that can fail on the user's input runs before anything is written.
    tuned = fastpaths.enabled(config.train.fast_paths)  # (HPTUNE_FAST_PATHS checked here)
    device = resolve_device(config.train.device)
    _check_importable(config)
    worker_gpus(config.gpus, config.workers, device, visible_gpus())
    splits = data.load(config.data, device, config.source)
    dry_run(  # the model of the space's first point, through two samples
        config.with_params(space.first_point(config)).model,
        splits.train_x[:2],
        len(splits.classes),
        config.folder,
        str(config.source or "<study>"),
    )
    build_sampler(config), build_pruner(config)
    tracking_uri = resolve_tracking_uri(config.tracking.uri)
    check_tracking(tracking_uri)
    check_writable(storage_url(config.storage), "storage")

    study = open_study(config)
    tracker = StudyTracker(config.experiment_name, tracking_uri)
    view = tracker.describe_experiment(
        config.description or f"hptune study {config.name}", study_config_view(config)
    )
    # One parent run per study: commands started together take turns to find or create it.
    with database_lock(storage_url(config.storage), "study", config.name):
        parent = tracker.open_parent(
            study.user_attrs.get(PARENT_RUN_ATTR),
            config.name,
            _parent_tags(config, splits),
            config.source,
            effective_text(config),
            _study_note(config, splits),
        )
        study.set_user_attr(PARENT_RUN_ATTR, parent)
    _close_dead_trials(study, tracker)
    rows = grid.table(config) if grid.is_exhaustive(config) else None
    n_trials = config.n_trials if rows is None else _enqueue_rows(study, config, rows)
    _plan(study, n_trials)
    table = rows is not None
    status = "FAILED"
    try:
        with long_lived_frozen(tuned):  # no garbage collection looks at the setup again
            if config.workers > 1 or config.gpus is not None:  # (one worker on a chosen GPU)
                from hptune.workers import run_workers

                best = run_workers(config, study, n_trials, table)
            else:
                progress = Progress(
                    n_trials, config.train.epochs, metric=config.objectives[0].metric
                )
                objective = Objective(config, splits, device, tracker, parent, progress)
                best = run_trials(study, objective, n_trials, table)
            tracker.flush()  # every trial's run stored before the study's summary is written
            registered = _finish(study, config, splits, tracker, parent, best)
        status = "FINISHED"
    except KeyboardInterrupt as stop:
        status = "KILLED"
        if isinstance(stop, StudyStopped):  # (not a stop during set-up or the final logging)
            with _after_a_stop():
                tracker.flush()
                _finish(study, config, splits, tracker, parent, stop.best, stopped=True)
        raise
    finally:
        tracker.close_parent(parent, status)
    result = StudyResult(
        study,
        storage_url(config.storage),
        tracker.tracking_uri,
        config.experiment_name,
        registered_model=registered,
        experiment_id=tracker.experiment_id,
        objective=config.objectives[0].metric,
        runs_view=view,
    )
    if rows is not None:
        keys = {grid.row_key(row) for row in rows}
        done, _ = grid.table_status(study)
        result = dataclasses.replace(
            result, configurations=len(keys), configurations_run=len(keys & done)
        )
    return result


def _check_importable(config: StudyConfig) -> None:
    """Worker processes import the factory and the loader by name: callables given from
    Python cannot reach them."""
    if config.workers == 1:
        return
    given = {"model.factory": config.model.factory, "data.loader": config.data.loader}
    problems = [
        f"{config.source or '<study>'}: {key}: workers > 1 import it in each worker, so it must "
        f"be a 'module:callable' string, not the callable {spec_text(value)}"
        for key, value in given.items()
        if value is not None and not isinstance(value, str)
    ]
    if problems:
        raise ConfigError(problems)


def _parent_tags(config: StudyConfig, splits: data.Splits) -> dict[str, str]:
    """What the study's parent run says of how it runs: sampler, pruner, validation, the data
    sizes, the overrides it was started with, storage, hptune's version and the study file's
    git commit (when in a repository)."""
    commit = _git_commit(config)
    return {
        "hptune.train_size": str(len(splits.train_y)),
        "hptune.val_size": str(len(splits.val_y)),
        "hptune.test_size": str(len(splits.test_y)),
        "hptune.overrides": redact(" ".join(config.overrides)) or "none",
        "hptune.sampler": grid.table_kind(config) or config.sampler.name,
        "hptune.pruner": config.pruner.name,
        "hptune.validation": (
            "test set"
            if config.data.validation == "test"
            else f"split {config.data.val_fraction:g} of the training set"
        ),
        "hptune.storage": redact(storage_url(config.storage)),
        # false: the data were not checked against the published data set (data.verify: false)
        "hptune.data_verified": str(datacache.verification_enabled(config.data.verify)).lower(),
        "hptune.version": _version(),
        **({"mlflow.source.git.commit": commit} if commit else {}),
    }


def _study_note(config: StudyConfig, splits: data.Splits, best: str | None = None) -> str:
    """The study run's description: what it searches, on which data, and its best trial."""
    objective = f"{config.objectives[0].resolved_direction} {config.objectives[0].metric}"
    kind = grid.table_kind(config)
    how = f"sampler {config.sampler.name}" if kind is None else f"{kind}, each row run once"
    sizes = {"training": len(splits.train_x)}
    if not splits.val_is_test:
        sizes["validation"] = len(splits.val_x)
    sizes["test" + (" (also validation)" if splits.val_is_test else "")] = len(splits.test_x)
    how += f", pruner {config.pruner.name}, {config.train.epochs} epochs per trial"
    return notes.study_note(config.name, config.description, objective, how, sizes, best)


def _plan(study: optuna.Study, n_trials: int | None) -> None:
    """Record how many trials the study holds when this run ends (None: until a timeout), for
    ``hptune status``'s estimate of the time left."""
    started = sum(
        t.state != optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False)
    )
    study.set_user_attr(PLANNED_ATTR, None if n_trials is None else started + n_trials)


def _enqueue_rows(study: optuna.Study, config: StudyConfig, rows: list[dict[str, Choice]]) -> int:
    """Queue a table's rows not run yet; how many trials to run: all of them, or fewer with an
    explicit ``n_trials``."""
    if config.batch_trials > 1:  # rows that can share a stacked model, side by side
        from hptune.batchrun import group_rows

        rows = group_rows(config, rows)
    with enqueue_lock(storage_url(config.storage), config.name):
        queued = grid.enqueue_table(study, rows)
    explicit = grid.explicit_n_trials(config)
    return queued if explicit is None else min(explicit, queued)


def run_trials(
    study: optuna.Study, objective: Objective, n_trials: int | None, table: bool
) -> BestModel | None:
    """Run up to ``n_trials`` trials (None: until the timeout) in this process; a table's
    trials stop when its queue is empty. Returns the best complete trial trained here."""
    config = objective.config
    try:
        # A stop request raises only inside a trial's training (hptune.interrupt.held).
        with interrupt.held():
            if n_trials != 0 and config.batch_trials > 1:
                from hptune.batchrun import optimize_batched

                limit = sys.maxsize if n_trials is None else n_trials
                optimize_batched(
                    study, objective, limit, config.timeout, config.batch_trials, table
                )
            elif n_trials != 0:
                study.optimize(
                    objective,
                    n_trials=n_trials,
                    timeout=config.timeout,
                    catch=TRIAL_FAILURES,
                    callbacks=[grid.stop_when_queue_empty] if table else [],
                )
        interrupt.check()  # one that came while the last trial's outcome was stored
    except KeyboardInterrupt as stop:
        raise StudyStopped(objective.best) from stop
    finally:
        objective.progress.close()
    return objective.best


def work(config: StudyConfig, n_trials: int | None, table: bool, worker: int) -> BestModel | None:
    """A worker process's share of a study that ``optimize`` opened (``hptune.workers``): its
    trials under the study's parent run, which the main process ends."""
    _prepare_process()
    device = resolve_device(config.train.device)
    splits = data.load(config.data, device, config.source)
    study = open_study(config, worker)
    tracker = StudyTracker(config.experiment_name, resolve_tracking_uri(config.tracking.uri))
    parent = study.user_attrs[PARENT_RUN_ATTR]
    progress = Progress(n_trials, config.train.epochs, enabled=False)
    objective = Objective(config, splits, device, tracker, parent, progress, worker)
    try:
        with long_lived_frozen(fastpaths.enabled(config.train.fast_paths)):
            return run_trials(study, objective, n_trials, table)
    except StudyStopped:
        raise
    except KeyboardInterrupt as stop:  # one right after the trials: their best still goes on
        raise StudyStopped(objective.best) from stop
    finally:
        with interrupt.held():  # every trial's run stored before the main process summarizes
            tracker.close()


def end_study_run(config: StudyConfig, status: str) -> None:
    """End the study's parent MLflow run: what ``optimize`` does last, done by a worker whose
    main process was killed (every worker may; ending an ended run again changes nothing)."""
    study = optuna.load_study(
        study_name=config.name, storage=open_storage(storage_url(config.storage))
    )
    tracker = StudyTracker(config.experiment_name, resolve_tracking_uri(config.tracking.uri))
    tracker.close_parent(study.user_attrs[PARENT_RUN_ATTR], status)


def _prepare_process() -> None:
    """What a process that runs trials (``optimize``, a worker's ``work``) sets first: quiet
    library logs (trial outcomes are shown by the progress bars and the summary), and denormals
    flushed before torch's first parallel operation, loading the data, starts its threads."""
    optuna.logging.set_verbosity(logging.WARNING)
    for handler in logging.getLogger("optuna").handlers:  # (Optuna's own, on its root logger)
        if not any(isinstance(f, _NoTracebackForStops) for f in handler.filters):
            handler.addFilter(_NoTracebackForStops())
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    flush_denormals()


class _NoTracebackForStops(logging.Filter):
    """Optuna logs every failed trial with its traceback. For a stop (Ctrl-C, SIGTERM) and a
    recorded failure (divergence, out of memory) the one-line reason is the news: a traceback
    would look like a crash. Other errors keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (KeyboardInterrupt, *TRIAL_FAILURES)):
            record.exc_info, record.exc_text = None, None
        return True


def _close_dead_trials(study: optuna.Study, tracker: StudyTracker) -> None:
    """Fail trials whose process died (stale heartbeat; Optuna queues them again) and end
    their MLflow runs, so that no run stays RUNNING after its process is gone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id is not None:
            tracker.close_orphan(run_id, "the process running this trial died")


@contextmanager
def _after_a_stop() -> Iterator[None]:
    """What runs after Ctrl-C or SIGTERM: the end of the run (``_finish``), so that a study
    stopped after hours keeps its best model, which a later run would log only if it trained a
    new best. A second Ctrl-C skips it; an error in it is printed, and the stop goes on."""
    try:
        yield
    except KeyboardInterrupt:
        print("the study's best model was not logged (stopped again)", file=sys.stderr)
    except Exception as error:
        print(f"the study's best model was not logged: {error}", file=sys.stderr)


def _input_contract(config: StudyConfig, splits: data.Splits) -> dict[str, str]:
    """What the registered model takes and returns, written on its version: the study's data
    decide it (shape, normalization, class names)."""
    normalize: str = config.data.normalize
    if config.data.loader is not None and not config.data.scales_floats:
        normalize += " (uint8 images; float images as the loader gives them)"
    return {
        "hptune.input_shape": "(N, " + ", ".join(map(str, splits.input_shape)) + ")",
        "hptune.input_dtype": "float32",
        "hptune.normalize": normalize,
        "hptune.classes": json.dumps(splits.classes),
    }


def _finish(
    study: optuna.Study,
    config: StudyConfig,
    splits: data.Splits,
    tracker: StudyTracker,
    parent: str,
    best: BestModel | None,
    stopped: bool = False,
) -> str | None:
    """Record the study's best on the parent run; if this process trained it, log and register
    its model and evaluate it once on the held-out test set. Returns the registered name (None:
    no model logged here)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(config.objectives) > 1 and complete:
        front = {t.number: t.user_attrs[RUN_ID_ATTR] for t in pareto.front(study)}
        tracker.log_pareto(parent, front, pareto.rule_text(config))
    best_trial = pareto.select(study, config)
    if best_trial is None:
        return None  # no complete trial (or none within the select rule's budget)
    run_id = best_trial.user_attrs[RUN_ID_ATTR]
    best_line = notes.best_line(
        best_trial.number,
        config.objectives[0].metric,
        best_trial.values[0],
        tracker.run_link(run_id),
    )
    described = _study_note(config, splits, best_line)
    tracker.log_best(
        parent, best_trial.values[0], best_trial.params, run_id, len(complete), described
    )
    if best is None or best.number != best_trial.number:
        return None  # logged by the process that trained it
    if stopped:
        note = f"stopping: logging trial {best.number}'s model, the study's best (Ctrl-C: skip)"
        print(note, file=sys.stderr, flush=True)
    example = splits.test_x[:2].cpu().numpy()  # batch of 2: export keeps the batch dim dynamic
    contract = notes.model_note(
        splits.input_shape, config.data.normalize, splits.classes, config.name, best.number
    )
    registered = config.tracking.registered_model or config.name
    tracker.log_model(
        run_id, best.model, example, registered, _input_contract(config, splits), contract
    )
    model = best.model.to(splits.test_x.device)
    _, predictions = evaluate(model, splits.test_x, splits.test_y)
    labels, predicted = splits.test_y.cpu().numpy(), predictions.cpu().numpy()
    test = classification_details(labels, predicted, splits.classes)
    shown = gallery_indices(labels, predicted, GALLERY_SIZE)
    images = splits.test_x[shown.tolist()].cpu().numpy()
    gallery = gallery_figure(images, labels[shown], predicted[shown], splits.classes)
    tracker.log_test_evaluation(parent, test, gallery)
    return registered
