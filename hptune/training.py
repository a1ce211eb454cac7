"""Training as a plain function: a model, device-resident data, settings, and a per-epoch callback.

Nothing here knows Optuna or MLflow. The hot loop never syncs with the host: losses and correct
counts accumulate on the device and are read once per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hptune.allocator import keep_freed_memory
from hptune.config import TrainConfig
from hptune.cudagraph import GraphedSteps, graph_options
from hptune.data import Splits
from hptune.device import compute_dtype, uses_channels_last, uses_cuda_graphs
from hptune.flat import FlatSteps
from hptune.gradients import gradient_stats, weight_layers
from hptune.metrics import macro_scores
from hptune.pooling import fast_max_pool
from hptune.registry import lookup

OptimizerFactory = Callable[..., torch.optim.Optimizer]

# Constructors take (params, lr=..., [weight_decay=...]); an unset weight decay keeps each
# optimizer's own default (AdamW's 0.01 differs from the others' 0).
OPTIMIZERS: dict[str, OptimizerFactory] = {
    "sgd": torch.optim.SGD,
    "sgd_momentum": partial(torch.optim.SGD, momentum=0.9),
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
}

SchedulerFactory = Callable[[torch.optim.Optimizer, int], Any]

# Stepped once per epoch; the factory gets the optimizer and the number of epochs (experiment B).
SCHEDULERS: dict[str, SchedulerFactory] = {
    "none": lambda optimizer, epochs: None,
    "step": lambda optimizer, epochs: torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=max(1, epochs // 3), gamma=0.1
    ),
    "cosine": lambda optimizer, epochs: torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=epochs
    ),
    "exponential": lambda optimizer, epochs: torch.optim.lr_scheduler.ExponentialLR(
        optimizer, gamma=0.9
    ),
}

EVAL_BATCH_SIZE = 2048
# On the CPU, evaluation batches are cut so each layer's output stays under this many bytes (in
# fp32; half that under bf16): glibc serves blocks up to 32 MiB from memory it keeps
# (hptune.allocator), while it maps each bigger one afresh and page-faults it in. A's CNN
# validated 10,000 images in 2.15 s at 2,048 per batch (1.2 million page faults) and in 1.38 s
# at 256 (none).
EVAL_CPU_BYTES = 32 * 2**20
# CPU optimizers with a fused kernel (one pass per parameter instead of one op per term): per
# step for B's MLP on 2 cores, Adam 242 -> 89 us, AdamW 253 -> 88, Adagrad 167 -> 70, SGD with
# momentum 70 -> 45 (plain SGD gains nothing; the others have no fused kernel).
CPU_FUSED_OPTIMIZERS = frozenset({"sgd_momentum", "adam", "adamw", "adagrad"})


class Diverged(Exception):
    """The loss became NaN or infinite: a result to record (a failed trial), not a crash."""


@dataclass(frozen=True)
class EpochReport:
    """One epoch's numbers under the stable metric keys (``train/loss``, ``val/accuracy``, ...)."""

    epoch: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class TrainResult:
    """Every epoch's report and the last epoch's validation predictions (host memory)."""

    history: list[EpochReport]
    val_predictions: np.ndarray


EpochCallback = Callable[[EpochReport], None]


def optimizer_options(name: str, device: torch.device, capturable: bool) -> dict[str, Any]:
    """Constructor options: those of a CUDA graph when ``capturable``; on CPU the fused kernel
    where the optimizer has one (``CPU_FUSED_OPTIMIZERS``)."""
    if capturable:
        return graph_options(name)
    return {"fused": True} if device.type == "cpu" and name in CPU_FUSED_OPTIMIZERS else {}


def make_optimizer(
    params: Iterable[torch.Tensor], config: TrainConfig, capturable: bool = False
) -> torch.optim.Optimizer:
    """The configured optimizer over ``params``; ``capturable`` for a CUDA graph (optimizers
    with a step counter keep it on the device)."""
    factory = lookup(OPTIMIZERS, config.optimizer, "optimizer")
    params = list(params)
    extra = optimizer_options(config.optimizer, params[0].device, capturable)
    if config.weight_decay is not None:
        extra["weight_decay"] = config.weight_decay
    return factory(params, lr=config.lr, **extra)


