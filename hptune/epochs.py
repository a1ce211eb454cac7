"""The epoch driver that every way of training shares: epochs, evaluation, metrics, callbacks.

A step implementation (``Members``) trains one or more members (one model in
``hptune.training.train``, a stack of same-architecture trials in ``hptune.batched``) for an
epoch, evaluates them and gives their gradient statistics, as device tensors with one value per
active member. ``run_epochs`` does the rest in one place: reads every member's numbers in one
host sync per epoch, builds each member's report under the stable metric keys, stops a member
whose loss is not finite (``Diverged``) or whose callback raised, and steps the scheduler.
Nothing here knows Optuna or MLflow.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from hptune.data import Splits
from hptune.metrics import macro_scores


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


MemberCallback = Callable[[int, EpochReport], None]


class Members(Protocol):
    """Training steps of one or more members; ``active`` lists the members still training, and
    each method's tensors hold one value (or row) per active member, in that order."""

    def epoch(self, active: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One shuffled pass each: (mean batch loss, correct count)."""
        ...

    def evaluate(self, active: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean validation loss, and predicted classes (members x validation samples)."""
        ...

    def gradients(self, active: list[int]) -> dict[str, torch.Tensor]:
        """The last batch's gradient statistics (``hptune.gradients``)."""
        ...

    def lr(self, member: int) -> float:
        """The member's learning rate this epoch."""
        ...


def run_epochs(
    steps: Members,
    splits: Splits,
    members: int,
    epochs: int,
    scheduler: Any,
    on_epoch: MemberCallback | None = None,
    epoch_scope: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
) -> list[TrainResult | Exception]:
    """Train ``members`` members for ``epochs`` epochs; return each one's result or the exception
    that ended it (``Diverged``, or whatever ``on_epoch(member, report)`` raised to stop it). Each
    epoch's ``on_epoch`` calls run inside one ``epoch_scope()``; ``scheduler`` (or None) steps
    once per epoch. Interrupts (``KeyboardInterrupt``) are not caught."""
    val_labels = splits.val_y.cpu().numpy()  # host copy once, for macro scores each epoch
    histories: list[list[EpochReport]] = [[] for _ in range(members)]
    outcomes: list[TrainResult | Exception | None] = [None] * members
    predictions: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * members
    for epoch in range(1, epochs + 1):
        active = [k for k, outcome in enumerate(outcomes) if outcome is None]
        if not active:
            break
        started = time.perf_counter()
        lrs = [steps.lr(k) for k in active]
        losses, correct = steps.epoch(active)
        val_losses, val_predictions = steps.evaluate(active)
        gradients = steps.gradients(active)
        val_correct = (val_predictions == splits.val_y).sum(dim=1)
        # The one host sync of the epoch, for every member (the predictions come for macro-F1).
        numbers = torch.stack([losses, correct, val_losses, val_correct, *gradients.values()], 1)
        rows, host_predictions = numbers.tolist(), val_predictions.cpu().numpy()
        seconds = time.perf_counter() - started  # the epoch, not the members' logging
        with epoch_scope():
            for slot, k in enumerate(active):
                try:
                    predictions[k] = host_predictions[slot]
                    report = host_report(
                        epoch, splits, val_labels, lrs[slot], seconds, rows[slot],
                        list(gradients), predictions[k],
                    )  # fmt: skip
                    histories[k].append(report)
                    if on_epoch is not None:
                        on_epoch(k, report)
                except Exception as stop:  # pruned or diverged: this member stops
                    outcomes[k] = stop
        if scheduler is not None:
            scheduler.step()
    return [
        TrainResult(histories[k], predictions[k]) if outcome is None else outcome
        for k, outcome in enumerate(outcomes)
    ]


def host_report(
    epoch: int,
    splits: Splits,
    val_labels: np.ndarray,
    lr: float,
    seconds: float,
    values: Sequence[float],
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
