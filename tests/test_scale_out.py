"""Scaling out: the Optuna study on PostgreSQL and MLflow behind a tracking server backed by
PostgreSQL, as several machines would share them. Real servers on loopback; the commands run as
users run them."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import (
    command_environment,
    free_port,
    hptune_command,
    mlflow_server,
    study_yaml,
)

Database = Callable[[str], str]  # a new database's name -> its SQLAlchemy URL
PASSWORD = "pw-not-shown"


def _postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps them off the PATH)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    return Path(versions[-1]).parent if versions else None


def _version(path: str) -> int:
    return int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0


@pytest.fixture(scope="module")
def postgres() -> Iterator[Database]:
    """A throwaway PostgreSQL server on 127.0.0.1 (trust authentication, no fsync); CI installs
    Debian's package (``make test``), so there it must exist."""
    pytest.importorskip("psycopg", reason="needs the postgres extra (pip install -e '.[dev]')")
    bindir = _postgres_bin()
    if bindir is None:
        message = "needs PostgreSQL's server (Debian's postgresql package; make test installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # PostgreSQL refuses to run as root: as root, its own user runs it, in a folder it owns.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="hptune-pg-"))
    if as_user:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()

    def pg(program: str, *args: str) -> None:
        subprocess.run([*as_user, str(bindir / program), *args], check=True, capture_output=True)

    pg("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
    options = f"-h 127.0.0.1 -p {port} -k {folder} -F"
    pg("pg_ctl", "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start")
    # Trust authentication ignores the password; it is there to be kept out of what is shown.
    base = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{port}"

    def database(name: str) -> str:
        import psycopg

        address = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with psycopg.connect(address, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"{base}/{name}"

    try:
        yield database
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def tracking_server(postgres: Database, tmp_path: Path) -> Iterator[str]:
    """``mlflow server`` storing runs in PostgreSQL and serving artifacts (clients upload them
    over HTTP, as from another machine); its URL."""
    backend = postgres(f"mlflow_{free_port()}")
    with mlflow_server(
        backend, "--artifacts-destination", str(tmp_path / "served-artifacts")
    ) as url:
        yield url


TABLE = """name: shared
storage: {storage}
n_trials: 4
data: {{dataset: mnist, val_fraction: 0.2}}
model: {{width: 16, depth: 1}}
train: {{epochs: 2, batch_size: 32}}
pruner: {{name: none}}
sampler: {{name: grid}}
search_space:
  lr: {{type: categorical, choices: [0.001, 0.003, 0.01, 0.03]}}
"""


def hptune(*args: str, tracking_uri: str) -> subprocess.CompletedProcess[str]:
    env = command_environment(MLFLOW_TRACKING_URI=tracking_uri)
    return subprocess.run(
        hptune_command(*args), env=env, capture_output=True, text=True, timeout=300
    )


def test_workers_share_a_table_on_postgresql_through_a_tracking_server(
    tmp_path: Path, mnist_dir: Path, postgres: Database, tracking_server: str
) -> None:
    storage = postgres("optuna")
    path = study_yaml(tmp_path / "shared.yaml", TABLE.format(storage=storage))
    run = hptune("optimize", str(path), "--workers", "2", tracking_uri=tracking_server)
    assert run.returncode == 0, run.stderr
    # MLflow's "View run ... at" lines (two per run end, each an extra request) stay out.
    assert "View run" not in run.stdout
    trials = optuna.load_study(study_name="shared", storage=storage).trials
    # Two processes took the queued rows from PostgreSQL (its row lock, no file lock): each
    # row ran exactly once.
    assert sorted(t.params["lr"] for t in trials) == [0.001, 0.003, 0.01, 0.03]
    assert {t.state for t in trials} == {TrialState.COMPLETE}

    client = MlflowClient(tracking_uri=tracking_server)
    experiment = client.get_experiment_by_name("shared")
    found = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in found if r.data.tags["hptune.role"] == "study"]
    children = [r for r in found if r.data.tags["hptune.role"] == "trial"]
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["hptune.worker"] for r in children} == {"1", "2"}
    # Artifacts went over HTTP into the server's store; the best model is registered there.
    for child in children:
        names = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert "confusion_matrix.png" in names
    assert list((tmp_path / "served-artifacts").rglob("confusion_matrix.png"))
    (version,) = client.search_model_versions("name = 'shared'")
    assert version.run_id == parent.data.tags["best_trial_run_id"]
    assert 0 <= parent.data.metrics["test/accuracy"] <= 1

    # Another machine's rerun finds the table done; the report reads both servers.
    again = hptune("optimize", str(path), tracking_uri=tracking_server)
    assert again.returncode == 0, again.stderr
    assert "configurations: 4 of 4 run" in again.stdout
    report = hptune("export-report", str(path), "--out", "out", tracking_uri=tracking_server)
    assert report.returncode == 0, report.stderr
    assert len((tmp_path / "out" / "trials.csv").read_text().splitlines()) == 1 + 4
    # The database's password is in no output, tag, report (the report is shared) or the copy
    # of the study file on the study's run.
    shown = [run.stdout, run.stderr, again.stdout, report.stdout, *parent.data.tags.values()]
    shown += [(tmp_path / "out" / name).read_text() for name in ("report.html", "report.md")]
    logged = client.download_artifacts(parent.info.run_id, "shared.yaml", str(tmp_path / "dl"))
    shown.append(Path(logged).read_text())
    assert "postgresql+psycopg://postgres:***@" in run.stdout
    assert "storage: postgresql+psycopg://postgres:***@127.0.0.1" in shown[-1]
    assert not [text for text in shown if PASSWORD in text]