def seed_everything(seed: int) -> None:
    """Seed torch's CPU and CUDA generators (model initialization, dropout)."""
    torch.manual_seed(seed)


def train(
    model: nn.Module,
    splits: Splits,
    config: TrainConfig,
    seed: int,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``config.epochs`` epochs and return every epoch's report.

    ``on_epoch`` is called after each epoch and may raise (e.g. to prune) to stop training.

    Raises:
        Diverged: the training or validation loss stopped being finite.
    """
    device = splits.train_x.device
    if device.type == "cpu":
        keep_freed_memory()  # no page faults for the same blocks every step
    dtype = compute_dtype(config, device)
    if uses_channels_last(model, device, dtype):
        model.to(memory_format=torch.channels_last)
    x, y, batch_size = splits.train_x, splits.train_y, config.batch_size
    steps, optimizer = make_steps(model, splits, config, dtype)
    scheduler = lookup(SCHEDULERS, config.scheduler, "scheduler")(optimizer, config.epochs)
    generator = torch.Generator(device=device).manual_seed(seed)
    val_labels = splits.val_y.cpu().numpy()  # host copy once, for macro scores each epoch
    eval_size = eval_batch_size(model, splits.val_x, dtype)
    layers = weight_layers(model)
    history = []
    predictions = np.empty(0, dtype=np.int64)
    try:
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            order = torch.randperm(len(splits.train_x), device=device, generator=generator)
            if steps is not None:
                train_loss, train_correct = steps.epoch(order)
            else:
                train_loss, train_correct = train_epoch(
                    model, optimizer, x, y, batch_size, order, dtype
                )
            val_loss, val_predictions = evaluate(
                model, splits.val_x, splits.val_y, eval_size, dtype
            )
            report, predictions = epoch_report(
                epoch,
                splits,
                val_labels,
                lr,
                started,
                (train_loss, train_correct, val_loss, val_predictions),
                layers,
            )
            if scheduler is not None:
                scheduler.step()
            history.append(report)
            if on_epoch is not None:
                on_epoch(report)
    finally:  # also when pruned or diverged: the model outlives the trial
        if isinstance(steps, FlatSteps):
            steps.release()
    return TrainResult(history, predictions)


def make_steps(
    model: nn.Module, splits: Splits, config: TrainConfig, dtype: torch.dtype | None
) -> tuple[GraphedSteps | FlatSteps | None, torch.optim.Optimizer]:
    """The fastest training steps that take ``model``, and their optimizer: replayed CUDA graphs,
    else flat steps (``hptune.flat``), else None (``train_epoch``'s plain eager steps, for
    models with buffers; bf16 under autocast)."""
    x, y, batch_size = splits.train_x, splits.train_y, config.batch_size
    if uses_cuda_graphs(config, x.device):
        optimizer = make_optimizer(model.parameters(), config, capturable=True)
        return GraphedSteps(model, optimizer, x, y, batch_size), optimizer
    if FlatSteps.supports(model):
        images = splits.train_x_in(dtype)  # (each step then gathers bf16 rows: half the bytes)
        steps = FlatSteps(
            model, partial(make_optimizer, config=config), images, y, batch_size, dtype
        )
        return steps, steps.optimizer
    return None, make_optimizer(model.parameters(), config)


def epoch_report(
    epoch: int,
    splits: Splits,
    val_labels: np.ndarray,
    lr: float,
    started: float,
    outcome: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    layers: dict[str, torch.Tensor],
) -> tuple[EpochReport, np.ndarray]:
    """One epoch's metrics from its device tensors (train loss, train correct count, val loss,
    val predictions), read in one host sync; also the val predictions on the host.

    Raises:
        Diverged: the training or validation loss is not finite.
    """
    train_loss, train_correct, val_loss, val_predictions = outcome
    val_correct = (val_predictions == splits.val_y).sum()
    gradients = gradient_stats(layers)
    # The one host sync of the epoch (the predictions come along for macro-F1).
    numbers = torch.stack([train_loss, train_correct, val_loss, val_correct, *gradients.values()])
    values, predictions = numbers.tolist(), val_predictions.cpu().numpy()
    seconds = time.perf_counter() - started
    report = host_report(
        epoch, splits, val_labels, lr, seconds, values, list(gradients), predictions
    )
    return report, predictions


def host_report(
    epoch: int,
    splits: Splits,
    val_labels: np.ndarray,
    lr: float,
    seconds: float,
    values: list[float],
    gradient_names: list[str],
    predictions: np.ndarray,
) -> EpochReport:
    """The report from numbers on the host: train loss, train correct, val loss, val correct,
    then the gradient statistics named ``gradient_names``; ``seconds`` the epoch took.

    Raises:
        Diverged: the training or validation loss is not finite.
    """
    if not (math.isfinite(values[0]) and math.isfinite(values[2])):
        raise Diverged(f"loss is not finite at epoch {epoch} (train {values[0]}, val {values[2]})")
    return EpochReport(
        epoch,
        {
            "train/loss": values[0],
            "train/accuracy": values[1] / len(splits.train_y),
            "val/loss": values[2],
            "val/accuracy": values[3] / len(splits.val_y),
            **macro_scores(val_labels, predictions, len(splits.classes)),
            "lr": lr,
            "time/epoch_s": seconds,
            **dict(zip(gradient_names, values[4:], strict=True)),
        },
    )


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    order: torch.Tensor,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass in ``order``, the forward under autocast to ``dtype`` if given; returns (mean
    batch loss, correct count) as device tensors."""
    model.train()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, len(x), batch_size):
        index = order[start : start + batch_size]
        inputs, targets = x[index], y[index]
        with torch.autocast(x.device.type, dtype, enabled=dtype is not None):
            logits = model(inputs)
            loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(index)
        correct += (logits.detach().argmax(dim=1) == targets).sum()
    return loss_sum / len(x), correct


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and predicted classes over ``x`` in large batches (eval mode; by
    default ``eval_batch_size``'s); with ``dtype``, the forward under autocast to it (what
    training computes in), the loss in fp32.
    """
    model.eval()
    model = fast_max_pool(model).eval()  # the same numbers (CPU max-pooling in channels-last)
    if batch_size is None:
        batch_size = eval_batch_size(model, x, dtype)
    loss_sum = torch.zeros((), device=x.device)
    predictions = []
    for start in range(0, len(x), batch_size):
        with torch.autocast(x.device.type, dtype, enabled=dtype is not None):
            logits = model(x[start : start + batch_size])
        loss_sum += F.cross_entropy(logits.float(), y[start : start + batch_size], reduction="sum")
        predictions.append(logits.argmax(dim=1))
    return loss_sum / len(x), torch.cat(predictions)


@torch.no_grad()
def eval_batch_size(
    model: nn.Module, x: torch.Tensor, dtype: torch.dtype | None = None, members: int = 1
) -> int:
    """``EVAL_BATCH_SIZE``, or on the CPU as many samples as keep every layer's output under
    ``EVAL_CPU_BYTES`` in fp32, found by a forward pass of one sample (under autocast to
    ``dtype``, as ``evaluate`` computes): B's MLP keeps 2,048, A's CNN gets 227. ``members``
    models evaluated as one stacked model (``hptune.batched``) share the bound."""
    if x.device.type != "cpu":
        return EVAL_BATCH_SIZE
    largest = 0

    def measure(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output[0].numel() * 4)

    hooks = [module.register_forward_hook(measure) for module in model.modules()]
    mode = model.training
    model.eval()  # (in training mode, dropout would draw random numbers)
    try:
        with torch.autocast(x.device.type, dtype, enabled=dtype is not None):
            model(x[:1])
    finally:
        model.train(mode)
        for hook in hooks:
            hook.remove()
    return max(1, min(EVAL_BATCH_SIZE, EVAL_CPU_BYTES // (max(largest, 1) * members)))
