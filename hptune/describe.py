"""Text for the terminal: a study file's description and a finished run's summary."""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hptune import grid, notes, space
from hptune.attrs import FAIL_REASON_ATTR, INTERRUPTED, STALE
from hptune.config import MODEL_SETTINGS, StudyConfig
from hptune.imports import resolve, signature_text, spec_text
from hptune.redact import redact

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from hptune.study import StudyResult


def describe_study(config: StudyConfig) -> str:
    """What ``hptune validate`` prints: the study, its fixed settings and its search space."""
    from hptune.pareto import rule_text
    from hptune.samplers import build_pruner, build_sampler

    build_sampler(config), build_pruner(config)  # their constructors check the options
    model, train = config.model, config.train
    lines = [
        f"study: {config.name}" + (f"  ({config.source})" if config.source else ""),
        "objective: "
        + ", ".join(f"{o.resolved_direction} {o.metric}" for o in config.objectives)
        + (f" (best: {rule_text(config)})" if len(config.objectives) > 1 else ""),
        (
            f"sampler: {grid.table_kind(config)}, every configuration enqueued in order   "
            if grid.is_exhaustive(config)
            else f"sampler: {config.sampler.name} (seed {config.sampler.seed})   "
        )
        + f"pruner: {config.pruner.name}",
        f"trials per run: {_trials_per_run(config)}"
        + (f", timeout {config.timeout:g} s" if config.timeout else "")
        + (f", {config.batch_trials} at a time" if config.batch_trials > 1 else ""),
        f"data: {config.data.source_name}"
        + (f" {config.data.params}" if config.data.params else "")
        + f", normalize {config.data.normalize}"
        + (
            " (uint8; float as given)"
            if config.data.loader and not config.data.scales_floats
            else ""
        )
        + ", validation "
        + (
            "on the test set"
            if config.data.validation == "test"
            else f"split {config.data.val_fraction:g} (seed {config.data.seed})"
        )
        + (f", train_subset {config.data.train_subset}" if config.data.train_subset else "")
        + (f", test_subset {config.data.test_subset}" if config.data.test_subset else "")
        + ("" if config.data.verify else ", not verified (a modified copy: data.verify false)"),
        "model: " + _model_line(config),
        f"train: epochs {train.epochs}, device {train.device}, seed {train.seed}"
        + ("" if train.seed_per_trial else " (same for every trial)"),
        "fixed:",
    ]
    searched = set(grid.full_space(config))
    fixed = {
        "activation": model.activation,
        "optimizer": train.optimizer,
        "lr": train.lr,
        "batch_size": train.batch_size,
        "scheduler": train.scheduler,
    }
    if model.factory is not None:
        fixed = {k: v for k, v in fixed.items() if k != "activation"}
        settings = MODEL_SETTINGS & model.model_fields_set
        fixed |= {name: getattr(model, name) for name in sorted(settings)} | model.params
    elif model.family == "mlp" and not searched & {"width", "depth", "hidden_sizes"}:
        fixed |= {"hidden_sizes": "-".join(map(str, model.layer_sizes)), "dropout": model.dropout}
    if model.family == "convnet":
        fixed |= {
            k: getattr(model, k) for k in ("conv_blocks", "filters", "dense_layers", "neurons")
        }
    lines += [f"  {k:<13}{v}" for k, v in fixed.items() if k not in searched]
    if config.configurations:
        lines.append("listed configurations:")
        lines += [
            "  - " + ", ".join(f"{k}={v}" for k, v in row.items()) for row in config.configurations
        ]
    lines.append("search space:" if config.search_space else "search space: (none)")
    lines += [f"  {name:<13}{space.describe(p)}" for name, p in config.search_space.items()]
    if grid.is_exhaustive(config):
        lines.append(f"configurations: {len(grid.table(config))}")
    return "\n".join(lines)


def _model_line(config: StudyConfig) -> str:
    """The family, or the factory's path and signature (``hptune validate`` imports it)."""
    model = config.model
    if model.factory is None:
        return "searched (family)" if "family" in grid.full_space(config) else model.family
    factory = resolve(model.factory, config.folder, "model.factory")
    return f"factory {spec_text(model.factory)}, {signature_text(factory)}"


def _trials_per_run(config: StudyConfig) -> str:
    if not grid.is_exhaustive(config):
        return str(config.n_trials)
    every = "every configuration not run yet"
    explicit = grid.explicit_n_trials(config)
    return every if explicit is None else f"{explicit} at most ({every})"


