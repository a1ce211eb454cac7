"""Text for the terminal: a study file's description and a finished run's summary."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from hptune import grid, space
from hptune.config import StudyConfig
from hptune.redact import redact

if TYPE_CHECKING:
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
        f"data: {config.data.dataset}, normalize {config.data.normalize}, validation "
        + (
            "on the test set"
            if config.data.validation == "test"
            else f"split {config.data.val_fraction:g} (seed {config.data.seed})"
        )
        + (f", train_subset {config.data.train_subset}" if config.data.train_subset else "")
        + (f", test_subset {config.data.test_subset}" if config.data.test_subset else ""),
        "model: " + ("searched (family)" if "family" in grid.full_space(config) else model.family),
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
    if model.family == "mlp" and not searched & {"width", "depth", "hidden_sizes"}:
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
    from optuna.trial import TrialState

    trials = result.study.get_trials(deepcopy=False)
    states = {state: 0 for state in TrialState}
    for trial in trials:
        states[trial.state] += 1
    counts = [
        f"{states[TrialState.COMPLETE]} complete",
        f"{states[TrialState.PRUNED]} pruned",
        f"{states[TrialState.FAIL]} failed",
    ]
    if states[TrialState.WAITING]:  # a table's rows not run yet, stopped trials queued again
        counts.append(f"{states[TrialState.WAITING]} queued")
    if states[TrialState.RUNNING]:  # trained by other processes now
        counts.append(f"{states[TrialState.RUNNING]} running elsewhere")
    total = f"{len(trials)} trial{'' if len(trials) == 1 else 's'}"
    lines = [f"study {result.study.study_name}: {total} ({', '.join(counts)})"]
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
    # Terminals and CI logs are read by others: no passwords.
    lines.append(f"optuna storage: {redact(result.storage)}")
    lines.append(f"mlflow: experiment {result.experiment!r} in {redact(result.tracking_uri)}")
    lines.append(f"compare runs: {mlflow_ui_command(redact(result.tracking_uri))}")
    lines += next_commands(study_file, study_name, storage)
    return "\n".join(lines)


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


def mlflow_ui_command(tracking_uri: str) -> str:
    """The ``mlflow ui`` line that shows these runs."""
    default = f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    if tracking_uri == default:
        return "mlflow ui   (in this folder), then open http://127.0.0.1:5000"
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)}"
