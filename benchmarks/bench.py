"""Benchmark: hptune's training path against the hand-written loop the seed experiments used.

    python benchmarks/bench.py [--device cpu|cuda] [--epochs N] [--train-subset N]
        [--fast-paths auto,off] [--no-studies] [--json PATH]

Both run in this process (hptune's own: ``hptune.allocator.own_process``) on the same images,
model, batch size and device. The reference loop is the experiments' style: a per-sample
torchvision dataset (``ToTensor`` + ``Normalize``), a shuffling ``DataLoader`` and a ``.item()``
per batch. hptune's path is ``training.train`` on device-resident tensors, exactly as ``hptune
optimize`` calls it (``train.precision: auto``: bf16 on a CPU with native bf16, when a second line
shows the same path in fp32; on CUDA a second line shows it without CUDA graphs). The two alternate
epoch by epoch, so drift in the machine's speed hits both alike. Epoch times are medians of the
epochs after the first (warm-up); both are evaluated on the test set after every epoch (hptune's in
its training precision, as its validation runs), and the accuracies in the table come from one fp32
evaluation after the last epoch. Peak memory on CUDA is the largest allocation during one of
hptune's epochs; on CPU the process's peak resident size. On CPU, hptune's training sets glibc's
malloc thresholds for the whole process (``hptune.allocator``), so the reference loop runs with
them too: the ratio compares the training paths, not the allocators.

``--fast-paths auto,off`` (the default) also runs hptune's path with ``train.fast_paths: off``
(plain PyTorch on device-resident tensors, ``hptune.fastpaths``), on the same data and seed, in the
same process, alternating with a reference run of its own: the malloc thresholds and denormal
flushing, being process-wide, hold for it too, so that line measures the training paths alone.

Batched trials train ``--members`` MLPs as one stacked model (``hptune.batched``) and the same
trials one after the other, and compare model-epochs per second.

Study throughput runs four flagship-style trials (B's MLP, one learning rate each) three
ways: hptune through ``hptune.optimize`` (Optuna + MLflow, in a temporary folder) one trial at a
time and with ``workers: 2`` (worker processes, their start included), and the reference as
Optuna's PyTorch example does it (the reference loop, ``mlflow.log_metric`` per epoch). A fourth
study runs three batches of ``--members`` such trials (``batch_trials: --members``), the way a
study fills a GPU, so that the MLflow writer's work for one batch runs beside the next one's
training, as in a long study; its rate is compared with the reference's rate on the four. Each
hptune study's bookkeeping on the trials' path (asks, MLflow runs, reports, tells, model
building: the trials' wall time not spent in epochs) is given per trial.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

if __package__ in (None, ""):  # run as a script (python benchmarks/bench.py): find benchmarks
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reference import reference_epoch, reference_loaders, reference_study
from hptune import data
from hptune.allocator import own_process
from hptune.batched import train_batched
from hptune.config import DataConfig, ModelConfig, StudyConfig, TrainConfig
from hptune.device import (
    flush_denormals,
    precision_name,
    resolve_device,
    uses_cuda_graphs,
)
from hptune.models import build_model
from hptune.training import EpochReport, TrainResult, evaluate, train

MODELS = {  # experiment B's MLP and experiment A's CNN, with their batch sizes
    "mlp": (ModelConfig(hidden_sizes=[256, 128]), 128),
    "cnn": (ModelConfig(family="cnn"), 64),
}
STUDY_TRIALS = 4  # the study-throughput trials one at a time (B's MLP, Adam, one lr each)
WORKERS = 2  # worker processes in the study-throughput run with ``workers``
BATCHES = 3  # batches of ``--members`` trials in the study-throughput run with ``batch_trials``


def compare_model(
    name: str,
    device: torch.device,
    epochs: int,
    train_subset: int | None,
    fast_paths: tuple[str, ...] = ("auto", "off"),
) -> dict:
    """One row of the table: both loops, same model, seed, epochs and batch size; hptune's
    path with the first of ``fast_paths``, then again with each other one.

    The two alternate epoch by epoch (a reference epoch after each of hptune's, a fresh
    reference model for each of hptune's runs), so a change in the machine's speed during the
    run (frequent on shared machines) slows both alike; each ratio compares epochs that
    alternated.
    """
    _, batch_size = MODELS[name]
    splits = data.load(DataConfig(validation="test", train_subset=train_subset), device)
    loaders = reference_loaders(train_subset, batch_size)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, fast_paths=fast_paths[0])
    hp_epoch, hp_acc, ref_epoch, ref_acc, peak = _alternating(name, splits, config, loaders)
    extra: dict[str, Any] = {}
    if uses_cuda_graphs(config, device):  # what the graphs buy: the same path launched eagerly
        eager = config.model_copy(update={"cuda_graphs": False})
        extra["hptune_eager_epoch_s"] = _hptune_run(name, splits, eager)[0]
    precision = precision_name(config, device)
    if precision == "bf16":  # what bf16 buys, and its accuracy next to fp32's
        fp32 = config.model_copy(update={"precision": "fp32"})
        extra["hptune_fp32_epoch_s"], extra["hptune_fp32_acc"] = _hptune_run(name, splits, fp32)
    for setting in fast_paths[1:]:  # the same path with the fast paths switched
        other = config.model_copy(update={"fast_paths": setting})
        seconds, accuracy, reference_s, _, _ = _alternating(name, splits, other, loaders)
        extra[f"hptune_{setting}_epoch_s"], extra[f"hptune_{setting}_acc"] = seconds, accuracy
        extra[f"hptune_{setting}_reference_epoch_s"] = reference_s
        extra[f"hptune_{setting}_precision"] = precision_name(other, device)
    return {
        "model": name,
        "device": str(device),
        "fast_paths": fast_paths[0],
        "precision": precision,
        "reference_epoch_s": ref_epoch,
        "hptune_epoch_s": hp_epoch,
        "ratio": ref_epoch / hp_epoch,
        "reference_acc": ref_acc,
        "hptune_acc": hp_acc,
        "peak_mem_mb": peak,
        **extra,
    }


def _alternating(
    name: str, splits: data.Splits, config: TrainConfig, loaders: Any
) -> tuple[float, float, float, float, float]:
    """hptune's run under ``config`` with a reference epoch after each of its epochs: hptune's
    median epoch and accuracy, the reference's median epoch and accuracy, peak memory (MB)."""
    device = splits.train_x.device
    torch.manual_seed(0)
    reference = build_model(MODELS[name][0], splits.input_shape, 10).to(device)
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3)
    ref_times: list[float] = []
    ref_acc, peaks = 0.0, []

    def reference_after(_: EpochReport) -> None:
        nonlocal ref_acc
        peaks.append(_peak_memory_mb(device))  # on CUDA hptune's epoch alone (reset below)
        started = time.perf_counter()
        ref_acc = reference_epoch(reference, optimizer, loaders, device)
        ref_times.append(time.perf_counter() - started)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    hp_epoch, hp_acc = _hptune_run(name, splits, config, reference_after)
    return hp_epoch, hp_acc, statistics.median(ref_times[1:]), ref_acc, max(peaks)


