"""Batched trials train each member as if it ran alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hptune import data
from hptune.batched import can_batch, train_batched
from hptune.config import DataConfig, ModelConfig, TrainConfig
from hptune.gradients import gradient_stats, members_gradient_stats, weight_layers
from hptune.models import build_model
from hptune.training import Diverged, EpochReport, TrainResult, seed_everything, train

CPU = torch.device("cpu")


def member(seed: int, config: ModelConfig) -> torch.nn.Module:
    seed_everything(seed)  # the initialization a single trial with this seed gets
    return build_model(config, (1, 28, 28), 10)


@pytest.fixture
def splits(mnist_dir: Path) -> data.Splits:
    return data.load(DataConfig(dataset="mnist", val_fraction=0.2), CPU)


@pytest.mark.parametrize(
    ("optimizer", "shape"),
    [
        ("adam", ModelConfig(hidden_sizes=[32, 16])),
        ("sgd_momentum", ModelConfig(hidden_sizes=[32, 16])),
        ("rmsprop", ModelConfig(hidden_sizes=[32, 16])),
        # Experiment D's CNN (no dropout, whose masks would differ): alone, its max-pooling
        # runs in channels-last (hptune.pooling); batched, as nn.MaxPool2d under vmap.
        ("adam", ModelConfig(family="convnet", filters=8, neurons=16)),
    ],
    ids=["adam", "sgd_momentum", "rmsprop", "convnet-adam"],
)
def test_a_batched_member_matches_the_same_trial_run_alone(
    splits: data.Splits, optimizer: str, shape: ModelConfig
) -> None:
    configs = [
        TrainConfig(
            epochs=3,
            batch_size=32,
            optimizer=optimizer,
            lr=lr,
            scheduler="step",
            precision="fp32",  # bf16 rounds stacked and single matmuls differently
        )
        for lr in (0.01, 0.002)
    ]
    seeds = [3, 7]
    batched = train_batched([member(s, shape) for s in seeds], splits, configs, seeds)
    for result, config, seed in zip(batched, configs, seeds, strict=True):
        alone = train(member(seed, shape), splits, config, seed)
        assert isinstance(result, TrainResult)
        # Same init, data order, lr and schedule: the same curves, up to float rounding.
        for mine, reference in zip(result.history, alone.history, strict=True):
            for key in ("train/loss", "val/loss", "lr"):
                assert mine.metrics[key] == pytest.approx(reference.metrics[key], rel=1e-4)
            assert mine.metrics["val/accuracy"] == pytest.approx(
                reference.metrics["val/accuracy"], abs=0.011
            )


def test_a_stopped_member_leaves_and_the_others_go_on(splits: data.Splits) -> None:
    shape = ModelConfig(width=16, depth=1)
    configs = [TrainConfig(epochs=3, batch_size=32, lr=0.01)] * 3
    seen: list[tuple[int, int]] = []

    def on_epoch(index: int, report: EpochReport) -> None:
        seen.append((index, report.epoch))
        if index == 1 and report.epoch == 1:
            raise RuntimeError("pruned at epoch 1")

    results = train_batched(
        [member(s, shape) for s in range(3)], splits, configs, [0, 1, 2], on_epoch
    )
    # Member 1 reported once and ended with its exception; 0 and 2 trained all three epochs.
    assert isinstance(results[1], RuntimeError)
    assert [len(r.history) for r in (results[0], results[2])] == [3, 3]  # type: ignore[union-attr]
    assert sorted(seen) == [(0, 1), (0, 2), (0, 3), (1, 1), (2, 1), (2, 2), (2, 3)]


def test_a_diverging_member_fails_alone(splits: data.Splits) -> None:
    shape = ModelConfig(width=16, depth=1, activation="exponential")
    configs = [
        TrainConfig(epochs=2, batch_size=32, optimizer="sgd", lr=lr) for lr in (0.01, 1000.0)
    ]
    results = train_batched([member(s, shape) for s in (0, 1)], splits, configs, [0, 1])
    # lr 1000 overflows exp(); its loss is NaN, recorded as Diverged; lr 0.01 trains on.
    assert isinstance(results[1], Diverged)
    assert isinstance(results[0], TrainResult) and len(results[0].history) == 2


def test_members_must_share_optimizer_batch_epochs_and_scheduler() -> None:
    assert can_batch([TrainConfig(lr=0.1), TrainConfig(lr=0.001, weight_decay=0.1)])
    assert not can_batch([TrainConfig(optimizer="adam"), TrainConfig(optimizer="sgd")])
    with pytest.raises(ValueError, match="must share optimizer, batch_size"):
        train_batched([], None, [TrainConfig(), TrainConfig(epochs=2)], [0, 1])  # type: ignore[arg-type]


def test_bf16_members_train_like_bf16_trials_alone(fashion_mnist: Path) -> None:
    splits = data.load(DataConfig(train_subset=6000, test_subset=2000), CPU)
    shape = ModelConfig(hidden_sizes=[256, 128])
    seeds = [3, 7]
    results = {}
    for precision in ("fp32", "bf16"):
        configs = [
            TrainConfig(epochs=2, lr=lr, precision=precision)  # type: ignore[arg-type]
            for lr in (1e-3, 3e-3)
        ]
        results[precision] = train_batched(
            [member(s, shape) for s in seeds], splits, configs, seeds
        )
    members = zip(results["bf16"], results["fp32"], configs, seeds, strict=True)
    for result, fp32, config, seed in members:
        alone = train(member(seed, shape), splits, config, seed)
        assert isinstance(result, TrainResult) and isinstance(fp32, TrainResult)
        mine, reference = result.history[-1].metrics, alone.history[-1].metrics
        # Autocast took effect (bf16 rounding moved the loss) ...
        assert mine["train/loss"] != fp32.history[-1].metrics["train/loss"]
        # ... and the member learned what the trial alone learned, within bf16 rounding.
        assert mine["train/loss"] == pytest.approx(reference["train/loss"], rel=0.05)
        assert mine["val/accuracy"] == pytest.approx(reference["val/accuracy"], abs=0.02)


def test_members_gradient_stats_are_each_models_own() -> None:
    # One stacked computation for the batch gives what each model's own statistics give.
    models = [build_model(ModelConfig(width=8, depth=2), (1, 28, 28), 10) for _ in range(3)]
    layers = [weight_layers(model) for model in models]
    for k, model in enumerate(models):
        for p in model.parameters():
            p.grad = torch.randn_like(p) * (k + 1)
            p.grad[p.grad.abs() < 0.5] = 0  # some exact zeros, a different share per model
    together = members_gradient_stats(layers)
    for k, member in enumerate(layers):
        alone = gradient_stats(member)
        assert alone.keys() == together.keys() and len(alone) == 9
        for name, weight in member.items():
            grad = weight.grad
            assert grad is not None
            expected = {
                "mean_abs": grad.abs().mean(),
                "std": grad.std(),
                "zero_pct": (grad == 0).float().mean() * 100,
            }
            for stat, value in expected.items():
                key = f"weight_grad/{name}/{stat}"
                assert together[key][k].item() == pytest.approx(value.item(), rel=1e-6), key
                assert alone[key].item() == pytest.approx(value.item(), rel=1e-6), key
