"""Batched trials: trials that share an architecture, trained together as one stacked model.

Each member keeps its own ``nn.Module`` (its parameters stay leaf tensors), its own optimizer
parameter group (learning rate, weight decay), its own data order (a generator seeded with its
seed) and its own initialization. Each step stacks the members' parameters and runs
``torch.func.vmap`` over ``functional_call``, so one batched kernel serves every member; the
sum of the members' losses back-propagates into each member's parameters separately. The epochs
are ``hptune.epochs.run_epochs``'s, as for one model: a member whose callback raises (pruned)
or whose loss diverges leaves the batch; the others go on.
On CUDA the batched step is replayed from a CUDA graph (``hptune.cudagraph``), captured again
when a member leaves. Plain torch: no Optuna, no MLflow here.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from hptune import fastpaths
from hptune.allocator import keep_freed_memory
from hptune.config import TrainConfig
from hptune.cudagraph import CapturedStep
from hptune.data import Splits
from hptune.device import compute_dtype, uses_cuda_graphs
from hptune.epochs import MemberCallback, TrainResult, run_epochs
from hptune.gradients import members_gradient_stats, weight_layers
from hptune.registry import lookup
from hptune.training import OPTIMIZERS, SCHEDULERS, eval_batch_size, optimizer_options

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
) -> list[TrainResult | Exception]:
    """Train same-architecture ``models`` together; return each one's result or the exception
    that ended it (``Diverged``, or whatever ``on_epoch(member, report)`` raised to stop it).
    Each epoch's ``on_epoch`` calls run inside one ``epoch_scope()`` (``hptune.batchrun``: one
    storage snapshot for all of an epoch's pruning decisions).

    Interrupts (``KeyboardInterrupt``) are not caught.
    """
    if not can_batch(configs):
        raise ValueError(f"batched trials must share {', '.join(SHARED_FIELDS)}")
    first = configs[0]
    batch = _Batch(models, splits, configs, seeds)
    scheduler = lookup(SCHEDULERS, first.scheduler, "scheduler")(batch.optimizer, first.epochs)
    return run_epochs(batch, splits, len(models), first.epochs, scheduler, on_epoch, epoch_scope)


class _Batch:
    """The members' training steps for ``hptune.epochs.run_epochs``: one stacked model, whose
    steps are built again when a member leaves."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        splits: Splits,
        configs: Sequence[TrainConfig],
        seeds: Sequence[int],
    ) -> None:
        first = configs[0]
        device = splits.train_x.device
        fast = fastpaths.enabled(first.fast_paths)
        if device.type == "cpu" and fast:
            keep_freed_memory()
        self.splits, self.config = splits, first
        self.dtype = compute_dtype(first, device)
        self.graphed = uses_cuda_graphs(first, device)
        self.optimizer = _members_optimizer(models, configs, device, self.graphed, fast)
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        self.stacked = _Stacked(models)
        self.layers = [weight_layers(model) for model in models]
        self.steps: _Steps | None = None

    def epoch(self, active: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.steps is None or self.steps.active != active:
            self.steps = _Steps(
                self.stacked, self.optimizer, self.splits, self.config, active, self.graphed
            )
        return self.steps.epoch(self.generators)

    def evaluate(self, active: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return _evaluate(self.stacked, self.splits.val_x, self.splits.val_y, active, self.dtype)

    def gradients(self, active: list[int]) -> dict[str, torch.Tensor]:
        return members_gradient_stats([self.layers[k] for k in active])

    def lr(self, member: int) -> float:
        return float(self.optimizer.param_groups[member]["lr"])


def _members_optimizer(
    models: Sequence[nn.Module],
    configs: Sequence[TrainConfig],
    device: torch.device,
    graphed: bool,
    fast: bool = True,
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
    options = optimizer_options(first.optimizer, device, graphed, fast)
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
