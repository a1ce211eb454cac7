"""Commands started at the same instant (a job array, ``make -j``) on a new folder, a new study,
or both: every one succeeds, the study has one parent run holding every trial, and the stores
stay usable. Real ``python -m hptune optimize`` processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import command_environment, hptune_command, study_yaml

STUDY = """name: together
n_trials: 1
data: {dataset: mnist, val_fraction: 0.2}
model: {width: 8, depth: 1}
train: {epochs: 1, batch_size: 64}
pruner: {name: none}
search_space:
  lr: {type: float, low: 0.001, high: 0.01, log: true}
"""
PROCESSES = 4


def start_together(folder: Path, study_name: str) -> list[subprocess.CompletedProcess[str]]:
    """Start ``PROCESSES`` optimize commands at once; wait for all of them."""
    env = command_environment()
    command = hptune_command("optimize", "s.yaml", "--study-name", study_name)
    running = [
        subprocess.Popen(
            command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(PROCESSES)
    ]
    return [
        subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate()) for p in running
    ]


def test_commands_started_together_share_the_stores(tmp_path: Path, mnist_dir: Path) -> None:
    study_yaml(tmp_path / "s.yaml", STUDY)
    # A new folder (no store yet), a new study in it, then that study again.
    for study_name in ("first", "second", "second"):
        runs = start_together(tmp_path, study_name)
        assert [r.returncode for r in runs] == [0] * PROCESSES, [r.stderr[-800:] for r in runs]
        # Each wrote the study's saved view of the runs page (taking turns) and printed it.
        assert all(f"viewStateShareKey=hptune-{study_name}&" in r.stdout for r in runs)
        assert not [r.stderr for r in runs if "saved view" in r.stderr]

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for study_name, n_trials in (("first", PROCESSES), ("second", 2 * PROCESSES)):
        study = optuna.load_study(study_name=study_name, storage="sqlite:///mlruns/optuna.db")
        # Every command's trial is in the one study...
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * n_trials
        experiment = client.get_experiment_by_name(study_name)  # (named after the study)
        assert experiment is not None
        runs = client.search_runs(
            [experiment.experiment_id], f"tags.`hptune.study` = '{study_name}'"
        )
        parents = [r for r in runs if r.data.tags["hptune.role"] == "study"]
        trials = [r for r in runs if r.data.tags["hptune.role"] == "trial"]
        # ...under one parent run, the one the study points to.
        assert len(parents) == 1
        assert study.user_attrs["hptune.mlflow_parent_run_id"] == parents[0].info.run_id
        assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
        assert len(trials) == n_trials
        # One view per study, whichever command wrote it last.
        views = [key for key in experiment.tags if key.startswith("mlflow.sharedViewState.")]
        assert views == [f"mlflow.sharedViewState.hptune-{study_name}"]


@pytest.mark.parametrize("purpose", ["setup", "study"])
def test_the_database_lock_makes_processes_take_turns(tmp_path: Path, purpose: str) -> None:
    from hptune.storage import database_lock

    url = f"sqlite:///{tmp_path / 'x.db'}"
    # The lock is a file beside the database, held by one process at a time.
    lock = tmp_path / f"x.db.{purpose}.lock"
    take = f"from filelock import FileLock; FileLock({str(lock)!r}).acquire(timeout=0.2)"
    with database_lock(url, purpose, "a"):
        other = subprocess.run([sys.executable, "-c", take], capture_output=True, text=True)
    assert other.returncode != 0 and "Timeout" in other.stderr
