"""Training as a plain function: a model, device-resident data, settings, and a per-epoch callback.

``train`` plugs one model's training steps into the shared epoch driver (``hptune.epochs``):
replayed CUDA graphs, hptune's fast CPU steps (``hptune.flat``), or the plain autograd step
(``train_epoch``), which ``train.fast_paths: off`` and every model the fast steps do not take
use. Nothing here knows Optuna or MLflow. The hot loop never syncs with the host: losses and
correct counts accumulate on the device and are read once per epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hptune import fastpaths
from hptune.allocator import keep_freed_memory
from hptune.config import TrainConfig
from hptune.cudagraph import GraphedSteps, graph_options
from hptune.data import Splits
from hptune.device import compute_dtype, uses_channels_last, uses_cuda_graphs
from hptune.epochs import Diverged as Diverged
from hptune.epochs import EpochReport as EpochReport
from hptune.epochs import TrainResult as TrainResult
from hptune.epochs import run_epochs
from hptune.flat import FlatSteps
from hptune.gradients import members_gradient_stats, weight_layers
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


EpochCallback = Callable[[EpochReport], None]


def optimizer_options(
    name: str, device: torch.device, capturable: bool, fast: bool = True
) -> dict[str, Any]:
    """Constructor options: those of a CUDA graph when ``capturable``; on CPU with ``fast``
    (``train.fast_paths``), the fused kernel where the optimizer has one
    (``CPU_FUSED_OPTIMIZERS``) and its probe passed (``hptune.fastpaths``)."""
    if capturable:
        return graph_options(name)
    if (
        fast
        and device.type == "cpu"
        and name in CPU_FUSED_OPTIMIZERS
        and fastpaths.usable("fused_optimizer")
    ):
        fastpaths.note("fused_optimizer")
        return {"fused": True}
    return {}


def make_optimizer(
    params: Iterable[torch.Tensor], config: TrainConfig, capturable: bool = False
) -> torch.optim.Optimizer:
    """The configured optimizer over ``params``; ``capturable`` for a CUDA graph (optimizers
    with a step counter keep it on the device)."""
    factory = lookup(OPTIMIZERS, config.optimizer, "optimizer")
    params = list(params)
    fast = fastpaths.enabled(config.fast_paths)
    extra = optimizer_options(config.optimizer, params[0].device, capturable, fast)
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
    steps = OneModel(model, splits, config, seed)
    callback = None if on_epoch is None else lambda _, report: on_epoch(report)
    try:
        (outcome,) = run_epochs(steps, splits, 1, config.epochs, steps.scheduler, callback)
    finally:  # also when pruned or diverged: the model outlives the trial
        steps.release()
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


class OneModel:
    """One model's training steps for ``hptune.epochs.run_epochs`` (a single member, 0)."""

    def __init__(self, model: nn.Module, splits: Splits, config: TrainConfig, seed: int) -> None:
        self.model, self.splits, self.config = model, splits, config
        device = splits.train_x.device
        self.fast = fastpaths.enabled(config.fast_paths)
        if device.type == "cpu" and self.fast:
            keep_freed_memory()  # no page faults for the same blocks every step
        self.dtype = compute_dtype(config, device)
        if uses_channels_last(model, device, self.dtype, self.fast):
            model.to(memory_format=torch.channels_last)
        self.steps, self.optimizer = make_steps(model, splits, config, self.dtype, self.fast)
        self.scheduler = lookup(SCHEDULERS, config.scheduler, "scheduler")(
            self.optimizer, config.epochs
        )
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.eval_size = eval_batch_size(model, splits.val_x, self.dtype)
        self.layers = weight_layers(model)

    def epoch(self, active: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.splits.train_x, self.splits.train_y
        order = torch.randperm(len(x), device=x.device, generator=self.generator)
        if self.steps is not None:
            loss, correct = self.steps.epoch(order)
        else:
            loss, correct = train_epoch(
                self.model, self.optimizer, x, y, self.config.batch_size, order, self.dtype
            )
        return loss.view(1), correct.view(1)

    def evaluate(self, active: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        val_x, val_y = self.splits.val_x, self.splits.val_y
        loss, predictions = evaluate(
            self.model, val_x, val_y, self.eval_size, self.dtype, self.fast
        )
        return loss.view(1), predictions.unsqueeze(0)

    def gradients(self, active: list[int]) -> dict[str, torch.Tensor]:
        return members_gradient_stats([self.layers])

    def lr(self, member: int) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def release(self) -> None:
        """Give the model its own parameter memory back (``FlatSteps``)."""
        if isinstance(self.steps, FlatSteps):
            self.steps.release()


def make_steps(
    model: nn.Module,
    splits: Splits,
    config: TrainConfig,
    dtype: torch.dtype | None,
    fast: bool = True,
) -> tuple[GraphedSteps | FlatSteps | None, torch.optim.Optimizer]:
    """The fastest training steps that take ``model``, and their optimizer: replayed CUDA graphs,
    else with ``fast`` flat steps (``hptune.flat``), else None (``train_epoch``'s plain eager
    steps, also for models with buffers; bf16 under autocast)."""
    x, y, batch_size = splits.train_x, splits.train_y, config.batch_size
    if uses_cuda_graphs(config, x.device):
        optimizer = make_optimizer(model.parameters(), config, capturable=True)
        return GraphedSteps(model, optimizer, x, y, batch_size), optimizer
    if fast and FlatSteps.supports(model):
        images = splits.train_x_in(dtype)  # (each step then gathers bf16 rows: half the bytes)
        steps = FlatSteps(
            model, partial(make_optimizer, config=config), images, y, batch_size, dtype
        )
        return steps, steps.optimizer
    return None, make_optimizer(model.parameters(), config)


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
    fast: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and predicted classes over ``x`` in large batches (eval mode; by
    default ``eval_batch_size``'s); with ``dtype``, the forward under autocast to it (what
    training computes in), the loss in fp32. With ``fast`` (by default unless
    ``HPTUNE_FAST_PATHS=off``), CPU max-pooling in channels-last: the same numbers.
    """
    model.eval()
    if fast if fast is not None else fastpaths.enabled("auto"):
        model = fast_max_pool(model).eval()
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
