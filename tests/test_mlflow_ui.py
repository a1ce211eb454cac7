"""What a user sees of a study in MLflow 3's UI: the printed address opens the study's runs
table, pruned and failed trials are told apart, and descriptions say what each run is."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import mlflow_server, write_idx
from tests.test_report import CHROMIUM_FLAGS, ROWS, STUDY, invoke

NAME = "ui"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A four-row study (complete, complete, pruned, failed) and what ``optimize`` printed."""
    root = tmp_path_factory.mktemp("ui")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        write_idx(root / "datasets" / "mnist", gz=True)
        path = root / f"{NAME}.yaml"
        path.write_text(STUDY.format(name=NAME, root=root, rows=ROWS))
        code, out, err = invoke("optimize", str(path))
        assert code == 0, err
        yield root, out


def runs(root: Path) -> dict[str, object]:
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name(NAME)
    assert experiment is not None
    return {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}


def test_pruned_and_failed_trials_have_names_that_say_so(study: tuple[Path, str]) -> None:
    by_name = runs(study[0])
    # MLflow marks KILLED (pruned) and FAILED runs with the same red icon: the name tells.
    assert set(by_name) == {NAME, "trial-0", "trial-1", "trial-2 (pruned)", "trial-3 (failed)"}
    assert by_name["trial-2 (pruned)"].info.status == "KILLED"  # type: ignore[attr-defined]
    assert by_name["trial-3 (failed)"].info.status == "FAILED"  # type: ignore[attr-defined]
    # Every trial's model size is logged when it is built, so pruned and failed ones chart too.
    sizes = {name: run.data.metrics.get("model/params") for name, run in by_name.items()}  # type: ignore[attr-defined]
    assert all(size and size > 0 for name, size in sizes.items() if name != NAME), sizes


def test_each_run_describes_itself_where_mlflow_shows_descriptions(
    study: tuple[Path, str],
) -> None:
    root = study[0]
    by_name = runs(root)
    note = {name: run.data.tags["mlflow.note.content"] for name, run in by_name.items()}  # type: ignore[attr-defined]
    # A trial's parameters and its outcome, on one line; parameters as written (1e-05, 1000).
    assert re.fullmatch(
        r"Trial 0: activation=relu, lr=0\.01 → complete after 3 epochs: val/accuracy 0\.\d{4} "
        r"\((good|under|over)-?\s?fit\)",
        note["trial-0"],
    ), note["trial-0"]
    assert note["trial-2 (pruned)"].startswith(
        "Trial 2: activation=sigmoid, lr=1e-05 → pruned after epoch 1: val/accuracy"
    )
    assert note["trial-3 (failed)"].startswith(
        "Trial 3: activation=exponential, lr=1000 → failed: "
    )
    # The study's run: its objective, data sizes and a link to its best trial's page.
    best = by_name[NAME].data.tags["best_trial_run_id"]  # type: ignore[attr-defined]
    assert "Objective: maximize val/accuracy;" in note[NAME]
    assert re.search(r"Data: [\d,]+ training, [\d,]+ validation, [\d,]+ test images", note[NAME])
    best_name = next(n for n, run in by_name.items() if run.info.run_id == best)  # type: ignore[attr-defined]
    assert f"Best trial: [{best_name}](#/experiments/" in note[NAME]
    assert f"/runs/{best}?workflowType=machine_learning)" in note[NAME]
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    experiment = client.get_experiment_by_name(NAME)
    assert experiment is not None and experiment.tags["mlflow.note.content"]
    # The registered model's version states its input contract.
    version = client.get_model_version(NAME, "1")
    assert "float32 tensor of shape (N, 1, 28, 28)" in version.description
    assert "pixel / 255" in version.description and "logits" in version.description


def test_the_printed_address_opens_the_study_runs_table(
    study: tuple[Path, str], tmp_path: Path
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs Chromium (make browser)")
        pytest.skip("needs Chromium (make browser)")
    root, out = study
    printed = re.search(r"then open http://127\.0\.0\.1:5000/(#/experiments/\S+)", out)
    assert printed, out
    with mlflow_server(f"sqlite:///{root}/mlflow.db") as url:
        flags = [f for f in CHROMIUM_FLAGS if not f.startswith("--virtual-time-budget")]
        flags += ["--virtual-time-budget=30000", f"--user-data-dir={tmp_path}", "--dump-dom"]
        result = subprocess.run(
            [chromium, *flags, f"{url}/{printed.group(1)}"],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    dom = result.stdout
    # The runs table (model-training mode: the study's runs, not GenAI's trace dashboard)
    # lists the study's run and every trial, flat (not folded under the study's run).
    for name in ("trial-0", "trial-1", "trial-2 (pruned)", "trial-3 (failed)"):
        assert f">{name}<" in dom, result.stderr[-2000:]
    assert f">{NAME}<" in dom
