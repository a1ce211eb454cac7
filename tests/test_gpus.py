"""Workers spread over GPUs (``--gpus``): which GPU each worker gets, and the environment that
pins it there before its interpreter imports torch. No GPU needed: the device list is given."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from hptune import workers
from hptune.device import GPU_ENV, visible_gpus, worker_gpus
from hptune.errors import HptuneError
from tests.conftest import invoke, study_yaml

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_workers_go_round_robin_over_the_visible_gpus() -> None:
    # --workers 8 on four GPUs: two workers per GPU, in turn.
    assert worker_gpus(None, 8, CUDA, ["0", "1", "2", "3"]) == list("01230123")
    # --gpus 1,3 picks among them; 3 workers: 1, 3, 1.
    assert worker_gpus([1, 3], 3, CUDA, ["0", "1", "2", "3"]) == ["1", "3", "1"]


def test_gpu_indices_are_this_process_s_own_when_cuda_visible_devices_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    # Index 0 is the first GPU this process sees: the machine's GPU 4 here.
    visible = visible_gpus({"CUDA_VISIBLE_DEVICES": "4,6"})
    assert visible == ["4", "6"]
    assert worker_gpus([1, 0], 2, CUDA, visible) == ["6", "4"]
    assert visible_gpus({}) == ["0", "1"]


def test_cpu_training_pins_nothing_and_refuses_named_gpus() -> None:
    assert worker_gpus(None, 4, CPU, []) is None
    with pytest.raises(HptuneError, match=r"gpus=\[0\] needs CUDA, but trials train on cpu"):
        worker_gpus([0], 2, CPU, [])


def test_a_gpu_that_is_not_visible_is_an_error() -> None:
    with pytest.raises(HptuneError, match="GPU 2, 5 is not visible; this process sees 2"):
        worker_gpus([0, 2, 5], 2, CUDA, ["0", "1"])


def test_each_worker_starts_with_its_gpu_pinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[dict[str, str]] = []
    real_popen = subprocess.Popen

    def recorded(command: list[str], **options: Any) -> Any:
        if command[1:3] != ["-m", "hptune.worker_process"]:  # (others run as they are)
            return real_popen(command, **options)
        started.append(options["env"])
        return subprocess.CompletedProcess(command, 0)  # has the returncode; poll below

    monkeypatch.setattr(subprocess, "Popen", recorded)
    monkeypatch.setattr(subprocess.CompletedProcess, "poll", lambda self: 0, raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    config = _config(tmp_path, workers=3, device="cuda")
    workers.run_workers(config, _EmptyStudy(), 3, table=False)  # type: ignore[arg-type]
    # Each worker's interpreter starts with its GPU as its only visible device.
    assert [env["CUDA_VISIBLE_DEVICES"] for env in started] == ["2", "3", "2"]
    assert [env[GPU_ENV] for env in started] == ["2", "3", "2"]
    package_root = str(Path(workers.__file__).resolve().parents[1])
    assert all(env["PYTHONPATH"].startswith(package_root) for env in started)


def test_cpu_workers_keep_the_environment_as_it_is() -> None:
    env = workers.worker_environment({"CUDA_VISIBLE_DEVICES": "1", "X": "y"}, None)
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and GPU_ENV not in env and env["X"] == "y"


def test_optimize_refuses_gpus_without_cuda_and_writes_nothing(tmp_path: Path) -> None:
    path = study_yaml(tmp_path / "s.yaml", "name: s\ntrain: {device: cpu}\n")
    code, _, err = invoke("optimize", str(path), "--workers", "2", "--gpus", "0,1")
    assert code == 2
    assert "error: gpus=[0, 1] needs CUDA, but trials train on cpu" in err
    assert not (tmp_path / "mlruns").exists()


class _EmptyStudy:
    directions = (optuna.study.StudyDirection.MAXIMIZE,)

    @property
    def best_value(self) -> float:
        raise ValueError("no trials")

    def get_trials(self, **kwargs: Any) -> list[Any]:
        return []

    @property
    def best_trial(self) -> Any:
        raise ValueError("no trials")


def _config(tmp_path: Path, workers: int, device: str) -> Any:
    from hptune.studyfile import load_study_file

    text = f"name: s\nworkers: {workers}\ntrain: {{device: {device}}}\n"
    return load_study_file(study_yaml(tmp_path / "s.yaml", text))


def test_the_gpu_is_a_tag_on_the_trial_run_and_in_the_trial_s_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from hptune.objective import Objective

    monkeypatch.setenv(GPU_ENV, "3")
    objective = Objective.__new__(Objective)
    objective.worker = 2
    assert objective.run_tags() == {"hptune.worker": "2", "hptune.gpu": "3"}
    info = objective.process_info(_config(tmp_path, 1, "cpu"))
    assert info["gpu"] == "3" and info["pid"] == os.getpid()


def test_status_shows_each_running_trial_s_gpu() -> None:
    from hptune.status import RunningTrial, StudyStatus, format_status

    running = RunningTrial(7, "node", 11, "3", 2, 5, 61.0)
    status = StudyStatus(
        "s", {"complete": 0, "pruned": 0, "fail": 0, "running": 1, "waiting": 0},
        [running], [], ["maximize"], None, 1, 1, None,
    )  # fmt: skip
    assert "running: trial 7 on node pid 11 gpu 3, epoch 2/5, 1m01s" in format_status(status)
