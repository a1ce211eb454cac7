"""What MLflow holds after a study, read back through MlflowClient (and a real server)."""

from __future__ import annotations

import json
import logging
import time
import urllib.request
import warnings
from pathlib import Path

import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hptune import study
from hptune.config import ModelConfig
from hptune.models import build_model
from hptune.runs_view import TAG_PREFIX, RunsView, study_view
from hptune.studyfile import load_study_file
from hptune.tracking import StudyTracker
from tests.conftest import mlflow_server, study_yaml
from tests.test_plots import full_draw

STUDY = """name: tracked
n_trials: 3
data: {dataset: mnist, val_fraction: 0.2}
model: {width: 16, depth: 2}
train: {epochs: 2, batch_size: 32}
pruner: {name: none}
tracking: {registered_model: tracked-mlp}
search_space:
  lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}
"""


@pytest.fixture
def finished(tmp_path: Path, mnist_dir: Path) -> study.StudyResult:
    return study.optimize(load_study_file(study_yaml(tmp_path / "tracked.yaml", STUDY)))


def artifact_names(client: MlflowClient, run_id: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id)}


def parent_and_children(client: MlflowClient) -> tuple:
    experiment = client.get_experiment_by_name("tracked")
    found = client.search_runs([experiment.experiment_id])
    parents = [r for r in found if r.data.tags["hptune.role"] == "study"]
    return parents, [r for r in found if r.data.tags["hptune.role"] == "trial"]


def test_parent_run_describes_the_study(tmp_path: Path, finished: study.StudyResult) -> None:
    client = MlflowClient()
    (parent,), _ = parent_and_children(client)
    tags = parent.data.tags
    # Named after the study, tagged with how it was run, holding the study file.
    assert parent.info.run_name == "tracked" and parent.info.status == "FINISHED"
    assert tags["hptune.sampler"] == "tpe" and tags["hptune.pruner"] == "none"
    assert tags["hptune.storage"] == "sqlite:///mlruns/optuna.db"
    assert "tracked.yaml" in artifact_names(client, parent.info.run_id)
    local = client.download_artifacts(parent.info.run_id, "tracked.yaml", str(tmp_path))
    assert Path(local).read_text() == STUDY  # as written (it holds no password to hide)


def test_parent_run_carries_the_best_trial(finished: study.StudyResult) -> None:
    client = MlflowClient()
    (parent,), children = parent_and_children(client)
    best = finished.study.best_trial
    # best_value, the best params (as tags: MLflow params are immutable) and the best run id.
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    # (as written: a sampled lr to 4 significant digits, Optuna keeping the exact value)
    assert parent.data.tags["best_params.lr"] == f"{best.params['lr']:.4g}"
    best_run = next(c for c in children if c.data.tags["hptune.trial"] == str(best.number))
    assert parent.data.tags["best_trial_run_id"] == best_run.info.run_id


def test_each_complete_trial_has_its_outcome(finished: study.StudyResult) -> None:
    client = MlflowClient()
    _, children = parent_and_children(client)
    for child in children:
        names = artifact_names(client, child.info.run_id)
        # Confusion matrix (figure and raw counts), per-class scores, the whole training log.
        assert {"confusion_matrix.png", "confusion_matrix.json", "per_class.json"} <= names
        assert "training_log.json" in names
        local = Path(client.download_artifacts(child.info.run_id, "confusion_matrix.json"))
        matrix = json.loads(local.read_text())
        # Rows are true classes of the 40 validation images; class names come along.
        assert np.array(matrix["matrix"]).sum() == 40 and len(matrix["classes"]) == 10
        # The figure is the one of these counts.
        png = Path(client.download_artifacts(child.info.run_id, "confusion_matrix.png"))
        title = "Confusion matrix (validation)"
        assert png.read_bytes() == full_draw(matrix["matrix"], matrix["classes"], title)
        metrics = child.data.metrics
        # Experiment B's summary numbers, computed from the logged curve.
        history = client.get_metric_history(child.info.run_id, "val/accuracy")
        assert metrics["summary/best_val_accuracy"] == max(m.value for m in history)
        assert 0 < metrics["summary/stability"] <= 1
        # Gradient flow per weight layer, once per epoch.
        steps = client.get_metric_history(child.info.run_id, "weight_grad/fc1/mean_abs")
        assert [m.step for m in steps] == [1, 2]


def test_best_model_is_registered_and_reloads_on_cpu(finished: study.StudyResult) -> None:
    client = MlflowClient()
    (version,) = client.search_model_versions("name='tracked-mlp'")
    (parent,), _ = parent_and_children(client)
    # The registered version comes from the best trial's run.
    assert version.run_id == parent.data.tags["best_trial_run_id"]
    model = mlflow.pytorch.load_model("models:/tracked-mlp/1")
    # Input contract: float32 (N, 1, 28, 28), normalized as the study's data section says.
    logits = model(torch.zeros(3, 1, 28, 28))
    assert logits.shape == (3, 10)


def test_a_channels_last_model_is_logged_in_nchw_and_reloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (CUDA and CPU bf16 train convolutional models channels-last: hptune.training.)
    monkeypatch.chdir(tmp_path)
    tracker = StudyTracker("layouts", f"sqlite:///{tmp_path}/mlflow.db")
    parent = tracker.open_parent(None, "layouts", {}, None)
    model = build_model(ModelConfig(family="cnn"), (1, 28, 28), 10).eval()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(3, 1, 28, 28)
    expected = model(x).detach()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        uri = tracker.log_model(parent, model, x.numpy(), "layouts-cnn")
    tracker.close_parent(parent)
    # torch.export's archive warns about channels-last weights; the logged model has none.
    assert not [w for w in caught if "complete tensor" in str(w.message)]
    reloaded = mlflow.pytorch.load_model(uri)
    weights = [p for p in reloaded.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous() for p in weights)
    # The same function: NCHW and channels-last convolutions differ in rounding only.
    torch.testing.assert_close(reloaded(x), expected, rtol=1e-5, atol=1e-5)


