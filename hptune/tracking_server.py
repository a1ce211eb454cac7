"""Whether an MLflow tracking server answers at an address: asked once over plain HTTP
(``urllib``, no mlflow import), because MLflow's client retries a request for minutes before
it gives up, and a wrong port may hold another program whose answers MLflow cannot read."""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request

from hptune.errors import HptuneError
from hptune.redact import redact

MLFLOW_API_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"


def check_server(uri: str, timeout_s: float) -> None:
    """Ask an MLflow server's REST API once: it answers JSON (an error too); 401/403 count
    (a guarded server: MLflow's ``MLFLOW_TRACKING_*`` credentials are sent here as there)."""
    parts = urllib.parse.urlsplit(uri)
    address = parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="")
    api = urllib.parse.urlunsplit(address).rstrip("/") + MLFLOW_API_PROBE
    request = urllib.request.Request(api, headers=_auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            status, body = answer.status, answer.read(65536)
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read(65536)
    except OSError as error:  # refused, unknown host, timed out
        reason = getattr(error, "reason", error)
        raise HptuneError(
            f"the MLflow tracking server {redact(uri)} does not answer ({reason}); start"
            " it, or set MLFLOW_TRACKING_URI (or the study file's tracking.uri) to one that runs"
        ) from None
    if status in (401, 403) or _is_mlflow_answer(status, body):
        return
    raise HptuneError(
        f"{redact(uri)} answers, but not as an MLflow tracking server (HTTP {status} for"
        f" {MLFLOW_API_PROBE.partition('?')[0]}); is it the right address and port?"
    )


def _is_mlflow_answer(status: int, body: bytes) -> bool:
    import json

    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return isinstance(answer, dict) and (status < 400 or "error_code" in answer)


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's REST client sends, from the same variables."""
    import base64

    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    user, password = (os.environ.get(f"MLFLOW_TRACKING_{k}") for k in ("USERNAME", "PASSWORD"))
    if token:
        return {"Authorization": f"Bearer {token}"}
    if user and password:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    return {}
