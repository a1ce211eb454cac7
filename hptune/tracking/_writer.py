"""Writing a study's runs: one parent run per study, one child run per trial.

Runs are created through ``MlflowClient`` (no fluent, process-global active run) so that
parallel workers can log at once. Metrics go in one batched call per epoch with ``step=epoch``.
The experiment, the runs and the registered model version carry the descriptions and names of
``hptune.notes``, which MLflow's UI shows first.

A trial's writes after its run is created (params, epochs, outcome with the confusion-matrix
figure, end status) go through one background thread, in order, so that training does not wait
on the database or on matplotlib. ``StudyTracker.flush`` waits for them; a failed write is
raised at the next write or at the flush.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from hptune import notes
from hptune.environment import restore_environment
from hptune.plots import confusion_matrix_png
from hptune.redact import redact_study_file
from hptune.storage import database_lock, use_wal
from hptune.tracking._store import open_client

PARENT_RUN_ATTR = "hptune.mlflow_parent_run_id"  # kept in the Optuna study's user attributes
NOTE = "mlflow.note.content"  # the description MLflow's UI shows for a run or an experiment
EFFECTIVE_STUDY_FILE = "effective_study.yaml"  # the parent run's study file after overrides


class StudyTracker:
    """Runs of one study in one MLflow experiment."""

    def __init__(self, experiment: str, tracking_uri: str | None) -> None:
        import mlflow

        use_wal(tracking_uri or mlflow.get_tracking_uri())  # before the store connects
        self.client = open_client(tracking_uri)
        self.tracking_uri = self.client.tracking_uri
        self.writer = Writer()
        with database_lock(self.tracking_uri, "setup", experiment):  # one creates it
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (
                self.client.create_experiment(experiment) if found is None else found.experiment_id
            )

    def describe_experiment(self, description: str) -> None:
        """The experiment's description (the study's), and its kind: model training, so that
        MLflow's UI shows its runs rather than its GenAI pages."""
        self.client.set_experiment_tag(self.experiment_id, NOTE, description)
        self.client.set_experiment_tag(
            self.experiment_id, "mlflow.experimentKind", "custom_model_development"
        )

    def run_link(self, run_id: str) -> str:
        """A run's page in MLflow's UI, relative to the UI's address (for descriptions)."""
        page = f"#/experiments/{self.experiment_id}/runs/{run_id}"
        return page + "?workflowType=machine_learning"  # (MLflow 3 opens in GenAI mode)

    def open_parent(
        self,
        run_id: str | None,
        study_name: str,
        tags: Mapping[str, str],
        source: Path | None,
        effective: str | None = None,
        note: str = "",
    ) -> str:
        """Reopen the study's parent run, or create it (with the study file and ``effective``,
        the file as run after overrides, as artifacts); ``note``: its description."""
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            if note:
                self.client.set_tag(run_id, NOTE, note)
            return run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=study_name,
            tags={"hptune.role": "study", "hptune.study": study_name, **tags}
            | ({NOTE: note} if note else {}),
        )
        if source is not None:  # (shared with whoever reads the runs: no passwords)
            text = redact_study_file(source.read_text())
            self.client.log_text(run.info.run_id, text, source.name)
        if effective is not None:
            text = redact_study_file(effective)
            self.client.log_text(run.info.run_id, text, EFFECTIVE_STUDY_FILE)
        return run.info.run_id

    def close_parent(self, run_id: str, status: str = "FINISHED") -> None:
        """End the study's parent run, after every queued trial write (the writer stops)."""
        try:
            self.close()
        except Exception:
            status = "FAILED"  # a trial's write failed: the study's record is incomplete
            raise
        finally:
            self.client.set_terminated(run_id, status=status)

    def close(self) -> None:
        """Store every queued trial write and stop the writer; raise the first that failed."""
        try:
            self.flush()
        finally:
            self.writer.pool.shutdown(wait=True)

    def flush(self) -> None:
        """Wait until every queued trial write is stored; raise the first that failed."""
        self.writer.flush()

    def close_orphan(self, run_id: str, reason: str) -> bool:
        """Mark a run left RUNNING by a dead process as FAILED; False if it had ended."""
        run = self.client.get_run(run_id)
        if run.info.status != "RUNNING":
            return False
        tags = {"hptune.state": "failed", "hptune.fail_reason": reason}
        if "hptune.trial" in run.data.tags:  # (a study's run keeps its name)
            tags["mlflow.runName"] = notes.trial_run_name(
                int(run.data.tags["hptune.trial"]), "failed"
            )
        TrialRun(self.client, run_id, None).finish("FAILED", tags)
        return True

    def log_best(
        self,
        parent_run_id: str,
        value: float,
        params: Mapping[str, Any],
        run_id: str,
        step: int,
        note: str = "",
    ) -> None:
        """The study's best so far on its parent run: metric, params (as tags), its run id, and
        the run's description (``note``) that names it."""
        tags = [RunTag("best_trial_run_id", run_id)] + ([RunTag(NOTE, note)] if note else [])
        tags += [RunTag(f"best_params.{k}", notes.format_value(v)) for k, v in params.items()]
        metric = Metric("best_value", value, int(time.time() * 1000), step)
        self.client.log_batch(parent_run_id, metrics=[metric], tags=tags)

    def log_pareto(self, parent_run_id: str, front: Mapping[int, str], rule: str) -> None:
        """A multi-objective study's Pareto-optimal trials (number -> run id) and the rule
        that chose its best, as tags of its parent run."""
        tags = {
            "hptune.pareto_trials": ",".join(map(str, sorted(front))),
            "hptune.pareto_run_ids": ",".join(front[number] for number in sorted(front)),
            "hptune.select": rule,
        }
        self.client.log_batch(parent_run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_model(
        self,
        run_id: str,
        model: Any,
        input_example: Any,
        registered_name: str,
        version_tags: Mapping[str, str] | None = None,
        note: str = "",
    ) -> str:
        """Log a CPU, eval-mode torch model on ``run_id`` and register it, with
        ``version_tags`` on the registered version and ``note`` (its input contract) as the
        version's description; return its URI."""
        import mlflow
        import mlflow.pytorch
        import torch

        # log_model is fluent-only: point the global URI at this store, and put it back after.
        # The environment too: set_tracking_uri writes MLFLOW_TRACKING_URI into it, and
        # torch.export TORCHINDUCTOR_CACHE_DIR; the process may be a library caller's.
        environment = dict(os.environ)
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            with mlflow.start_run(run_id=run_id), _without_registry_chatter():
                # In NCHW whatever layout it trained in (channels-last: CUDA, CPU bf16): what
                # users expect, and torch.export's archive warns on channels-last weights.
                model = model.cpu().eval().to(memory_format=torch.contiguous_format)
                info = mlflow.pytorch.log_model(
                    model,
                    name="model",
                    input_example=input_example,
                    # Naming the requirement skips MLflow's ~10 s inference of it.
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                    registered_model_name=registered_name,
                )
        finally:
            # As before: no process-wide URI (which would outlive a later change of the
            # environment's), and the environment as it was.
            mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
            restore_environment(environment)
        version = info.registered_model_version
        for key, value in (version_tags or {}).items():
            if version is not None:
                self.client.set_model_version_tag(registered_name, str(version), key, value)
        if note and version is not None:
            self.client.update_model_version(registered_name, str(version), description=note)
        return str(info.model_uri)

    def log_test_evaluation(
        self, parent_run_id: str, test: Mapping[str, Any], gallery: Figure
    ) -> None:
        """The best model's one evaluation on the held-out test set, on the parent run."""
        now = int(time.time() * 1000)
        keys = ("accuracy", "f1_macro", "precision_macro", "recall_macro")
        metrics = [Metric(f"test/{k}", test[k], now, 0) for k in keys]
        self.client.log_batch(parent_run_id, metrics=metrics)
        log_classification(self.client, parent_run_id, test, "test_", "test set")
        self.client.log_figure(parent_run_id, gallery, "test_gallery.png")

    def start_trial(
        self,
        parent_run_id: str,
        study_name: str,
        number: int,
        params: Mapping[str, Any],
        tags: Mapping[str, str] | None = None,
        run_name: str | None = None,
        *,
        searched: Mapping[str, Any] | None = None,
        objective: str = "",
    ) -> TrialRun:
        """A child run for trial ``number`` (named after it unless ``run_name`` is given)
        holding every hyperparameter as a param; its description will give the ``searched``
        ones and the ``objective`` metric's outcome."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name or notes.trial_run_name(number, "running"),
            tags={
                "mlflow.parentRunId": parent_run_id,
                "hptune.role": "trial",
                "hptune.study": study_name,
                "hptune.trial": str(number),
                NOTE: notes.trial_note(number, searched or {}, "running"),
                **(tags or {}),
            },
        )
        trial_run = TrialRun(self.client, run.info.run_id, self.writer)
        trial_run.about = (number, dict(searched or {}), objective)
        trial_run.renamed = run_name is None
        trial_run.log_params(params)  # by the writer: the run's id is all training waits for
        return trial_run


# What MLflow prints on stderr when it registers a model: it came before the study's summary.
_REGISTRY_CHATTER = ("Successfully registered model ", "Created version ", "Registered model ")


@contextlib.contextmanager
def _without_registry_chatter() -> Iterator[None]:
    """Hold what MLflow writes to stderr in this block, and write it back without the lines
    announcing the registration (the summary names the registered model)."""
    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            yield
    finally:
        kept = [
            line
            for line in held.getvalue().splitlines(keepends=True)
            if not line.startswith(_REGISTRY_CHATTER)
        ]
        sys.stderr.write("".join(kept))


class Writer:
    """One background thread running queued calls in order; errors come back to the caller."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hptune-mlflow")
        self.pending: deque[Future[object]] = deque()

    def submit(self, call: Callable[..., object], *args: Any) -> None:
        while self.pending and self.pending[0].done():
            self.pending.popleft().result()  # raises what a finished write raised
        self.pending.append(self.pool.submit(call, *args))

    def flush(self) -> None:
        while self.pending:
            self.pending.popleft().result()


