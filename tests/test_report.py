"""``hptune export-report``: every section, numbers that match MLflow, images that decode."""

from __future__ import annotations

import base64
import csv
import html
import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import matplotlib.image
import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import invoke, write_idx

HEADINGS = (
    "1. Summary",
    "2. Results",
    "3. Comparison plots",
    "4. Grouped analysis",
    "5. Best trial",
    "6. Optuna's view",
    "7. Fit diagnosis",
)

# Complete, pruned (threshold pruner: val accuracy stuck below 0.3) and failed (diverges) rows.
STUDY = """name: {name}
storage: sqlite:///{root}/optuna.db
tracking: {{uri: "sqlite:///{root}/mlflow.db"}}
data: {{dataset: mnist, data_dir: {root}/datasets, val_fraction: 0.2}}
model: {{width: 16, depth: 1}}
train: {{epochs: 3, batch_size: 32, scheduler: step, device: cpu}}
pruner: {{name: threshold, options: {{lower: 0.3}}}}
configurations:
{rows}
"""
ROWS = """  - {activation: relu, lr: 0.01}
  - {activation: tanh, lr: 0.01}
  - {activation: sigmoid, lr: 0.00001}
  - {activation: exponential, lr: 1000.0}
"""


def make_study(root: Path, name: str = "rep", rows: str = ROWS, *options: str) -> Path:
    write_idx(root / "datasets" / "mnist", gz=True)
    path = root / f"{name}.yaml"
    path.write_text(STUDY.format(name=name, root=root, rows=rows))
    code, _, err = invoke("optimize", str(path), *options)
    assert code == 0, err
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One small study and its report, shared by the tests that only read them."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # MLflow puts artifacts under ./mlruns
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        path = make_study(root)
        code, out, err = invoke("export-report", str(path), "--out", str(root / "out"))
        assert code == 0, err
        assert f"report: {root / 'out' / 'report.html'}" in out
        yield root


def test_every_section_heading_is_in_html_and_markdown(report: Path) -> None:
    page = (report / "out" / "report.html").read_text()
    markdown = (report / "out" / "report.md").read_text()
    for heading in HEADINGS:
        assert f"<h2>{html.escape(heading)}</h2>" in page
        assert f"## {heading}" in markdown


