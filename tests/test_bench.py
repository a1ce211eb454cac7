"""The benchmark (benchmarks/bench.py) runs end to end on CPU with tiny sizes (it reports speed;
it never asserts it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import bench
from hptune.config import TrainConfig
from hptune.device import precision_name


def test_benchmark_writes_the_documented_json(
    tmp_path: Path, fashion_mnist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "bench.json"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # --device auto: the CPU
    bench.main(
        ["--epochs", "2", "--train-subset", "1000", "--models", "mlp", "--members", "3",
         "--json", str(out)]
    )  # fmt: skip
    report = json.loads(out.read_text())
    (row,) = report["results"]
    fp32 = {"hptune_fp32_epoch_s", "hptune_fp32_acc"} if row["precision"] == "bf16" else set()
    off = {"hptune_off_epoch_s", "hptune_off_acc", "hptune_off_precision"}
    off.add("hptune_off_reference_epoch_s")
    assert set(row) == {
        "model", "device", "fast_paths", "precision", "reference_epoch_s", "hptune_epoch_s",
        "ratio", "reference_acc", "hptune_acc", "peak_mem_mb", *fp32, *off,
    }  # fmt: skip
    # One run measures hptune's path with fast paths on (beside the reference) and off.
    assert row["fast_paths"] == "auto"
    assert row["hptune_off_epoch_s"] > 0 and row["hptune_off_acc"] > 0.5
    assert row["precision"] == precision_name(TrainConfig(), torch.device("cpu"))
    # The ratio is the two measured epoch times of the same run, not a constant.
    assert row["ratio"] == pytest.approx(row["reference_epoch_s"] / row["hptune_epoch_s"])
    # Both loops learn on the same 1,000 images: far above chance (10%).
    assert row["reference_acc"] > 0.5 and row["hptune_acc"] > 0.5
    assert row.get("hptune_fp32_acc", 1.0) > 0.5
    throughput = report["study_throughput"]
    assert throughput["ratio"] == pytest.approx(
        throughput["trial_epochs_per_s"] / throughput["reference_trial_epochs_per_s"]
    )
    for way in ("batched", "workers"):
        assert throughput[f"{way}_ratio"] == pytest.approx(
            throughput[f"{way}_trial_epochs_per_s"] / throughput["reference_trial_epochs_per_s"]
        )
    # The batched study's rate: its 3 trials' epochs, against the reference's rate.
    assert throughput["batched_trials"] == 3
    assert throughput["batched_ratio"] == pytest.approx(
        throughput["batched_trial_epochs_per_s"] / throughput["reference_trial_epochs_per_s"]
    )
    # The overhead in both forms: a share of the trials' wall time, and ms per trial.
    for way in ("trial", "batched"):
        assert 0 < throughput[f"{way}_overhead_pct"] < 100 and throughput[f"{way}_overhead_ms"] > 0
    batched = report["batched_trials"]
    assert batched["members"] == 3
    assert batched["ratio"] == pytest.approx(
        batched["model_epochs_per_s"] / batched["single_model_epochs_per_s"]
    )
    # The stacked members learn what they learn alone (same seeds and learning rates).
    assert batched["max_val_acc_gap"] < 0.05
