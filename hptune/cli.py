"""The ``hptune`` command: parses arguments, calls the library, formats the answer.

Library errors a user can fix (``HptuneError``) become one line per problem on stderr and exit
code 2, in one place (``_Group.invoke``); programming errors keep their tracebacks.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hptune import interrupt
from hptune.allocator import imports_frozen, own_process
from hptune.errors import HptuneError
from hptune.redact import redact

if TYPE_CHECKING:
    from hptune.config import StudyConfig

EXIT_USER_ERROR = 2
# MLflow output the command turns off (the environment may turn it on again); a program using
# hptune as a library keeps MLflow's defaults. With a tracking server, MLflow prints two "View
# run ... at" lines (and reads the run back) at every run's end, where the study's summary gives
# the server's URL once; a report downloads one file per artifact, where progress bars clutter.
MLFLOW_QUIET = {
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HptuneError as error:
            for problem in error.problems:  # (terminals and CI logs are read by others)
                click.echo(f"error: {redact(problem)}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            click.echo("interrupted; run the same command again to continue the study", err=True)
            ctx.exit(130)


study_file = click.argument("study_file", type=click.Path(path_type=Path))
overrides = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a study-file key, e.g. --set train.epochs=2 (repeatable).",
)


@click.group(cls=_Group)
@click.version_option(package_name="hptune")
def main() -> None:
    """Hyperparameter studies of PyTorch models with Optuna, tracked in MLflow."""
    own_process()  # the command's process: process-wide tuning may apply (hptune.allocator)
    for name, value in MLFLOW_QUIET.items():  # this process is hptune's own
        os.environ.setdefault(name, value)


@main.command()
@study_file
@overrides
def validate(study_file: Path, overrides: tuple[str, ...]) -> None:
    """Check a study file and print its search space, without training."""
    from hptune.describe import describe_study
    from hptune.studyfile import load_study_file

    config = load_study_file(study_file, overrides)
    _warn(config)
    click.echo(describe_study(config))


@main.command()
@study_file
@overrides
@click.option("--n-trials", type=click.IntRange(min=1), help="Trials to run in this invocation.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds to run.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Training device.")
@click.option("--storage", metavar="URL", help="Optuna storage URL (default: mlruns/optuna.db).")
@click.option("--study-name", metavar="NAME", help="Run under another study name.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Processes training trials side by side (CPU threads are split among them).",
)
@click.option(
    "--gpus",
    metavar="0,1,...",
    help="GPUs the workers are spread over, one each in turn (default: all visible).",
)
def optimize(
    study_file: Path,
    overrides: tuple[str, ...],
    n_trials: int | None,
    timeout: float | None,
    device: str | None,
    storage: str | None,
    study_name: str | None,
    workers: int | None,
    gpus: str | None,
) -> None:
    """Run (or continue) the study described by STUDY_FILE."""
    with imports_frozen():  # torch, optuna, mlflow: ~1 s less without collections
        from hptune.describe import summarize_result
        from hptune.study import optimize as run_study
        from hptune.studyfile import load_study_file

    # A scheduler's or `timeout`'s SIGTERM stops the study as Ctrl-C does: the running trial is
    # queued again and its MLflow run closed, instead of waiting for its heartbeat to go stale;
    # both signals also raise again at the next epoch if their first interrupt was lost.
    interrupt.install(signal.SIGTERM, signal.SIGINT)
    flags = {
        "n_trials": n_trials,
        "timeout": timeout,
        "train.device": device,
        "storage": storage,
        "workers": workers,
        "gpus": f"[{gpus}]" if gpus else None,
    }
    extra = [f"{key}={value}" for key, value in flags.items() if value is not None]
    config = load_study_file(study_file, [*overrides, *extra], study_name=study_name)
    _warn(config)
    result = run_study(config)
    click.echo(summarize_result(result, study_file, study_name, storage))


def _warn(config: StudyConfig) -> None:
    """What the study file says that will not happen as written, as ``warning:`` lines."""
    from hptune.studyfile import range_warnings

    for line in range_warnings(config):
        click.echo(f"warning: {line}", err=True)


def _formats(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from hptune.report import FORMATS

    chosen = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise click.BadParameter(f"choose from {', '.join(FORMATS)} (comma-separated)")
    return chosen


@main.command("export-report")
@click.argument("study_file", type=click.Path(path_type=Path), required=False)
@click.option(
    "--study", "study_name", metavar="NAME", help="The study's name (default: the file's)."
)
@click.option("--experiment", metavar="NAME", help="MLflow experiment (default: the study's).")
@click.option("--storage", metavar="URL", help="Optuna storage URL (default: the file's).")
@click.option("--out", type=click.Path(path_type=Path), help="Folder (default: reports/NAME).")
@click.option("--format", "formats", default="html,md,csv", callback=_formats, help="html,md,csv")
def export_report(
    study_file: Path | None,
    study_name: str | None,
    experiment: str | None,
    storage: str | None,
    out: Path | None,
    formats: tuple[str, ...],
) -> None:
    """Write a study's report (HTML, Markdown, CSV) from its Optuna storage and MLflow runs."""
    with imports_frozen():
        from hptune.report import export_report as export
        from hptune.report import safe_name
        from hptune.storage import storage_url
        from hptune.tracking import resolve_tracking_uri

    if study_file is not None:
        from hptune.studyfile import load_study_file

        config = load_study_file(study_file, study_name=study_name)
        study_name = config.name
        storage = storage or config.storage
        experiment = experiment or config.experiment_name
        tracking_uri = resolve_tracking_uri(config.tracking.uri)
    else:
        tracking_uri = resolve_tracking_uri(None)
        if study_name is None and experiment is None:
            raise HptuneError("name the study: a STUDY_FILE, --study NAME or --experiment NAME")
        if study_name is None:
            study_name = _study_of_experiment(tracking_uri, str(experiment))
    files = export(
        study_name,
        storage_url(storage),
        tracking_uri,
        experiment or study_name,
        out or Path("reports") / safe_name(study_name),  # (a name from a shared store)
        formats,
    )
    for path in files.files:
        if path.suffix in (".html", ".md"):
            click.echo(f"report: {path}")
    click.echo(f"tables: {', '.join(p.name for p in files.files if p.suffix == '.csv') or 'none'}")