def test_the_trials_table_matches_mlflow(report: Path) -> None:
    with (report / "out" / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    client = MlflowClient(f"sqlite:///{report}/mlflow.db")
    study = optuna.load_study(study_name="rep", storage=f"sqlite:///{report}/optuna.db")
    # One row per trial, with its true state: the table hides nothing.
    assert [r["state"] for r in rows] == ["complete", "complete", "pruned", "failed"]
    for row, trial in zip(rows, study.trials, strict=True):
        run_id = trial.user_attrs["hptune.mlflow_run_id"]
        for column, key in (("val/accuracy", "val/accuracy"), ("train loss", "train/loss")):
            history = client.get_metric_history(run_id, key)
            if not history:
                assert row[column] == ""  # the diverged trial logged no epoch
                continue
            last = max(history, key=lambda m: m.step).value
            assert float(row[column]) == pytest.approx(last, rel=1e-3)
    # The failed trial says why.
    assert "not finite" in rows[3]["note"]


def test_every_embedded_image_decodes(report: Path) -> None:
    page = (report / "out" / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    # Curves, bars, confusion matrix, gallery, gradient flow, Optuna's plots: many figures.
    assert len(images) >= 8
    for data in images:
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    # No other source: the file opens without a network or server.
    assert "http://" not in page and "https://" not in page


def test_markdown_figures_lie_beside_it(report: Path) -> None:
    markdown = (report / "out" / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", markdown)
    assert linked and all((report / "out" / link).is_file() for link in linked)


def test_sections_that_cannot_be_computed_say_why(report: Path) -> None:
    page = (report / "out" / "report.html").read_text()
    # Only the complete trials share a learning rate, so no lr x activation heat map.
    assert "Heat map: not shown, it needs two parameters" in page


def test_the_report_is_logged_on_the_parent_run(report: Path) -> None:
    client = MlflowClient(f"sqlite:///{report}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "rep"]
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`hptune.role` = 'study'")
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/trials.csv"} <= logged


def test_a_single_trial_study_still_gets_every_section(tmp_path: Path) -> None:
    path = make_study(tmp_path, "one", "  - {activation: relu, lr: 0.01}\n")
    with matplotlib.rc_context({"axes.facecolor": "white"}):
        code, _, err = invoke("export-report", str(path), "--out", str(tmp_path / "out"))
        # The report draws with its own figures: the process's style is left as it was.
        assert matplotlib.rcParams["axes.facecolor"] == "white"
    assert code == 0, err
    page = (tmp_path / "out" / "report.html").read_text()
    assert all(f"<h2>{html.escape(heading)}</h2>" in page for heading in HEADINGS)
    # Importances need two complete trials: the report says so instead of failing.
    assert "Parameter importances: not shown, parameter importances need at least 2" in page


def test_a_running_study_is_reported_as_far_as_it_got(tmp_path: Path) -> None:
    path = make_study(tmp_path, "live", "  - {activation: relu, lr: 0.01}\n")
    study = optuna.load_study(study_name="live", storage=f"sqlite:///{tmp_path}/optuna.db")
    study.ask()  # a trial another worker is running right now
    code, _, err = invoke("export-report", str(path), "--out", str(tmp_path / "out"))
    assert code == 0, err
    page = (tmp_path / "out" / "report.html").read_text()
    assert "still running" in page and "1 running" in page


def test_a_table_not_run_to_its_end_says_how_many_rows_wait(tmp_path: Path) -> None:
    rows = "  - {activation: relu, lr: 0.01}\n  - {activation: tanh, lr: 0.01}\n"
    path = make_study(tmp_path, "part", rows, "--n-trials", "1")
    code, _, err = invoke("export-report", str(path), "--out", str(tmp_path / "out"))
    assert code == 0, err
    page = (tmp_path / "out" / "report.html").read_text()
    assert "1: 1 complete, 0 pruned, 0 failed; 1 queued, not run yet" in page
    assert "1 queued trial (rows of the study" in page


def test_an_unknown_study_is_a_clear_error(tmp_path: Path) -> None:
    make_study(tmp_path, "known", "  - {activation: relu, lr: 0.01}\n")
    storage = f"sqlite:///{tmp_path}/optuna.db"
    code, _, err = invoke("export-report", "--study", "nope", "--storage", storage)
    assert code == 2
    assert "no study named 'nope'" in err and "studies there: known" in err


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
)


def test_chromium_renders_the_report_with_no_broken_images(report: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs Chromium (make browser)")
        pytest.skip("needs Chromium (make browser)")
    page = report / "out" / "report.html"
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    dom = result.stdout
    # The page's load handler counted its images; none failed to decode.
    images = re.search(r'data-images="(\d+)"', dom)
    broken = re.search(r'data-broken-images="(\d+)"', dom)
    assert images and broken, result.stderr[-2000:]
    assert int(images.group(1)) >= 8 and broken.group(1) == "0"
    for heading in HEADINGS:
        assert heading.replace("'", "&#x27;") in dom or heading in dom


def test_a_study_is_found_from_its_mlflow_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_study(tmp_path, "byexp", "  - {activation: relu, lr: 0.01}\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    storage = f"sqlite:///{tmp_path}/optuna.db"
    code, out, err = invoke("export-report", "--experiment", "byexp", "--storage", storage)
    assert code == 0, err
    # No study file: the experiment's parent run names the study; the default folder is used.
    assert "report: reports/byexp/report.html" in out
    summary = (tmp_path / "reports" / "byexp" / "summary.csv").read_text()
    assert "study,byexp" in summary and "list / threshold" in summary
    assert "validation,split 0.2 of the training set" in summary