def summarize_result(
    result: StudyResult, study_file: Path, study_name: str | None, storage: str | None = None
) -> str:
    """The lines printed after ``hptune optimize``: best trial, where the runs are, what next
    (``study_name``, ``storage``: the ``--study-name`` and ``--storage`` given, if any)."""
    trials = result.study.get_trials(deepcopy=False)
    lines = [f"study {result.study.study_name}: {trial_counts(trials)}"]
    if result.configurations is not None:
        lines.append(f"configurations: {result.configurations_run} of {result.configurations} run")
    if result.completed and len(result.study.directions) > 1:
        from hptune.pareto import front

        numbers = ", ".join(str(trial.number) for trial in front(result.study))
        lines.append(f"pareto front: trials {numbers} (the report compares them)")
    elif result.completed:
        best = result.study.best_trial
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items()
        )
        lines.append(
            f"best: trial {best.number}, value {best.value:.4f}"
            + (f" ({params})" if params else "")
        )
    else:
        lines.append("best: no complete trial yet")
    if result.registered_model:
        lines.append(f"model: the best trial's, registered as {result.registered_model!r}")
    # Terminals and CI logs are read by others: no passwords.
    lines.append(f"optuna storage: {redact(result.storage)}")
    lines.append(f"mlflow: experiment {result.experiment!r} in {redact(result.tracking_uri)}")
    page = ""
    if result.experiment_id is not None:
        maximize = result.study.directions[0].name == "MAXIMIZE"
        study = result.study.study_name
        page = notes.runs_page(
            result.experiment_id, study, result.objective, maximize, result.runs_view
        )
    lines.append(f"compare runs: {mlflow_ui_command(redact(result.tracking_uri), page)}")
    lines += next_commands(study_file, study_name, storage)
    return "\n".join(lines)


def trial_counts(trials: Sequence[FrozenTrial]) -> str:
    """``"5 trials (2 complete, 1 pruned, 0 failed, 1 interrupted, 1 queued)"``: every trial in
    one state or another. A trial stopped before its end (Ctrl-C or SIGTERM: interrupted; its
    process killed: killed) is queued again, and not counted as failed, which is a result
    (it diverged, ran out of memory, raised)."""
    from optuna.trial import TrialState

    states = Counter(trial.state for trial in trials)
    reasons = Counter(
        trial.user_attrs.get(FAIL_REASON_ATTR) for trial in trials if trial.state == TrialState.FAIL
    )
    stopped = reasons[INTERRUPTED] + reasons[STALE]
    counts = [
        f"{states[TrialState.COMPLETE]} complete",
        f"{states[TrialState.PRUNED]} pruned",
        f"{states[TrialState.FAIL] - stopped} failed",
    ]
    if reasons[INTERRUPTED]:  # Ctrl-C, SIGTERM
        counts.append(f"{reasons[INTERRUPTED]} interrupted")
    if reasons[STALE]:  # its process was killed (kill -9, power off): failed by a later run
        counts.append(f"{reasons[STALE]} killed")
    if states[TrialState.WAITING]:  # a table's rows not run yet, stopped trials queued again
        counts.append(f"{states[TrialState.WAITING]} queued")
    if states[TrialState.RUNNING]:  # trained by other processes now
        counts.append(f"{states[TrialState.RUNNING]} running elsewhere")
    total = f"{len(trials)} trial{'' if len(trials) == 1 else 's'}"
    return f"{total} ({', '.join(counts)})"


def next_commands(study_file: Path, study_name: str | None, storage: str | None) -> list[str]:
    """The "continue" and "report" lines: the commands that reach this study again, with the
    ``--study-name`` and ``--storage`` it was run with (a password shown as ``***``)."""
    target = shlex.quote(str(study_file))
    where = f" --storage {shlex.quote(redact(storage))}" if storage else ""
    lines = [
        f"continue: hptune optimize {target}"
        + (f" --study-name {shlex.quote(study_name)}" if study_name else "")
        + where,
        f"report: hptune export-report {target}"
        + (f" --study {shlex.quote(study_name)}" if study_name else "")
        + where,
    ]
    if storage and redact(storage) != storage:
        lines.append("  (put the storage password back where these commands show ***)")
    return lines


def mlflow_ui_command(tracking_uri: str, page: str = "") -> str:
    """The ``mlflow ui`` line that shows these runs; ``page``: the address of the study's runs
    table within the UI (``notes.runs_page``)."""
    default = f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri.rstrip('/')}/{page}"
    command = "mlflow ui" + (
        "   (in this folder)"
        if tracking_uri == default
        else f" --backend-store-uri {shlex.quote(tracking_uri)}"
    )
    return f"{command}, then open http://127.0.0.1:5000/{page}"
