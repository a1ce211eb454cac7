"""A user's factory and loader through whole studies (the real CLI), and the built-in
families on a 3-channel set."""

from __future__ import annotations

from pathlib import Path

import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from hptune import batchrun, data
from hptune.config import ModelConfig
from hptune.models import build_model
from hptune.studyfile import load_study_file
from hptune.training import train
from tests.conftest import invoke
from tests.usercode import user_code_fixture  # noqa: F401  (the user_code fixture)


def tracking_client() -> MlflowClient:
    # An absolute path: MLflow keeps one store per URI for the process, so a relative one would
    # read the first test's database in every later test.
    return MlflowClient(f"sqlite:///{Path.cwd() / 'mlflow.db'}")


def runs(role: str) -> list[mlflow.entities.Run]:
    client = tracking_client()
    experiment = client.get_experiment_by_name("own")
    assert experiment is not None
    return client.search_runs([experiment.experiment_id], f"tags.`hptune.role` = '{role}'")


def test_user_factory_and_loader_run_a_tracked_study(user_code: Path) -> None:
    code, _, err = invoke("optimize", str(user_code / "study.yaml"))
    assert code == 0, err
    trials = runs("trial")
    assert len(trials) == 2
    # The factory's parameters, searched and fixed, are MLflow params like hptune's own.
    params = trials[0].data.params
    assert params["channels"] in ("4", "8") and params["dropout"] == "0.1"
    assert params["factory"] == "mymodels:small_cnn" and params["dataset"] == "mydata:load"
    # The confusion matrix has the loader's K = 4 classes and their names.
    client = tracking_client()
    [parent] = runs("study")
    path = client.download_artifacts(parent.info.run_id, "test_confusion_matrix.json", ".")
    matrix = __import__("json").loads(Path(path).read_text())
    assert matrix["classes"] == ["north", "east", "south", "west"]
    assert np.array(matrix["matrix"]).shape == (4, 4)
    assert np.array(matrix["matrix"]).sum() == 100  # every test image once
    # The registered model reloads and maps the loader's (N, 3, 6, 6) images to 4 logits.
    model = mlflow.pytorch.load_model("models:/own/1")
    assert model(torch.zeros(5, 3, 6, 6)).shape == (5, 4)
    # Its version says what it takes: the data's shape and class names.
    tags = client.get_model_version("own", "1").tags
    assert tags["hptune.input_shape"] == "(N, 3, 6, 6)"
    assert tags["hptune.classes"] == '["north", "east", "south", "west"]'


@pytest.mark.parametrize("family", ["mlp", "cnn", "convnet"])
def test_builtin_families_take_a_three_channel_set(user_code: Path, family: str) -> None:
    config = load_study_file(user_code / "study.yaml")
    splits = data.load(config.data, torch.device("cpu"), config.source)
    model = build_model(ModelConfig(family=family), splits.input_shape, len(splits.classes))
    # The first layer takes the 3 channels (the MLP all 3 x 6 x 6 values); the head K = 4.
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear))
    if family == "mlp":
        assert first.in_features == 3 * 6 * 6
    else:
        assert first.in_channels == 3
    result = train(model, splits, config.train.model_copy(update={"epochs": 1}), seed=0)
    assert 0.0 <= result.history[0].metrics["val/accuracy"] <= 1.0
    assert model(splits.test_x[:2]).shape == (2, 4)


def test_too_small_images_for_the_cnn_are_an_error(user_code: Path) -> None:
    code, _, err = invoke(
        "optimize",
        str(user_code / "study.yaml"),
        "--set",
        "model={family: convnet, conv_blocks: 2}",
        "--set",
        "search_space={}",
    )
    # 6x6 images shrink to nothing after two convnet blocks: said before anything runs.
    assert code == 2
    assert "model.conv_blocks: 2 convnet blocks need images of at least 10x10" in err
    assert "the data's are 6x6" in err and not Path("mlflow.db").exists()


def test_two_workers_train_a_user_model(user_code: Path) -> None:
    code, _, err = invoke("optimize", str(user_code / "study.yaml"), "--workers", "2")
    assert code == 0, err
    # The worker processes import the factory and loader by their import paths; both trials
    # train and finish, each tagged with the worker that trained it.
    trials = runs("trial")
    assert sorted(r.info.status for r in trials) == ["FINISHED", "FINISHED"]
    assert {r.data.tags.get("hptune.worker") for r in trials} <= {"1", "2"}


@pytest.mark.parametrize("batchnorm", [False, True])
def test_batch_trials_with_a_user_model(
    user_code: Path, batchnorm: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batchrun, "_said", set())  # (said once per process: this one)
    code, _, err = invoke(
        "optimize", str(user_code / "study.yaml"), "--set", "batch_trials=2",
        "--set", f"model.params.batchnorm={str(batchnorm).lower()}",
        "--set", "search_space.channels.choices=[4]",
    )  # fmt: skip
    assert code == 0, err
    trials = runs("trial")
    assert sorted(r.info.status for r in trials) == ["FINISHED", "FINISHED"]
    # A model with buffers (BatchNorm) trains its members one at a time, said once.
    note = "trains batched members one at a time"
    assert err.count(note) == (1 if batchnorm else 0), err


# Factories that give no usable model for one searched value (8 channels).
PICKY = """
from torch import nn
from mymodels import small_cnn

def raises(channels, input_shape, num_classes):
    if channels == 8:
        raise ValueError("8 channels do not fit this model")
    return small_cnn(channels, input_shape, num_classes)

def wrong_output(channels, input_shape, num_classes):
    model = small_cnn(channels, input_shape, num_classes)
    return model if channels == 4 else nn.Sequential(model, nn.Linear(num_classes, 3))
"""


@pytest.mark.parametrize(
    ("factory", "reason"),
    [
        ("raises", "raised ValueError: 8 channels do not fit this model"),
        ("wrong_output", "to (2, 3), but hptune needs (2, 4) logits (4 classes)"),
    ],
)
@pytest.mark.parametrize("batch", [1, 2])
def test_a_searched_value_the_factory_rejects_fails_that_trial_only(
    user_code: Path, factory: str, reason: str, batch: int
) -> None:
    (user_code / "picky.py").write_text(PICKY)
    code, out, err = invoke(
        "optimize", str(user_code / "study.yaml"), "--set", f"model.factory=picky:{factory}",
        "--set", "model.params={}", "--set", "sampler.name=grid", "--set", "n_trials=2",
        "--set", "search_space={channels: {type: categorical, choices: [4, 8]}}",
        "--set", f"batch_trials={batch}",
    )  # fmt: skip
    # The start's check (the first point, 4 channels) passes; the trial with 8 channels fails
    # with the factory's reason, and the study goes on to its end.
    assert code == 0, err
    by_channels = {r.data.params["channels"]: r for r in runs("trial")}
    assert by_channels["4"].info.status == "FINISHED"
    rejected = by_channels["8"]
    assert rejected.info.status == "FAILED"
    assert reason in rejected.data.tags["hptune.fail_reason"]
    assert "model.factory" in rejected.data.tags["hptune.fail_reason"]
    assert "(1 complete, 0 pruned, 1 failed)" in out
