"""Flat-parameter steps: the same updates as per-parameter eager steps, in fp32 and in bf16."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from hptune import data
from hptune.config import DataConfig, ModelConfig, TrainConfig
from hptune.dropout import fast_dropout
from hptune.flat import FlatSteps
from hptune.models import build_model
from hptune.training import make_optimizer, seed_everything, train, train_epoch

CPU = torch.device("cpu")


def two_ways(
    splits: data.Splits,
    model_config: ModelConfig,
    config: TrainConfig,
    dtype: torch.dtype | None,
    layout: torch.memory_format = torch.contiguous_format,
    manual: bool = True,
) -> tuple[nn.Module, nn.Module]:
    """One epoch from the same seed and order: per-parameter eager steps (autocast for bf16),
    then flat steps (``manual``: gradients from ``ManualBackprop`` where it takes the model);
    both models in memory format ``layout``."""
    order = torch.randperm(len(splits.train_x), generator=torch.Generator().manual_seed(1))
    x, y, batch = splits.train_x, splits.train_y, config.batch_size
    seed_everything(0)
    eager = build_model(model_config, splits.input_shape, 10).to(memory_format=layout)
    seed_everything(0)
    flat_model = build_model(model_config, splits.input_shape, 10).to(memory_format=layout)
    seed_everything(2)  # dropout draws the same masks both ways (FlatSteps' fast masks)
    optimizer = make_optimizer(eager.parameters(), config)
    train_epoch(fast_dropout(eager), optimizer, x, y, batch, order, dtype)
    seed_everything(2)
    steps = FlatSteps(
        flat_model, lambda p: make_optimizer(p, config), x, y, batch, dtype, manual=manual
    )
    assert (steps.backprop is not None) == (manual and model_config.family == "mlp")
    steps.epoch(order)
    steps.release()
    return eager, flat_model


@pytest.mark.parametrize("manual", [True, False], ids=["manual-backprop", "autograd"])
@pytest.mark.parametrize(
    "optimizer", ["sgd", "sgd_momentum", "adam", "adamw", "nadam", "rmsprop", "adagrad", "adadelta"]
)
def test_flat_fp32_steps_update_as_per_parameter_steps(
    mnist_dir: Path, optimizer: str, manual: bool
) -> None:
    splits = data.load(DataConfig(dataset="mnist", val_fraction=0.2), CPU)
    config = TrainConfig(batch_size=16, optimizer=optimizer, lr=0.01, weight_decay=1e-3)
    model_config = ModelConfig(hidden_sizes=[32, 16])
    eager, flat_model = two_ways(splits, model_config, config, None, manual=manual)
    seed_everything(0)
    start = build_model(model_config, splits.input_shape, 10)
    for (name, a), b in zip(eager.named_parameters(), flat_model.parameters(), strict=True):
        assert not torch.equal(a, start.get_parameter(name))  # an epoch moved it
        # Every optimizer is elementwise: one flat tensor updates as the separate ones do.
        assert torch.equal(b, a), name


@pytest.mark.parametrize(
    ("model_config", "manual", "layout"),
    [
        (ModelConfig(hidden_sizes=[64, 32], dropout=0.2), True, torch.contiguous_format),
        (ModelConfig(hidden_sizes=[64, 32], dropout=0.2), False, torch.contiguous_format),
        (ModelConfig(family="cnn"), True, torch.contiguous_format),
        (ModelConfig(family="cnn"), True, torch.channels_last),  # how train() runs it in bf16
    ],
    ids=["mlp-manual-backprop", "mlp-autograd", "cnn", "cnn-channels-last"],
)
def test_bf16_compute_copy_matches_autocast(
    fashion_mnist: Path, model_config: ModelConfig, manual: bool, layout: torch.memory_format
) -> None:
    splits = data.load(DataConfig(train_subset=1024, test_subset=10), CPU)
    config = TrainConfig(batch_size=64, optimizer="adam")
    eager, flat_model = two_ways(
        splits, model_config, config, torch.bfloat16, layout, manual=manual
    )
    seed_everything(0)
    start = build_model(model_config, splits.input_shape, 10)
    for (name, a), b in zip(eager.named_parameters(), flat_model.parameters(), strict=True):
        assert b.dtype == torch.float32  # master weights stay fp32
        assert not torch.equal(a, start.get_parameter(name))  # an epoch moved it
        # bf16-rounded weights and inputs, the loss in fp32, fp32 gradients and update: the
        # same kernels on the same numbers as autocast, so the same weights bit for bit.
        assert torch.equal(b, a), name


def test_flat_steps_keep_a_channels_last_model_channels_last(mnist_dir: Path) -> None:
    # (CUDA trains convolutional models channels-last; without a CUDA graph, flat steps do.)
    splits = data.load(DataConfig(dataset="mnist", val_fraction=0.2), CPU)
    config = TrainConfig(batch_size=16)
    model = build_model(ModelConfig(family="cnn"), splits.input_shape, 10)
    model = model.to(memory_format=torch.channels_last)
    before = [p.detach().clone() for p in model.parameters()]
    steps = FlatSteps(
        model, lambda p: make_optimizer(p, config), splits.train_x, splits.train_y, 16
    )
    conv = model[2].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert conv.grad is not None and conv.grad.is_contiguous(memory_format=torch.channels_last)
    for p, value in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, value)  # the same values, now inside the flat buffer
    steps.release()
    eager, flat_model = two_ways(
        splits, ModelConfig(family="cnn"), config, None, torch.channels_last
    )
    for (name, a), b in zip(eager.named_parameters(), flat_model.parameters(), strict=True):
        assert torch.equal(b, a), name


def test_model_gets_its_own_parameters_and_last_gradients_back(mnist_dir: Path) -> None:
    splits = data.load(DataConfig(dataset="mnist", val_fraction=0.2), CPU)
    seed_everything(0)
    model = build_model(ModelConfig(hidden_sizes=[32]), splits.input_shape, 10)
    history = train(model, splits, TrainConfig(epochs=1, batch_size=16, precision="bf16"), 0)
    for p in model.parameters():
        # Each parameter owns exactly its memory again (not a view of one shared buffer) ...
        assert p.untyped_storage().nbytes() == p.numel() * p.element_size()
        assert p.dtype == torch.float32 and p.grad is not None
    # ... and the gradient statistics read the last batch's fp32 gradients through them.
    metrics = history.history[-1].metrics
    assert metrics["weight_grad/fc1/mean_abs"] == pytest.approx(
        model[1].weight.grad.abs().mean().item(), rel=1e-6
    )
    assert metrics["weight_grad/fc1/mean_abs"] > 0


def test_models_with_buffers_train_without_flat_steps(mnist_dir: Path) -> None:
    splits = data.load(DataConfig(dataset="mnist", val_fraction=0.2), CPU)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32), nn.Linear(32, 10))
    assert not FlatSteps.supports(model)
    assert FlatSteps.supports(build_model(ModelConfig(), splits.input_shape, 10))
    seen: set[torch.dtype] = set()
    model[1].register_forward_hook(
        lambda module, args, output: seen.add(output.dtype) if module.training else None
    )
    before = model[2].running_mean.clone()
    history = train(model, splits, TrainConfig(epochs=2, batch_size=16, precision="bf16"), 0)
    assert not torch.equal(model[2].running_mean, before)  # statistics of the model itself
    assert seen == {torch.bfloat16}  # bf16 all the same: the model itself under autocast
    assert history.history[-1].metrics["train/loss"] < history.history[0].metrics["train/loss"]
