"""The real ``hptune`` command: exit codes, messages on stderr, an end-to-end study."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import hptune_command, invoke, study_yaml

STUDIES = Path(__file__).parents[1] / "studies"


def test_validate_prints_the_space_without_data_or_stores(tmp_path: Path) -> None:
    code, out, err = invoke("validate", str(STUDIES / "fashion.yaml"))
    assert code == 0, err
    # Every searched parameter with its range or choices, on stdout.
    for line in (
        "lr           float        [0.0001, 0.01] log",
        "width        int          [128, 1024] step 128  when family=mlp",
    ):
        assert line in out
    # Validation touched neither Optuna's nor MLflow's store.
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
    assert "trials per run: 30, timeout 3600 s\n" in out
    _, batched, _ = invoke("validate", str(STUDIES / "fashion.yaml"), "--set", "batch_trials=8")
    assert "trials per run: 30, timeout 3600 s, 8 at a time\n" in batched


def test_bad_study_file_is_exit_2_one_line_per_problem(tmp_path: Path) -> None:
    path = study_yaml(tmp_path / "bad.yaml", "name: x\ntrain: {epochs: 0, optimizer: lion}\n")
    code, _, err = invoke("validate", str(path))
    # A user error: exit code 2, one "error:" line per problem, no traceback.
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"error: {path}: train.") for line in lines)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        # No server at that port: refused at once.
        ("postgresql+psycopg://u:secret@127.0.0.1:{port}/x", "storage: cannot open "),
        # A driver that is not installed (MySQL's): named, no traceback.
        ("mysql://u:secret@127.0.0.1:{port}/x", "needs the database driver MySQLdb"),
        ("not a url", "storage: not a url is not a database URL"),
    ],
)
def test_a_storage_that_cannot_be_opened_is_a_clear_error(
    tmp_path: Path, mnist_dir: Path, storage: str, message: str
) -> None:
    from tests.conftest import free_port

    path = study_yaml(tmp_path / "s.yaml", "name: s\ndata: {dataset: mnist}\n")
    url = storage.format(port=free_port())
    code, _, err = invoke("optimize", str(path), "--storage", url)
    assert code == 2 and message in err and "Traceback" not in err
    assert "secret" not in err  # the URL's password is not shown


@pytest.mark.parametrize("uri", ["databricks://profile", "sqlite:///x.db"])
def test_tracking_uris_that_are_not_servers_are_left_to_mlflow(tmp_path: Path, uri: str) -> None:
    from hptune.tracking import check_tracking

    check_tracking(uri)  # nothing to ask, no error


@pytest.mark.parametrize("uri", ["file://{folder}/runs", "{folder}/runs", None])
def test_a_file_store_is_a_clear_error_unless_mlflow_is_told_to_allow_it(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, uri: str | None
) -> None:
    from hptune.tracking import check_tracking

    if uri is None:  # MLflow's own default falls back to an old store in ./mlruns
        (tmp_path / "mlruns" / "0").mkdir(parents=True)
        (tmp_path / "mlruns" / "0" / "meta.yaml").write_text("name: Default\n")
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri.format(folder=tmp_path))
    path = study_yaml(tmp_path / "s.yaml", "name: s\ndata: {dataset: mnist}\n")
    code, _, err = invoke("optimize", str(path), "--n-trials", "1")
    # MLflow 3 refuses the folder: said before the Optuna study is created, without a traceback.
    assert code == 2 and "no longer opens file stores" in err and "Traceback" not in err
    assert "MLFLOW_ALLOW_FILE_STORE=true" in err
    assert not (tmp_path / "mlruns" / "optuna.db").exists()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    check_tracking(uri and uri.format(folder=tmp_path))  # what MLflow then opens


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://127.0.0.1:{port}", "the MLflow tracking server http://127.0.0.1:"),
        ("postgresql+psycopg://u:secret@127.0.0.1:{port}/x", "MLflow tracking store: cannot open"),
    ],
)
def test_a_tracking_store_that_does_not_answer_is_a_clear_error_and_writes_nothing(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, uri: str, message: str
) -> None:
    from tests.conftest import free_port

    # Nothing listens there: MLflow's client would retry each request (each connection) for
    # minutes (here, where the check was missing, it would fail within seconds instead).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri.format(port=free_port()))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    path = study_yaml(tmp_path / "s.yaml", "name: s\ndata: {dataset: mnist}\n")
    code, _, err = invoke("optimize", str(path), "--n-trials", "1")
    assert code == 2 and f"error: {message}" in err and "secret" not in err
    assert not (tmp_path / "mlruns").exists()  # the Optuna study was not created
    code, _, err = invoke("export-report", str(path))
    assert code == 2 and message in err


def test_the_summary_counts_queued_rows_and_other_processes_trials(
    tmp_path: Path, mnist_dir: Path
) -> None:
    import optuna

    from hptune.describe import summarize_result
    from hptune.study import StudyResult

    text = "name: s\ndata: {dataset: mnist}\ntrain: {epochs: 1}\nconfigurations:\n"
    path = study_yaml(
        tmp_path / "s.yaml",
        text + "".join(f"  - {{lr: {lr}}}\n" for lr in ("1.0e-3", "2.0e-3", "3.0e-3")),
    )
    code, out, err = invoke("optimize", str(path), "--n-trials", "1")
    # The table's other two rows wait for the next run: counted, not left out of the sum.
    assert code == 0, err
    assert "study s: 3 trials (1 complete, 0 pruned, 0 failed, 2 queued)\n" in out
    assert "configurations: 1 of 3 run\n" in out
    # A trial another process is training.
    other = optuna.create_study()
    other.ask()
    summary = summarize_result(
        StudyResult(other, "sqlite:///o.db", "sqlite:///m.db", "e"), path, None
    )
    assert summary.startswith(
        f"study {other.study_name}: 1 trial (0 complete, 0 pruned, 0 failed, 1 running elsewhere)\n"
    )


def test_missing_data_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    path = study_yaml(tmp_path / "s.yaml", "name: s\ndata: {dataset: mnist}\n")
    code, _, err = invoke("optimize", str(path), "--n-trials", "1")
    assert code == 2
    assert "error: MNIST was not found" in err and "--set data.download=true" in err
    # Nothing was written to either store.
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_but_absent(tmp_path: Path) -> None:
    path = study_yaml(tmp_path / "s.yaml", "name: s\n")
    code, _, err = invoke("optimize", str(path), "--device", "cuda")
    assert code == 2 and "no CUDA device is available" in err


def test_python_m_hptune_help() -> None:
    result = subprocess.run(hptune_command("--help"), capture_output=True, text=True, check=False)
    # `python -m hptune` is the same command (used on the GPU machine).
    assert result.returncode == 0 and "optimize" in result.stdout and "validate" in result.stdout


def test_end_to_end_flagship_study_on_real_images(tmp_path: Path, fashion_mnist: Path) -> None:
    args = ["optimize", str(STUDIES / "fashion.yaml"), "--n-trials", "3"]
    args += ["--set", "train.epochs=2", "--set", "data.train_subset=3000"]
    code, out, err = invoke(*args, "--device", "cpu")
    assert code == 0, err
    # The summary names the best trial, where runs are, and how to look at them.
    assert "study fashion: 3 trials" in out
    assert "best: trial" in out and "mlflow ui" in out
    client = MlflowClient()
    (experiment,) = [e for e in client.search_experiments() if e.name == "fashion"]
    trial_runs = client.search_runs([experiment.experiment_id], "tags.`hptune.role` = 'trial'")
    assert len(trial_runs) == 3
    best = max(float(r.data.metrics.get("val/accuracy", 0)) for r in trial_runs)
    # Two epochs on 2,700 real images already beat chance (10%) by far.
    assert best > 0.6
    # Running the same command again continues the study.
    code, out, _ = invoke(*args, "--device", "cpu")
    assert code == 0 and "study fashion: 6 trials" in out
