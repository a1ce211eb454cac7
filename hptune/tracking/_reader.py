"""Reading a study's runs back from MLflow: for ``hptune export-report``, ``replay`` and the
CLI's look-up of a study by its experiment. It makes no new store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hptune.errors import HptuneError
from hptune.storage import sqlite_file
from hptune.tracking._store import check_tracking, open_client


@dataclass(frozen=True)
class RunRecord:
    """What a report needs of one MLflow run (params and tags as MLflow stores them: text)."""

    run_id: str
    name: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]


class StudyReader:
    """Reads a study's runs back from MLflow, for ``hptune export-report``."""

    def __init__(self, tracking_uri: str | None) -> None:
        check_tracking(tracking_uri)
        import mlflow

        found = sqlite_file(tracking_uri or mlflow.get_tracking_uri())
        if found is not None and not found.exists():  # (a report makes no new store)
            raise HptuneError(f"MLflow tracking store: there is no file {found}")
        self.client = open_client(tracking_uri)
        self.tracking_uri = self.client.tracking_uri

    def parent(self, experiment: str, study_name: str | None) -> RunRecord | None:
        """The study's parent run in ``experiment`` (the only one, when no name is given)."""
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            return None
        query = "tags.`hptune.role` = 'study'"
        if study_name is not None:
            query += f" and tags.`hptune.study` = '{study_name}'"
        runs = self.client.search_runs([found.experiment_id], query, max_results=2)
        return _record(runs[0]) if len(runs) == 1 else None

    def trials(self, parent: RunRecord) -> list[RunRecord]:
        """Every trial run under ``parent``."""
        experiment_id = self.client.get_run(parent.run_id).info.experiment_id
        query = f"tags.`mlflow.parentRunId` = '{parent.run_id}'"
        return [_record(run) for run in self.client.search_runs([experiment_id], query)]

    def run(self, run_id: str) -> RunRecord:
        """One run, by its id."""
        return _record(self.client.get_run(run_id))

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """A metric's (step, value) pairs, in step order."""
        points = self.client.get_metric_history(run_id, key)
        return sorted((point.step, point.value) for point in points)

    def artifact(self, run_id: str, path: str) -> bytes | None:
        """An artifact's bytes, or None when the run has no such artifact."""
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            try:
                local = self.client.download_artifacts(run_id, path, folder)
            except Exception:  # MLflow raises several kinds for a missing artifact
                return None
            return Path(local).read_bytes()

    def log_folder(self, run_id: str, folder: Path, artifact_path: str) -> None:
        """Upload a folder (the report) as artifacts of ``run_id``."""
        self.client.log_artifacts(run_id, str(folder), artifact_path)


def _record(run: Any) -> RunRecord:
    return RunRecord(
        run_id=run.info.run_id,
        name=run.info.run_name or "",
        status=run.info.status,
        params=dict(run.data.params),
        tags=dict(run.data.tags),
        metrics=dict(run.data.metrics),
    )
