"""Names hptune stores on Optuna studies and trials; torch-free, so any module may read them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FINGERPRINT_ATTR = "hptune.fingerprint"  # study: the search space and objective it was run with
SETTINGS_ATTR = "hptune.settings"  # study: the data, model and training settings trials share
RETRY_OF_ATTR = "hptune.retry_of"  # trial: the interrupted trial whose params it repeats
RUN_ID_ATTR = "hptune.mlflow_run_id"  # trial: its MLflow run
FAIL_REASON_ATTR = "fail_reason"  # trial: why it failed as a recorded result
FIT_ATTR = "hptune.fit"  # trial: the fit diagnosis (also an MLflow tag)
WORKER_ATTR = "hptune.worker"  # trial: {host, pid, epochs, gpu} of the process that runs it
PLANNED_ATTR = "hptune.planned_trials"  # study: trials it should hold when the last run ends
EPOCH_ATTR = (
    "hptune.epoch"  # trial: its last epoch, where Optuna takes no reports (several objectives)
)

# fail_reason of trials that did not run to an end; both are queued to run again.
INTERRUPTED = "interrupted"  # stopped by Ctrl-C or SIGTERM
STALE = "stale: its process stopped sending heartbeats"  # its process was killed (kill -9)


def failed_as_result(user_attrs: Mapping[str, Any]) -> bool:
    """Whether a FAIL trial failed as a recorded result (it diverged, ran out of memory), not
    because it was stopped before its end (interrupted, or its process died)."""
    reason = user_attrs.get(FAIL_REASON_ATTR)
    return reason is not None and reason not in (INTERRUPTED, STALE)
