"""``hptune replay``: a stored trial trained again from its parameters and seed, as its own
MLflow run beside the original, with its epochs compared."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import invoke, study_yaml

# CPU, fp32, a searched learning rate and dropout (a seeded random draw during training).
SMALL = """name: small
n_trials: 2
data: {dataset: mnist, val_fraction: 0.2}
model: {width: 16, depth: 1, dropout: 0.2}
train: {epochs: 2, batch_size: 32, device: cpu, precision: fp32}
pruner: {name: none}
search_space:
  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
"""


def test_a_cpu_fp32_replay_is_exact_and_is_its_own_run(tmp_path: Path, mnist_dir: Path) -> None:
    path = study_yaml(tmp_path / "small.yaml", SMALL)
    code, _, err = invoke("optimize", str(path))
    assert code == 0, err
    code, out, err = invoke("replay", str(path), "--trial", "1")
    assert code == 0, err
    # Both epochs, the original's value beside the replay's, and no difference at all.
    assert re.search(r"^\s+1\s+0\.\d{6}\s+0\.\d{6}\s+0$", out, re.MULTILINE), out
    assert re.search(r"^\s+2\s+0\.\d{6}\s+0\.\d{6}\s+0$", out, re.MULTILINE), out
    assert "largest difference, val/accuracy: 0\n" in out + "\n"
    assert "replay of trial 1 (fp32)" in out

    client = MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    by_role = {}
    for run in runs:
        by_role.setdefault(run.data.tags.get("hptune.role"), []).append(run)
    (replay,) = by_role["replay"]
    (original,) = [r for r in by_role["trial"] if r.data.tags["hptune.trial"] == "1"]
    # Tagged as a replay of the original, under the same parent run, with the same params.
    assert replay.data.tags["hptune.replay_of"] == original.info.run_id
    assert replay.data.tags["mlflow.parentRunId"] == original.data.tags["mlflow.parentRunId"]
    assert replay.info.run_name == "replay-of-trial-1"
    assert replay.data.params == original.data.params
    assert replay.data.metrics["val/accuracy"] == original.data.metrics["val/accuracy"]


def test_a_trial_that_does_not_exist_is_a_clear_error(tmp_path: Path, mnist_dir: Path) -> None:
    path = study_yaml(tmp_path / "small.yaml", SMALL.replace("n_trials: 2", "n_trials: 1"))
    assert invoke("optimize", str(path))[0] == 0
    code, _, err = invoke("replay", str(path), "--trial", "5")
    assert code == 2
    assert err == "error: study 'small' has no trial 5 (it has 1)\n"


@pytest.mark.parametrize("trial", ["-1", "x"])
def test_the_trial_number_is_checked_by_the_command(tmp_path: Path, trial: str) -> None:
    path = study_yaml(tmp_path / "small.yaml", SMALL)
    code, _, _ = invoke("replay", str(path), "--trial", trial)
    assert code == 2
