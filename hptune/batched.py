"""Batched trials: trials that share an architecture, trained together as one stacked model.

Each member keeps its own ``nn.Module`` (its parameters stay leaf tensors), its own optimizer
parameter group (learning rate, weight decay), its own data order (a generator seeded with its
seed) and its own initialization. Each step stacks the members' parameters and runs
``torch.func.vmap`` over ``functional_call``, so one batched kernel serves every member; the
sum of the members' losses back-propagates into each member's parameters separately. A member
whose callback raises (pruned) or whose loss diverges leaves the batch; the others go on.
On CUDA the batched step is replayed from a CUDA graph (``hptune.cudagraph``), captured again
when a member leaves. Plain torch: no Optuna, no MLflow here.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from hptune.allocator import keep_freed_memory
from hptune.config import TrainConfig
from hptune.cudagraph import CapturedStep
from hptune.data import Splits
from hptune.device import compute_dtype, uses_cuda_graphs
from hptune.gradients import members_gradient_stats, weight_layers
from hptune.registry import lookup
from hptune.training import (
    OPTIMIZERS,
    SCHEDULERS,
    EpochReport,
    TrainResult,
    eval_batch_size,
    host_report,
    optimizer_options,
)

MemberCallback = Callable[[int, EpochReport], None]

# What members must share to train as one stacked model (lr and weight decay may differ).
SHARED_FIELDS = ("optimizer", "batch_size", "epochs", "scheduler")


def can_batch(configs: Sequence[TrainConfig]) -> bool:
    """Whether these trials' training settings allow one stacked run."""
    return all(
        getattr(c, name) == getattr(configs[0], name) for c in configs for name in SHARED_FIELDS
    )


def train_batched(
    models: Sequence[nn.Module],
    splits: Splits,
    configs: Sequence[TrainConfig],
    seeds: Sequence[int],
    on_epoch: MemberCallback | None = None,
    epoch_scope: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
) -> list[TrainResult | BaseException]:
    """Train same-architecture ``models`` together; return each one's result or the exception
    that ended it (``Diverged``, or whatever ``on_epoch(member, report)`` raised to stop it).
    Each epoch's ``on_epoch`` calls run inside one ``epoch_scope()`` (``hptune.batchrun``: one
    storage snapshot for all of an epoch's pruning decisions).

    Interrupts (``KeyboardInterrupt``) are not caught.
    """
    if not can_batch(configs):
        raise ValueError(f"batched trials must share {', '.join(SHARED_FIELDS)}")
    first = configs[0]
    device = splits.train_x.device
    if device.type == "cpu":
        keep_freed_memory()
    graphed = uses_cuda_graphs(first, device)
    optimizer = _members_optimizer(models, configs, device, graphed)
    scheduler = lookup(SCHEDULERS, first.scheduler, "scheduler")(optimizer, first.epochs)
    generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    stacked = _Stacked(models)
    val_labels = splits.val_y.cpu().numpy()
    layers = [weight_layers(model) for model in models]
    histories: list[list[EpochReport]] = [[] for _ in models]
    outcomes: list[TrainResult | BaseException | None] = [None] * len(models)
    predictions: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(models)
    steps: _Steps | None = None
    for epoch in range(1, first.epochs + 1):
        active = [k for k, outcome in enumerate(outcomes) if outcome is None]
        if not active:
            break
        started = time.perf_counter()
        if steps is None or steps.active != active:
            steps = _Steps(stacked, optimizer, splits, first, active, graphed)
        losses, correct = steps.epoch(generators)
        val_losses, val_predictions = _evaluate(
            stacked, splits.val_x, splits.val_y, active, steps.dtype
        )
        gradients = members_gradient_stats([layers[k] for k in active])
        gradient_names = list(gradients)
        val_correct = (val_predictions == splits.val_y).sum(dim=1)
        # Every member's numbers in one host sync, as training.epoch_report does for one model.
        numbers = torch.stack([losses, correct, val_losses, val_correct, *gradients.values()], 1)
        rows, host_predictions = numbers.tolist(), val_predictions.cpu().numpy()
        seconds = time.perf_counter() - started  # the batch's epoch, not the members' logging
        with epoch_scope():
            for slot, k in enumerate(active):
                try:
                    predictions[k] = host_predictions[slot]
                    report = host_report(
                        epoch,
                        splits,
                        val_labels,
                        optimizer.param_groups[k]["lr"],
                        seconds,
                        rows[slot],
                        gradient_names,
                        predictions[k],
                    )
                    histories[k].append(report)
                    if on_epoch is not None:
                        on_epoch(k, report)
                except Exception as stop:  # pruned or diverged: this member leaves the batch
                    outcomes[k] = stop
        if scheduler is not None:
            scheduler.step()
    return [
        TrainResult(histories[k], predictions[k]) if outcome is None else outcome
        for k, outcome in enumerate(outcomes)
    ]