def test_best_model_is_evaluated_once_on_the_test_set(finished: study.StudyResult) -> None:
    client = MlflowClient()
    (parent,), children = parent_and_children(client)
    # Test numbers are on the parent only; trials never see the test set.
    assert 0 <= parent.data.metrics["test/accuracy"] <= 1
    assert "test/f1_macro" in parent.data.metrics
    assert "test_confusion_matrix.png" in artifact_names(client, parent.info.run_id)
    assert not any("test/accuracy" in c.data.metrics for c in children)


def test_a_real_mlflow_server_serves_the_study(tmp_path: Path, finished: study.StudyResult) -> None:
    backend = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with mlflow_server(backend, "--default-artifact-root", str(tmp_path / "mlruns")) as base:
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=tracked"
        )
        experiment = json.load(urllib.request.urlopen(request, timeout=10))["experiment"]
        body = json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode()
        search = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        found = json.load(urllib.request.urlopen(search, timeout=10))["runs"]
        # Through the REST API: the parent and its three trials.
        assert len(found) == 4
        roles = sorted(
            next(t["value"] for t in run["data"]["tags"] if t["key"] == "hptune.role")
            for run in found
        )
        assert roles == ["study", "trial", "trial", "trial"]


def test_logging_the_model_leaves_mlflows_tracking_uri_as_it_found_it(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'first.db'}")
    study.optimize(load_study_file(study_yaml(tmp_path / "tracked.yaml", STUDY), ("n_trials=1",)))
    # The best model was logged through MLflow's process-wide URI; none is left set, so the
    # environment's next value is followed (a test after a study's once reached a dead server).
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'first.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'second.db'}")
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'second.db'}"


def test_background_writes_run_in_order_and_their_errors_reach_the_caller() -> None:
    from hptune.tracking import Writer

    writer = Writer()
    done: list[int] = []
    for k in range(50):
        writer.submit(done.append, k)
    writer.flush()
    assert done == list(range(50))

    def fail() -> None:
        raise RuntimeError("database is locked")

    writer.submit(fail)
    with pytest.raises(RuntimeError, match="database is locked"):
        writer.flush()
    writer.submit(fail)
    time.sleep(0.2)  # the failed write has finished: the next submit reports it
    with pytest.raises(RuntimeError, match="database is locked"):
        writer.submit(done.append, 50)


def test_the_runs_page_view_is_rewritten_by_a_rerun(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    view = study_view("viewed", [("val/accuracy", True)], ["lr"])
    tracker = StudyTracker("viewed", uri)
    assert tracker.describe_experiment("a study", view) == "hptune-viewed"
    tags = MlflowClient(uri).get_experiment(tracker.experiment_id).tags
    first = json.loads(tags[view.tag])
    time.sleep(0.01)
    again_tracker = StudyTracker("viewed", uri)
    assert again_tracker.describe_experiment("a study", view) == "hptune-viewed"
    tags = MlflowClient(uri).get_experiment(tracker.experiment_id).tags
    again = json.loads(tags[view.tag])
    # One view per study, rewritten by a rerun: created once, updated by each run.
    assert [key for key in tags if key.startswith(TAG_PREFIX)] == [view.tag]
    assert again["createdAt"] == first["createdAt"] < again["updatedAt"]
    assert json.loads(again["state"]) == view.state
    tracker.close(), again_tracker.close()


def test_a_view_mlflow_refuses_is_a_warning_not_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = StudyTracker("refused", uri)
    # A state longer than MLflow's longest experiment tag value (20,000 characters in 3.17,
    # 5,000 in 3.13: a study's view is about 1,000).
    huge = RunsView("hptune-huge", "huge", {"selectedColumns": ["params.`x`"] * 2_000})
    with caplog.at_level(logging.WARNING, "hptune.tracking"):
        key = tracker.describe_experiment("described anyway", huge)
    # No key (the printed address falls back to the plain runs table), one warning, and the
    # experiment is described as ever.
    assert key is None
    ours = [r for r in caplog.records if r.name == "hptune.tracking"]
    assert [r.getMessage()[:62] for r in ours] == [
        "hptune: the saved view 'hptune-huge' of MLflow's runs page was"
    ]
    assert "exceeds the maximum length of " in ours[0].getMessage()
    tags = MlflowClient(uri).get_experiment(tracker.experiment_id).tags
    assert tags["mlflow.note.content"] == "described anyway" and huge.tag not in tags
    tracker.close()


def test_a_study_whose_view_cannot_be_written_prints_the_plain_address(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hptune.describe import summarize_result

    real = MlflowClient.set_experiment_tag

    def refuse_views(client: MlflowClient, experiment_id: str, key: str, value: str) -> None:
        if key.startswith(TAG_PREFIX):
            raise MlflowException("the UI's format changed")
        real(client, experiment_id, key, value)

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", refuse_views)
    path = study_yaml(tmp_path / "tracked.yaml", STUDY)
    result = study.optimize(load_study_file(path, ["n_trials=1", "train.epochs=1"]))
    # The study ran, and its summary opens the runs table by search and order instead.
    assert len(result.completed) == 1 and result.runs_view is None
    summary = summarize_result(result, path, None)
    assert "runs?searchFilter=tags.%60hptune.study%60%20%3D%20%27tracked%27&orderByKey=" in summary
    assert "viewStateShareKey" not in summary
