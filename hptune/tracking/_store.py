"""Which MLflow tracking store a command uses, checked before anything is written, and opened.

A wrong URI, a server that does not answer or a store that cannot be written is one
``HptuneError`` here, rather than MLflow's retries for minutes or a failure after a study
started. ``open_client`` sets up a new database one process at a time.
"""

from __future__ import annotations

import os
import urllib.parse

from mlflow.tracking import MlflowClient

from hptune.errors import HptuneError
from hptune.redact import redact
from hptune.storage import check_database, check_writable, database_lock
from hptune.tracking_server import check_server


def resolve_tracking_uri(configured: str | None) -> str | None:
    """``MLFLOW_TRACKING_URI``, else the study file's URI, else None (MLflow's own default)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or None


def check_tracking(tracking_uri: str | None, timeout_s: float = 10) -> None:
    """Raise ``HptuneError`` when the tracking store cannot be used, before anything is
    written: a URI scheme MLflow has no store for; a server (``http(s)://``) that does not
    answer, or answers but not as MLflow (another program on that port); a database server
    that cannot be reached (MLflow's client retries each of those for minutes before it gives
    up); an SQLite file that cannot be written (a read-only file system). A folder (MLflow's old
    file store, also MLflow's own default where ``./mlruns`` holds one) is refused by MLflow 3
    unless ``MLFLOW_ALLOW_FILE_STORE`` is set: said here too."""
    check_file_store(tracking_uri)
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    _check_scheme(uri)
    if uri.startswith(("http://", "https://")):
        check_server(uri, timeout_s)
        return
    check_database(uri, "MLflow tracking store")
    check_writable(uri, "MLflow tracking store")


def _check_scheme(uri: str) -> None:
    """Raise ``HptuneError`` for a URI no MLflow tracking store is registered for."""
    # Probe: MLflow's registry of tracking stores is private; its lookup is what MlflowClient
    # does first. Without it, MLflow's own error comes later.
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry
    except ImportError:
        return
    try:
        _tracking_store_registry.get_store_builder(uri)
    except Exception:
        scheme = urllib.parse.urlsplit(uri).scheme
        raise HptuneError(
            f"MLflow tracking store: {redact(uri)} has the scheme {scheme!r}, which MLflow has no"
            " store for; use sqlite:///FILE, a database URL (postgresql://...) or an MLflow"
            " server's http(s):// address"
        ) from None


def check_file_store(tracking_uri: str | None) -> None:
    """Raise ``HptuneError`` when MLflow would open a file store it refuses (see
    ``check_tracking``); with no URI, MLflow's default is resolved as MLflow resolves it."""
    import mlflow
    from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE

    uri = tracking_uri or mlflow.get_tracking_uri()
    if urllib.parse.urlsplit(uri).scheme not in ("", "file") or MLFLOW_ALLOW_FILE_STORE.get():
        return
    refused = f"MLflow {mlflow.__version__} no longer opens file stores"
    if tracking_uri:
        raise HptuneError(
            f"the MLflow tracking store {uri} is a folder: {refused}. Track to a database"
            " instead (MLflow's default, sqlite:///mlflow.db, when tracking.uri and"
            " MLFLOW_TRACKING_URI are unset), copy the folder's runs into one with `mlflow"
            " migrate-filestore`, or set MLFLOW_ALLOW_FILE_STORE=true to use the folder anyway"
        )
    raise HptuneError(
        f"with no tracking URI set, MLflow picks the folder {uri}, as it holds an old file"
        f" store; {refused}. Copy its runs into a database (`mlflow migrate-filestore --source"
        " mlruns --target sqlite:///mlflow.db`) and set tracking.uri (or MLFLOW_TRACKING_URI) to"
        " sqlite:///mlflow.db; or set MLFLOW_ALLOW_FILE_STORE=true to use the folder anyway"
    )


def open_client(tracking_uri: str | None) -> MlflowClient:
    """An ``MlflowClient`` whose store is set up: a new database gets MLflow's tables here, one
    process at a time (``database_lock``), so that commands started together do not both
    create them (MLflow's own set-up does not wait for another: the second fails, and may
    leave the schema half made)."""
    import mlflow

    with database_lock(tracking_uri or mlflow.get_tracking_uri(), "setup"):
        return MlflowClient(tracking_uri=tracking_uri)  # opens (and, if new, sets up) the store