def _hptune_run(
    name: str,
    splits: data.Splits,
    config: TrainConfig,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> tuple[float, float]:
    """hptune's median epoch time (after the first) and test accuracy, from seed 0."""
    torch.manual_seed(0)
    model = build_model(MODELS[name][0], splits.input_shape, 10).to(splits.train_x.device)
    history = train(model, splits, config, 0, on_epoch).history
    _, predictions = evaluate(model, splits.test_x, splits.test_y)
    accuracy = (predictions == splits.test_y).float().mean().item()
    return statistics.median(r.metrics["time/epoch_s"] for r in history[1:]), accuracy


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS


def study_throughput(
    device: torch.device, epochs: int, train_subset: int | None, members: int
) -> dict:
    """Trial-epochs per second of B's MLP trials (Adam, one learning rate each) through
    ``hptune.optimize``: four one at a time and with workers, three batches of ``members``; and
    the reference on the four."""
    import hptune

    def run(name: str, n_trials: int, batch_trials: int = 1, workers: int = 1) -> tuple[Any, float]:
        """The study's result and its wall time in seconds."""
        config = study_config(name, device, epochs, train_subset, batch_trials, n_trials, workers)
        started = time.perf_counter()
        return hptune.optimize(config), time.perf_counter() - started

    with tempfile.TemporaryDirectory() as folder:
        previous = Path.cwd()
        os.chdir(folder)
        try:
            # One untimed trial first: the stores' creation and first imports are paid once
            # per folder, not by whichever timed run comes first.
            run("warm_up", 1)
            result, hptune_s = run("bench", STUDY_TRIALS)
            overhead_pct, overhead_ms = trial_overhead(result)
            batched, batched_s = run("bench_batched", BATCHES * members, batch_trials=members)
            batched_pct, batched_ms = batch_overhead(batched, members)
            workers_s = run("bench_workers", STUDY_TRIALS, workers=WORKERS)[1]
            reference_s = reference_study(
                device, epochs, train_subset, result.tracking_uri, learning_rates(STUDY_TRIALS),
                *MODELS["mlp"],
            )  # fmt: skip
        finally:
            os.chdir(previous)
    trial_epochs = STUDY_TRIALS * epochs
    reference_rate = trial_epochs / reference_s
    return {
        "trial_epochs_per_s": trial_epochs / hptune_s,
        "reference_trial_epochs_per_s": reference_rate,
        "ratio": reference_s / hptune_s,
        "batched_trials": members,
        "batched_trial_epochs_per_s": BATCHES * members * epochs / batched_s,
        "batched_ratio": BATCHES * members * epochs / batched_s / reference_rate,
        "workers": WORKERS,
        "workers_trial_epochs_per_s": trial_epochs / workers_s,
        "workers_ratio": reference_s / workers_s,
        "trial_overhead_pct": overhead_pct,
        "trial_overhead_ms": overhead_ms,
        "batched_overhead_pct": batched_pct,
        "batched_overhead_ms": batched_ms,
    }


def learning_rates(count: int) -> list[float]:
    """The study-throughput trials' learning rates: ``count`` from 3e-4 to 1e-2."""
    return [float(lr) for lr in np.geomspace(3e-4, 1e-2, count)]


def study_config(
    name: str,
    device: torch.device,
    epochs: int,
    train_subset: int | None,
    batch_trials: int,
    n_trials: int,
    workers: int,
) -> StudyConfig:
    """The study-throughput study: a grid over ``n_trials`` learning rates for B's MLP, no
    pruning."""
    model_config, batch_size = MODELS["mlp"]
    return StudyConfig.model_validate(
        {
            "name": name,
            "n_trials": n_trials,
            "batch_trials": batch_trials,
            "workers": workers,
            "sampler": {"name": "grid"},
            "pruner": {"name": "none"},
            "data": {"train_subset": train_subset},
            "model": model_config,
            "train": {"epochs": epochs, "batch_size": batch_size, "device": device.type},
            "search_space": {"lr": {"type": "categorical", "choices": learning_rates(n_trials)}},
        }
    )


def trial_overhead(result: Any) -> tuple[float, float]:
    """The trials' wall time (Optuna's start to complete) not spent in training epochs (their
    ``time/epoch_s``, read back from MLflow): Optuna, MLflow, model building. As a percent of
    the wall time, and in milliseconds per trial (the percent shrinks as trials grow longer)."""
    wall = training = 0.0
    for trial, epochs in epoch_times(result):
        wall += (trial.datetime_complete - trial.datetime_start).total_seconds()
        training += sum(epochs)
    return 100 * (wall - training) / wall, 1000 * (wall - training) / len(result.completed)


def batch_overhead(result: Any, size: int) -> tuple[float, float]:
    """As ``trial_overhead``, for a study whose trials trained in batches of ``size`` (one
    process, so batch ``b`` holds trials ``b*size`` to ``b*size+size-1``): a batch's wall time
    runs from its first member's start (its ask) to its last one's end (its tell), and its
    epochs are the batch's (every member logs the batch's epoch times)."""
    batches: dict[int, list[tuple[Any, list[float]]]] = {}
    for trial, epochs in epoch_times(result):
        batches.setdefault(trial.number // size, []).append((trial, epochs))
    wall = training = 0.0
    for members in batches.values():
        start = min(trial.datetime_start for trial, _ in members)
        wall += (max(trial.datetime_complete for trial, _ in members) - start).total_seconds()
        training += max(sum(epochs) for _, epochs in members)
    trials = sum(len(members) for members in batches.values())
    return 100 * (wall - training) / wall, 1000 * (wall - training) / trials


def epoch_times(result: Any) -> list[tuple[Any, list[float]]]:
    """Each complete trial with its epochs' ``time/epoch_s``, read back from MLflow."""
    from mlflow.tracking import MlflowClient

    from hptune.attrs import RUN_ID_ATTR

    client = MlflowClient(tracking_uri=result.tracking_uri)
    times = []
    for trial in result.completed:
        history = client.get_metric_history(trial.user_attrs[RUN_ID_ATTR], "time/epoch_s")
        times.append((trial, [point.value for point in history]))
    return times


def batched_trials(
    device: torch.device, epochs: int, train_subset: int | None, members: int
) -> dict:
    """``members`` trials of experiment B's MLP (learning rates 1e-4 ... 1e-2, own seeds) trained
    as one stacked model vs one after the other through ``training.train``."""
    model_config, batch_size = MODELS["mlp"]
    splits = data.load(DataConfig(train_subset=train_subset), device)
    configs = [
        TrainConfig(epochs=epochs, batch_size=batch_size, lr=float(lr))
        for lr in torch.logspace(-4, -2, members)
    ]
    seeds = list(range(members))

    def models() -> list[nn.Module]:
        built = []
        for seed in seeds:
            torch.manual_seed(seed)
            built.append(build_model(model_config, splits.input_shape, 10).to(device))
        return built

    together = train_batched(models(), splits, configs, seeds)
    alone = [train(m, splits, c, s) for m, c, s in zip(models(), configs, seeds, strict=True)]
    batched_epoch = statistics.median(
        max(r.history[e].metrics["time/epoch_s"] for r in together if isinstance(r, TrainResult))
        for e in range(1, epochs)
    )
    single_epoch = statistics.median(
        r.metrics["time/epoch_s"] for result in alone for r in result.history[1:]
    )
    gaps = [
        abs(b.history[-1].metrics["val/accuracy"] - a.history[-1].metrics["val/accuracy"])
        for b, a in zip(together, alone, strict=True)
        if isinstance(b, TrainResult)
    ]
    return {
        "members": members,
        "model_epochs_per_s": members / batched_epoch,
        "single_model_epochs_per_s": 1 / single_epoch,
        "ratio": members / batched_epoch * single_epoch,
        "max_val_acc_gap": max(gaps),
    }


def run(
    device: str,
    epochs: int,
    train_subset: int | None,
    models: list[str],
    members: int = 8,
    fast_paths: tuple[str, ...] = ("auto", "off"),
    studies: bool = True,
) -> dict[str, Any]:
    """All rows, and unless not ``studies`` the study throughput and batched trials, as the
    JSON ``--json`` writes."""
    resolved = resolve_device(device)
    results = [compare_model(name, resolved, epochs, train_subset, fast_paths) for name in models]
    if not studies:
        return {"results": results}
    return {
        "results": results,
        "study_throughput": study_throughput(resolved, epochs, train_subset, members),
        "batched_trials": _or_error(batched_trials, resolved, epochs, train_subset, members),
    }


def _or_error(part: Callable[..., dict], *args: Any) -> dict:
    """A part's figures, or the error that stopped it (the other parts' figures still print)."""
    try:
        return part(*args)
    except Exception as error:  # reported in the table and the JSON, not hidden
        return {"error": repr(error)}


def format_table(report: dict[str, Any]) -> str:
    """The printed table."""
    lines = [
        f"{'model':<6}{'device':<8}{'fast':<6}{'prec':<6}{'reference s/epoch':>19}"
        f"{'hptune s/epoch':>16}{'ratio':>8}{'ref acc':>9}{'hptune acc':>12}{'peak MB':>10}"
    ]
    for row in report["results"]:
        lines.append(
            f"{row['model']:<6}{row['device']:<8}{row['fast_paths']:<6}{row['precision']:<6}"
            f"{row['reference_epoch_s']:>19.3f}"
            f"{row['hptune_epoch_s']:>16.3f}{row['ratio']:>7.1f}x{row['reference_acc']:>9.4f}"
            f"{row['hptune_acc']:>12.4f}{row['peak_mem_mb']:>10.0f}"
        )
        if "hptune_eager_epoch_s" in row:
            lines.append(
                f"  {row['model']} without CUDA graphs: {row['hptune_eager_epoch_s']:.3f} s/epoch"
                f" ({row['reference_epoch_s'] / row['hptune_eager_epoch_s']:.1f}x the reference)"
            )
        if "hptune_fp32_epoch_s" in row:
            lines.append(
                f"  {row['model']} in fp32: {row['hptune_fp32_epoch_s']:.3f} s/epoch"
                f" ({row['reference_epoch_s'] / row['hptune_fp32_epoch_s']:.1f}x the reference),"
                f" acc {row['hptune_fp32_acc']:.4f}"
            )
        lines += _other_fast_paths(row)
    if "study_throughput" not in report:
        return "\n".join(lines)
    throughput = report["study_throughput"]
    lines.append(
        f"study throughput ({STUDY_TRIALS} trials): hptune {throughput['trial_epochs_per_s']:.2f}"
        f" trial-epochs/s, reference {throughput['reference_trial_epochs_per_s']:.2f}, "
        f"ratio {throughput['ratio']:.1f}x; with {throughput['workers']} workers: "
        f"{throughput['workers_trial_epochs_per_s']:.2f}, ratio {throughput['workers_ratio']:.1f}x;"
        f" Optuna + MLflow + setup {throughput['trial_overhead_pct']:.1f}% of trial wall time"
        f" ({throughput['trial_overhead_ms']:.0f} ms per trial)"
    )
    lines.append(
        f"study throughput, {BATCHES} batches of {throughput['batched_trials']} trials"
        f" (batch_trials {throughput['batched_trials']}):"
        f" {throughput['batched_trial_epochs_per_s']:.2f}"
        f" trial-epochs/s, ratio {throughput['batched_ratio']:.1f}x the reference;"
        f" Optuna + MLflow + setup {throughput['batched_overhead_pct']:.1f}% of the batches'"
        f" wall time ({throughput['batched_overhead_ms']:.0f} ms per trial)"
    )
    batched = report["batched_trials"]
    if "error" in batched:
        lines.append(f"batched trials failed: {batched['error']}")
        return "\n".join(lines)
    lines.append(
        f"batched trials ({batched['members']} MLPs as one stacked model): "
        f"{batched['model_epochs_per_s']:.2f} model-epochs/s vs "
        f"{batched['single_model_epochs_per_s']:.2f} one at a time, "
        f"ratio {batched['ratio']:.1f}x, largest val-accuracy gap {batched['max_val_acc_gap']:.4f}"
    )
    return "\n".join(lines)


def _other_fast_paths(row: dict[str, Any]) -> list[str]:
    """A line per other ``fast_paths`` setting of a row: its epoch time, ratio and accuracy."""
    lines = []
    for setting in ("auto", "off"):
        if f"hptune_{setting}_epoch_s" in row:
            seconds = row[f"hptune_{setting}_epoch_s"]
            reference = row[f"hptune_{setting}_reference_epoch_s"]
            lines.append(
                f"  {row['model']} with fast_paths {setting}"
                f" ({row[f'hptune_{setting}_precision']}): {seconds:.3f} s/epoch, reference"
                f" {reference:.3f} alternating with it: {reference / seconds:.1f}x,"
                f" acc {row[f'hptune_{setting}_acc']:.4f}"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--epochs", type=int, default=4, help="≥2: the first is a warm-up")
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp,cnn")
    parser.add_argument(
        "--members", type=int, default=8, help="trials in the batched runs (stacked, and a study)"
    )
    parser.add_argument(
        "--fast-paths",
        default="auto,off",
        help="train.fast_paths settings, comma-separated: the first beside the reference loop",
    )
    parser.add_argument(
        "--no-studies", action="store_true", help="skip the study throughput and batched trials"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is a warm-up)")
    fast_paths = tuple(args.fast_paths.split(","))
    if not set(fast_paths) <= {"auto", "off"} or len(set(fast_paths)) != len(fast_paths):
        parser.error("--fast-paths takes auto and/or off, comma-separated")
    own_process()  # hptune's own process: its process-wide tuning applies, as in the CLI
    flush_denormals()  # as hptune.optimize does, for both loops of this process
    report = run(
        args.device, args.epochs, args.train_subset, args.models.split(","), args.members,
        fast_paths, not args.no_studies,
    )  # fmt: skip
    print(format_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