def _study_of_experiment(tracking_uri: str | None, experiment: str) -> str:
    from hptune.tracking import StudyReader

    parent = StudyReader(tracking_uri).parent(experiment, None)
    if parent is None:
        raise HptuneError(
            f"MLflow experiment {experiment!r} has no single hptune study; use --study NAME"
        )
    return parent.tags["hptune.study"]


@main.command()
def schema() -> None:
    """Print the study file's JSON Schema (the repository keeps it as schema/study.schema.json)."""
    from hptune.schema import schema_text

    click.echo(schema_text(), nl=False)


def _study_and_storage(
    study_file: Path | None, study_name: str | None, storage: str | None
) -> tuple[str, str]:
    """The study's name and storage URL, from a study file or ``--study NAME``."""
    from hptune.storage import storage_url

    if study_file is not None:
        from hptune.studyfile import load_study_file

        config = load_study_file(study_file, study_name=study_name)
        return config.name, storage_url(storage or config.storage)
    if study_name is None:
        raise HptuneError("name the study: a STUDY_FILE or --study NAME")
    return study_name, storage_url(storage)


@main.command()
@click.argument("study_file", type=click.Path(path_type=Path), required=False)
@click.option(
    "--study", "study_name", metavar="NAME", help="The study's name (default: the file's)."
)
@click.option("--storage", metavar="URL", help="Optuna storage URL (default: the file's).")
@click.option("--watch", is_flag=True, help="Refresh until Ctrl-C.")
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=5.0, help="Seconds between refreshes."
)
def status(
    study_file: Path | None,
    study_name: str | None,
    storage: str | None,
    watch: bool,
    interval: float,
) -> None:
    """What a study is doing: trials by state, running trials, best so far, time to finish."""
    import time

    with imports_frozen():
        from hptune.status import format_status, read_status
        from hptune.storage import load_existing_study

    name, url = _study_and_storage(study_file, study_name, storage)
    study = load_existing_study(name, url)
    if not watch:
        click.echo(format_status(read_status(study)))
        return
    try:
        while True:
            text = format_status(read_status(study))
            click.clear()
            click.echo(f"{time.strftime('%H:%M:%S')} (every {interval:g} s; Ctrl-C stops)\n{text}")
            time.sleep(interval)
    except KeyboardInterrupt:
        return  # how a watch ends: nothing was interrupted


@main.command()
@study_file
@click.option("--trial", "number", type=click.IntRange(min=0), required=True, help="Its number.")
@click.option("--storage", metavar="URL", help="Optuna storage URL (default: the file's).")
@click.option("--study-name", metavar="NAME", help="A study run from this file under this name.")
def replay(study_file: Path, number: int, storage: str | None, study_name: str | None) -> None:
    """Train trial N again from its stored parameters and seed; compare its epochs."""
    with imports_frozen():
        from hptune.replay import format_replay, replay_trial
        from hptune.studyfile import load_study_file

    extra = [f"storage={storage}"] if storage else []
    config = load_study_file(study_file, extra, study_name=study_name)
    click.echo(format_replay(replay_trial(config, number)))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