class TrialRun:
    """One trial's MLflow run; writes go through ``writer`` (None: written at once)."""

    def __init__(self, client: MlflowClient, run_id: str, writer: Writer | None) -> None:
        self.client = client
        self.run_id = run_id
        self.writer = writer
        # For the run's name and description at its end: trial number, searched parameters and
        # objective metric (None: a run reopened to be closed, which keeps its own), and the
        # last epoch's metrics.
        self.about: tuple[int, dict[str, Any], str] | None = None
        self.renamed = True  # its name follows its state (``trial-N (pruned)``)
        self.last: tuple[int, Mapping[str, float]] = (0, {})
        self.end_tags: dict[str, str] = {}  # written by ``finish``

    def _write(self, call: Callable[..., object], *args: Any) -> None:
        if self.writer is None:
            call(*args)
        else:
            self.writer.submit(call, *args)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Every hyperparameter, as MLflow params (text, as written: ``notes.format_value``)."""
        batch = [Param(k, notes.format_value(v)) for k, v in params.items()]
        self._write(lambda: self.client.log_batch(self.run_id, params=batch))

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """All of an epoch's metrics in one call, at ``step=epoch``."""
        now = int(time.time() * 1000)
        self.last = (epoch, metrics)
        batch = [Metric(k, float(v), now, epoch) for k, v in metrics.items()]
        self._write(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Per-trial metrics (``model/params``, ...), measured once, at step 0 (not an epoch:
        the run's description still counts the epochs logged by ``log_epoch``)."""
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        self._write(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def log_outcome(
        self,
        summary: Mapping[str, float],
        validation: Callable[[], Mapping[str, Any]],
        history: Sequence[tuple[int, Mapping[str, float]]],
    ) -> None:
        """A complete trial's summary numbers, confusion matrix, per-class scores (from
        ``validation()``, called where the write runs) and log."""
        now = int(time.time() * 1000)
        metrics = [Metric(f"summary/{k}", v, now, 0) for k, v in summary.items()]
        log = {"summary": dict(summary), "epochs": [{"epoch": e, **m} for e, m in history]}

        def write() -> None:
            self.client.log_batch(self.run_id, metrics=metrics)
            log_classification(self.client, self.run_id, validation(), "", "validation")
            self.client.log_dict(self.run_id, log, "training_log.json")

        self._write(write)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags written with the run's end (``finish``), in the same write (e.g. the fast
        paths its training used)."""
        self.end_tags.update(tags)

    def finish(self, status: str, tags: Mapping[str, str] | None = None) -> None:
        """End the run as FINISHED, KILLED (pruned, interrupted) or FAILED, with reason tags;
        its name and description say which (MLflow marks KILLED and FAILED runs alike)."""
        every = {**self.end_tags, **(tags or {})}
        if self.about is not None:
            number, searched, objective = self.about
            epochs, last = self.last
            outcome = notes.trial_outcome(every, objective, last, epochs)
            every[NOTE] = notes.trial_note(number, searched, outcome)
            if self.renamed:  # (a run named by its caller, e.g. a replay, keeps its name)
                every["mlflow.runName"] = notes.trial_run_name(
                    number, every.get("hptune.state", "")
                )
        run_tags = [RunTag(k, v) for k, v in every.items()]

        def write() -> None:
            if run_tags:
                self.client.log_batch(self.run_id, tags=run_tags)
            self.client.set_terminated(self.run_id, status=status)

        self._write(write)


def log_classification(
    client: MlflowClient, run_id: str, details: Mapping[str, Any], prefix: str, label: str
) -> None:
    """``{prefix}confusion_matrix.json/.png`` and ``{prefix}per_class.json`` on a run."""
    classes, matrix = details["classes"], details["confusion_matrix"]
    raw = {"classes": classes, "matrix": matrix}
    client.log_dict(run_id, raw, f"{prefix}confusion_matrix.json")
    client.log_dict(run_id, details["per_class"], f"{prefix}per_class.json")
    png = confusion_matrix_png(matrix, classes, f"Confusion matrix ({label})")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, f"{prefix}confusion_matrix.png")
        path.write_bytes(png)
        client.log_artifact(run_id, str(path))