SAMPLED = """name: machines
storage: {storage}
n_trials: 1
data: {{dataset: mnist, val_fraction: 0.2}}
model: {{width: 16, depth: 1}}
train: {{epochs: 100000, batch_size: 32}}
pruner: {{name: none}}
search_space:
  lr: {{type: float, low: 1.0e-3, high: 1.0e-1, log: true}}
"""


def test_a_killed_machines_trial_is_failed_and_rerun_on_postgresql(
    tmp_path: Path,
    mnist_dir: Path,
    postgres: Database,
    tracking_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hptune import storage as storages
    from hptune import study
    from hptune.studyfile import load_study_file

    url = postgres("killed")
    path = study_yaml(tmp_path / "machines.yaml", SAMPLED.format(storage=url))
    env = command_environment(MLFLOW_TRACKING_URI=tracking_server)
    machine = subprocess.Popen(hptune_command("optimize", str(path)), env=env)
    try:
        deadline = time.monotonic() + 90
        while not _running_with_a_run(url):  # its trial trains (100,000 epochs) and is logged
            if time.monotonic() > deadline or machine.poll() is not None:
                pytest.fail("the first machine never started its trial")
            time.sleep(0.5)
    finally:
        machine.kill()  # power off: no end for its trial, its run or its heartbeat
        machine.wait()
    monkeypatch.setattr(storages, "GRACE_PERIOD_S", 1)
    time.sleep(3)  # heartbeats are stored to the second: wait past the 1 s grace surely
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    # The dead machine trained 100,000-epoch trials so as to be inside one when killed; a rerun
    # with other epochs is refused as other settings (tests/test_settings.py), not here.
    monkeypatch.setattr(study, "_check_settings", lambda stored, config: None)
    result = study.optimize(load_study_file(path, ("train.epochs=2",)))
    dead, retried = result.study.trials
    # The next machine's run finds the trial stale: failed, its parameters run again.
    assert dead.state == TrialState.FAIL and retried.state == TrialState.COMPLETE
    assert retried.params == dead.params
    # The dead machine's MLflow run, left RUNNING on the server, is closed as FAILED.
    client = MlflowClient(tracking_uri=tracking_server)
    experiment = client.get_experiment_by_name("machines")
    found = client.search_runs([experiment.experiment_id], "tags.`hptune.role` = 'trial'")
    assert {r.data.tags["hptune.trial"]: r.info.status for r in found} == {
        "0": "FAILED",
        "1": "FINISHED",
    }


def _running_with_a_run(url: str) -> bool:
    """Whether a trial runs with a heartbeat and an MLflow run (a peek with PostgreSQL's
    driver: creating Optuna's tables from here would race the machine's own creation)."""
    import psycopg

    query = (
        "SELECT count(*) FROM trials JOIN trial_heartbeats USING (trial_id) "
        "JOIN trial_user_attributes USING (trial_id) "
        "WHERE state='RUNNING' AND key='hptune.mlflow_run_id'"
    )
    try:
        with psycopg.connect(url.replace("+psycopg", "")) as connection:
            row = connection.execute(query).fetchone()
    except psycopg.errors.UndefinedTable:  # not created yet
        return False
    return row is not None and row[0] > 0


def test_commands_started_together_queue_each_row_once_on_postgresql(postgres: Database) -> None:
    from tests.test_grid import enqueue_at_once

    # Four commands (a job array on four machines) enqueue one 30-row table at once.
    assert enqueue_at_once(postgres("race")) == 30
