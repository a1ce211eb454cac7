"""MLflow tracking: the only module that imports mlflow.

One parent run per study, one child run per trial, created through ``MlflowClient`` (no fluent,
process-global active run) so that parallel workers can log at once. Metrics go in one batched
call per epoch with ``step=epoch``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

PARENT_RUN_ATTR = "hptune.mlflow_parent_run_id"  # kept in the Optuna study's user attributes


def resolve_tracking_uri(configured: str | None) -> str | None:
    """``MLFLOW_TRACKING_URI``, else the study file's URI, else None (MLflow's own default)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or None


class StudyTracker:
    """Runs of one study in one MLflow experiment."""

    def __init__(self, experiment: str, tracking_uri: str | None) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = self.client.tracking_uri
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            try:
                self.experiment_id = self.client.create_experiment(experiment)
            except Exception:  # another worker created it first
                found = self.client.get_experiment_by_name(experiment)
                if found is None:
                    raise
                self.experiment_id = found.experiment_id
        else:
            self.experiment_id = found.experiment_id

    def open_parent(
        self, run_id: str | None, study_name: str, tags: Mapping[str, str], source: Path | None
    ) -> str:
        """Reopen the study's parent run, or create it (with the study file as an artifact)."""
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=study_name,
            tags={"hptune.role": "study", "hptune.study": study_name, **tags},
        )
        if source is not None:
            self.client.log_artifact(run.info.run_id, str(source))
        return run.info.run_id

    def close_parent(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def close_orphan(self, run_id: str, reason: str) -> bool:
        """Mark a run left RUNNING by a dead process as FAILED; False if it had ended."""
        if self.client.get_run(run_id).info.status != "RUNNING":
            return False
        TrialRun(self.client, run_id).finish(
            "FAILED", {"hptune.state": "failed", "hptune.fail_reason": reason}
        )
        return True

    def start_trial(
        self, parent_run_id: str, study_name: str, number: int, params: Mapping[str, Any]
    ) -> TrialRun:
        """A child run for trial ``number`` holding every hyperparameter as a param."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number}",
            tags={
                "mlflow.parentRunId": parent_run_id,
                "hptune.role": "trial",
                "hptune.study": study_name,
                "hptune.trial": str(number),
            },
        )
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return TrialRun(self.client, run_id)


class TrialRun:
    """One trial's MLflow run."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """All of an epoch's metrics in one call, at ``step=epoch``."""
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, epoch) for k, v in metrics.items()]
        )

    def finish(self, status: str, tags: Mapping[str, str] | None = None) -> None:
        """End the run as FINISHED, KILLED (pruned, interrupted) or FAILED, with reason tags."""
        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(self.run_id, status=status)