def _members_optimizer(
    models: Sequence[nn.Module],
    configs: Sequence[TrainConfig],
    device: torch.device,
    graphed: bool,
) -> torch.optim.Optimizer:
    """One optimizer over every member: a parameter group each, with the member's own learning
    rate and weight decay (its own state, as each parameter has)."""
    groups = [
        {
            "params": list(model.parameters()),
            "lr": config.lr,
            **({} if config.weight_decay is None else {"weight_decay": config.weight_decay}),
        }
        for model, config in zip(models, configs, strict=True)
    ]
    first = configs[0]
    options = optimizer_options(first.optimizer, device, capturable=graphed)
    return lookup(OPTIMIZERS, first.optimizer, "optimizer")(groups, lr=first.lr, **options)


class _Stacked:
    """The members' parameters stacked along a new first dimension, through one module."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        self.models = models
        self.names = [name for name, _ in models[0].named_parameters()]
        # A parameter-free copy gives functional_call the architecture.
        self.base = copy.deepcopy(models[0]).to("meta")
        # Built once: per member inputs (training) and inputs shared by all (evaluation).
        self.per_member, self.shared = (
            vmap(
                lambda p, inputs: functional_call(self.base, p, (inputs,)),
                in_dims=(0, in_dim),
                randomness="different",  # each member draws its own dropout masks
            )
            for in_dim in (0, None)
        )

    def parameters(self, members: Sequence[int]) -> dict[str, torch.Tensor]:
        owned = [dict(self.models[k].named_parameters()) for k in members]
        return {name: torch.stack([params[name] for params in owned]) for name in self.names}

    def forward(self, params: dict[str, torch.Tensor], x: torch.Tensor, shared: bool) -> Any:
        """Logits (members, batch, classes); ``shared`` inputs are the same for every member."""
        return (self.shared if shared else self.per_member)(params, x)


class _Steps:
    """Training epochs of one set of active members: (mean batch loss, correct count) each."""

    def __init__(
        self,
        stacked: _Stacked,
        optimizer: torch.optim.Optimizer,
        splits: Splits,
        config: TrainConfig,
        active: list[int],
        graphed: bool,
    ) -> None:
        self.stacked, self.optimizer, self.active = stacked, optimizer, active
        self.x, self.y, self.batch_size = splits.train_x, splits.train_y, config.batch_size
        device = self.x.device
        self.dtype = compute_dtype(config, device)
        self.loss_sum = torch.zeros(len(active), device=device)
        self.correct = torch.zeros(len(active), device=device, dtype=torch.long)
        index = torch.zeros((len(active), self.batch_size), dtype=torch.long, device=device)
        self.captured = CapturedStep(self._step, optimizer, index) if graphed else None

    def epoch(self, generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """One shuffled pass per active member, each in its own generator's order."""
        x = self.x
        self.stacked.base.train()
        orders = torch.stack(
            [torch.randperm(len(x), device=x.device, generator=generators[k]) for k in self.active]
        )
        self.loss_sum.zero_()
        self.correct.zero_()
        for start in range(0, len(x), self.batch_size):
            index = orders[:, start : start + self.batch_size]
            if self.captured is not None:
                self.captured(index)
            else:
                self.optimizer.zero_grad(set_to_none=True)
                self._step(index)
        return self.loss_sum / len(x), self.correct.clone()

    def _step(self, index: torch.Tensor) -> None:
        inputs, targets = self.x[index], self.y[index]
        stacked = self.stacked
        with torch.autocast(inputs.device.type, self.dtype, enabled=self.dtype is not None):
            logits = stacked.forward(stacked.parameters(self.active), inputs, shared=False)
            losses = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        losses = losses.view(len(self.active), -1).mean(dim=1)
        losses.sum().backward()  # member k's loss reaches only member k's parameters
        self.optimizer.step()
        self.loss_sum += losses.detach() * index.shape[1]
        self.correct += (logits.detach().argmax(dim=2) == targets).sum(dim=1)


@torch.no_grad()
def _evaluate(
    stacked: _Stacked,
    x: torch.Tensor,
    y: torch.Tensor,
    active: list[int],
    dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and predicted classes per active member, on shared inputs; the
    forward under autocast to ``dtype`` if given (as ``training.evaluate``)."""
    stacked.base.eval()
    params = {name: p.detach() for name, p in stacked.parameters(active).items()}
    loss_sum = torch.zeros(len(active), device=x.device)
    predictions = []
    size = eval_batch_size(stacked.models[0], x, dtype, members=len(active))
    for start in range(0, len(x), size):
        with torch.autocast(x.device.type, dtype, enabled=dtype is not None):
            logits = stacked.forward(params, x[start : start + size], shared=True)
        targets = y[start : start + size]
        losses = F.cross_entropy(
            logits.float().flatten(0, 1), targets.repeat(len(active)), reduction="none"
        )
        loss_sum += losses.view(len(active), -1).sum(dim=1)
        predictions.append(logits.argmax(dim=2))
    return loss_sum / len(x), torch.cat(predictions, dim=1)
