"""Where Optuna keeps a study: SQLite under ``mlruns/`` by default, any RDB URL on request.

RDB storages get Optuna's heartbeat, so a trial left RUNNING by a killed process is marked
failed by the next run once it is stale, and its parameters are queued to run again.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 30  # a trial silent this long belonged to a dead process
MAX_RETRY = 2


def storage_url(configured: str | None) -> str:
    """The storage URL to use: the configured one, or SQLite in ``./mlruns/``."""
    return configured or DEFAULT_STORAGE


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open (creating if needed) an RDB storage with heartbeats and stale-trial retry."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # Heartbeats have been "experimental" since Optuna 2.8; they are what resume relies on.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=GRACE_PERIOD_S,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
        )


def redact(url: str) -> str:
    """The URL with any password replaced, fit for logs and tags."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: show it as given
        return url
