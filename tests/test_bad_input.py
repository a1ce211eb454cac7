"""Bad input around the stores and the report folder: one ``error:`` line, exit code 2, and
nothing written to any store (or outside the report's folder)."""

from __future__ import annotations

import contextlib
import http.server
import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import command_environment, hptune_command, invoke, study_yaml

STUDY = """name: s
n_trials: 1
data: {dataset: mnist}
model: {width: 8, depth: 1}
train: {epochs: 1, batch_size: 64}
pruner: {name: none}
search_space:
  lr: {type: float, low: 0.001, high: 0.01, log: true}
"""


def files_under(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*") if "cache" not in p.parts}


def one_error(code: int, err: str) -> str:
    """The one ``error:`` line of a command that must have exited 2 with it."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # (not on the test's stderr)
        pass


@contextlib.contextmanager
def not_mlflow_server() -> Iterator[str]:
    """A plain ``http.server`` on loopback (another program on MLflow's port); its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("tracking_uri", "message"),
    [
        ("ftp://127.0.0.1/runs", "has the scheme 'ftp', which MLflow has no store for"),
        ("not-mlflow", "answers, but not as an MLflow tracking server (HTTP 404"),
    ],
)
def test_a_tracking_uri_mlflow_cannot_use_is_one_line_and_writes_nothing(
    tmp_path: Path,
    mnist_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    tracking_uri: str,
    message: str,
) -> None:
    path = study_yaml(tmp_path / "s.yaml", STUDY)
    before = files_under(tmp_path)
    with not_mlflow_server() as url:
        monkeypatch.setenv(
            "MLFLOW_TRACKING_URI", url if tracking_uri == "not-mlflow" else tracking_uri
        )
        code, _, err = invoke("optimize", str(path))
    assert message in one_error(code, err)
    # Neither Optuna's store nor MLflow's was made.
    assert files_under(tmp_path) == before


def test_a_real_mlflow_answer_is_told_from_another_programs(tmp_path: Path) -> None:
    from hptune.tracking_server import _is_mlflow_answer

    # MLflow answers JSON, its errors too; a web server's 404 page or 200 listing is not.
    assert _is_mlflow_answer(200, b'{"experiments": []}')
    assert _is_mlflow_answer(404, b'{"error_code": "ENDPOINT_NOT_FOUND", "message": "x"}')
    assert not _is_mlflow_answer(404, b"<html>File not found</html>")
    assert not _is_mlflow_answer(200, b"<html>Directory listing</html>")


def test_in_memory_sqlite_is_refused(tmp_path: Path, mnist_dir: Path) -> None:
    path = study_yaml(tmp_path / "s.yaml", STUDY)
    code, _, err = invoke("optimize", str(path), "--storage", "sqlite://")
    assert "in-memory database: the study would vanish" in one_error(code, err)
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def _read_only_mounts() -> bool:
    """Whether this process may mount a folder read-only in its own mount namespace."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "mount", "--bind", "-o", "ro", "/", "/"], capture_output=True
    )
    return probe.returncode == 0


def test_an_existing_study_on_a_read_only_file_system_is_one_line(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not _read_only_mounts():
        pytest.skip("needs unshare and mount (root with CAP_SYS_ADMIN) for a read-only mount")
    work = tmp_path / "work"  # the stores' folder (the data cache stays writable beside it)
    work.mkdir()
    monkeypatch.chdir(work)
    path = study_yaml(work / "s.yaml", STUDY)
    code, _, err = invoke("optimize", str(path))
    assert code == 0, err
    # The same command again, with the folder mounted read-only (only for that command: its
    # own mount namespace). chmod would not do: tests run as root, who writes anyway.
    command = hptune_command("optimize", str(path))
    script = f"mount --bind -o ro {work} {work} && exec {shlex.join(command)}"
    env = command_environment()
    run = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], cwd=work, env=env, capture_output=True, text=True
    )
    line = one_error(run.returncode, run.stderr)
    assert "cannot be written (attempt to write a readonly database)" in line, line
    # Still one trial: nothing of the refused command reached the stores.
    study = optuna.load_study(study_name="s", storage="sqlite:///mlruns/optuna.db")
    assert len(study.trials) == 1


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("a-file", "report folder a-file is a file"),
        ("a-file/report", "report folder a-file/report is under the file a-file"),
        ("/proc/hptune-report", "report folder /proc/hptune-report: /proc cannot be written"),
    ],
)
def test_a_report_folder_that_cannot_be_written_is_one_line(
    tmp_path: Path, out: str, message: str
) -> None:
    (tmp_path / "a-file").write_text("mine")
    before = files_under(tmp_path)
    code, _, err = invoke("export-report", "--study", "s", "--out", out)
    assert message in one_error(code, err)
    # Checked before the stores were opened: none was made.
    assert files_under(tmp_path) == before and (tmp_path / "a-file").read_text() == "mine"


def test_a_failed_report_leaves_no_store_behind(tmp_path: Path) -> None:
    code, _, err = invoke("export-report", "--study", "nowhere")
    assert "there is no file" in one_error(code, err)
    # No mlflow.db, no mlruns/optuna.db, no report folder.
    assert files_under(tmp_path) == set()


def test_a_study_name_read_from_the_stores_cannot_lead_the_report_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A shared tracking server's run names the study "../../escaped" (written there by someone
    # else: hptune's own study files refuse such a name); the Optuna study has that name too.
    name = "../../escaped"
    storage = "sqlite:///mlruns/optuna.db"
    (tmp_path / "mlruns").mkdir()
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("shared")
    client.create_run(experiment, tags={"hptune.role": "study", "hptune.study": name})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    outside = set(tmp_path.parent.iterdir())
    code, out, err = invoke("export-report", "--experiment", "shared")
    assert code == 0, err
    # The report is in reports/<safe name>/, and nothing was written beside the test folder.
    (folder,) = (tmp_path / "reports").iterdir()
    assert folder.name == "_._.._escaped" and (folder / "report.html").is_file()
    assert f"report: {Path('reports', folder.name, 'report.html')}" in out
    assert set(tmp_path.parent.iterdir()) == outside
