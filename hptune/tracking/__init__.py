"""MLflow tracking: the only package that imports mlflow.

One module per concern: ``_store`` resolves, checks and opens the tracking store; ``_writer``
writes a study's runs as it trains (``StudyTracker``, ``TrialRun``, the background ``Writer``);
``_reader`` reads a study's runs back (``StudyReader``) for reports, replays and the CLI.
"""

from hptune.tracking._reader import RunRecord, StudyReader
from hptune.tracking._store import check_tracking, resolve_tracking_uri
from hptune.tracking._writer import (
    EFFECTIVE_STUDY_FILE,
    PARENT_RUN_ATTR,
    StudyTracker,
    TrialRun,
    Writer,
)

__all__ = [
    "EFFECTIVE_STUDY_FILE",
    "PARENT_RUN_ATTR",
    "RunRecord",
    "StudyReader",
    "StudyTracker",
    "TrialRun",
    "Writer",
    "check_tracking",
    "resolve_tracking_uri",
]
