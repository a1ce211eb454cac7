"""Names hptune stores on Optuna studies and trials; torch-free, so any module may read them."""

from __future__ import annotations

FINGERPRINT_ATTR = "hptune.fingerprint"  # study: the search space and objective it was run with
RETRY_OF_ATTR = "hptune.retry_of"  # trial: the interrupted trial whose params it repeats
RUN_ID_ATTR = "hptune.mlflow_run_id"  # trial: its MLflow run
FAIL_REASON_ATTR = "fail_reason"  # trial: why it failed as a recorded result
FIT_ATTR = "hptune.fit"  # trial: the fit diagnosis (also an MLflow tag)
WORKER_ATTR = "hptune.worker"  # trial: {host, pid, epochs, gpu} of the process that runs it
PLANNED_ATTR = "hptune.planned_trials"  # study: trials it should hold when the last run ends
EPOCH_ATTR = (
    "hptune.epoch"  # trial: its last epoch, where Optuna takes no reports (several objectives)
)
