"""Training steps captured in a CUDA graph and replayed for every full batch.

A small model's step is a few dozen short kernels; launched one by one from Python, the GPU
waits on the launches. Captured once (``torch.cuda.CUDAGraph``), a step is one replay: the
batch gather, forward, loss, backward, optimizer update and the running loss/correct sums.

Same arithmetic as the eager loop, every sample seen:
- the first ``WARMUP_STEPS`` batches train eagerly on a side stream (as PyTorch's whole-network
  capture recipe asks: lazy initialization, optimizer state), then the step is captured;
- a learning rate is a constant inside a captured graph, so when a scheduler changes it the
  step is captured again, once per epoch at most (a batch that loses a member builds a new
  ``CapturedStep`` for the new shapes);
- the last, partial batch of an epoch runs eagerly, accumulating into the graph's own gradient
  tensors, so nothing is dropped or padded.

Optimizers need ``capturable=True`` where they have that option (``GRAPH_OPTIMIZERS``); the
others (Adagrad) train eagerly. A step that cannot be captured (a user's model that syncs with the
host, say) trains eagerly for the rest of the trial: one warning line per reason and process, and
the reason on the trial's run (``hptune.cuda_graphs`` tag, through ``hptune.fastpaths``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hptune import fastpaths

log = logging.getLogger("hptune.cudagraph")
_warned: set[str] = set()  # reasons already said in this process

WARMUP_STEPS = 3

# Optimizers whose update can be captured (SGD has no step counter; the others take
# capturable=True, which keeps their step counter on the device).
GRAPH_OPTIMIZERS = frozenset(
    {"sgd", "sgd_momentum", "adam", "adamw", "nadam", "rmsprop", "adadelta"}
)


def graph_options(optimizer: str) -> dict[str, Any]:
    """Constructor options for an optimizer replayed from a CUDA graph: a step counter on the
    device (``capturable``), and for Adam/AdamW the fused kernel, one launch per parameter
    group instead of one per operation (H100, B's MLP: 0.119 -> 0.086 s/epoch; 64 batched
    MLPs: 4.07 -> 1.70 s/epoch; same accuracy within seed noise; examples/gpu_probes.py)."""
    if optimizer in ("sgd", "sgd_momentum"):
        return {}  # no step counter
    return {"capturable": True, **({"fused": True} if optimizer in ("adam", "adamw") else {})}


class CapturedStep:
    """``step(index)`` for index tensors of one shape, replayed from a CUDA graph.

    ``step`` must do the whole update (forward, backward, ``optimizer.step()``) and keep its
    results in tensors allocated outside it. The graph is captured again when the optimizer's
    learning rates change.
    """

    def __init__(
        self,
        step: Callable[[torch.Tensor], None],
        optimizer: torch.optim.Optimizer,
        index: torch.Tensor,
    ) -> None:
        self.step, self.optimizer, self.index = step, optimizer, index
        self.graph: torch.cuda.CUDAGraph | None = None
        self.captured_lrs: list[float] = []
        self.warm = 0
        self.eager_reason: str | None = None  # why this step could not be captured
        self.captures = self.replays = 0  # counted for tests and the benchmark
        self.side = torch.cuda.Stream(device=index.device)

    def __call__(self, index: torch.Tensor) -> None:
        """One step on a batch; a batch smaller than the captured shape runs eagerly."""
        if index.shape != self.index.shape or self.eager_reason is not None:
            # Zeroed in place: when a graph exists its gradient tensors stay the ones it writes.
            self.optimizer.zero_grad(set_to_none=False)
            self.step(index)
        elif self.warm < WARMUP_STEPS:
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                self.optimizer.zero_grad(set_to_none=True)
                self.step(index)
            torch.cuda.current_stream().wait_stream(self.side)
            self.warm += 1
        else:
            stale = self.graph is None or self._lrs() != self.captured_lrs
            if stale and not self._try_capture():
                self(index)  # eagerly, from now on
                return
            self.index.copy_(index)
            assert self.graph is not None
            self.graph.replay()
            self.replays += 1

    def _lrs(self) -> list[float]:
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def _try_capture(self) -> bool:
        """Capture the step; a step that cannot be captured makes this step eager instead."""
        try:
            self._capture()
        except torch.OutOfMemoryError:
            raise
        except Exception as error:
            reason = f"{type(error).__name__}: {error}".splitlines()[0]
            self.eager_reason, self.graph = reason, None
            self.optimizer.zero_grad(set_to_none=True)  # not the failed capture's tensors
            torch.cuda.synchronize(self.index.device)
            fastpaths.note_eager(reason)
            if reason not in _warned:
                _warned.add(reason)
                log.warning(
                    "hptune: this model's training step cannot be captured in a CUDA "
                    "graph (%s); it trains eagerly",
                    reason,
                )
            return False
        return True

    def _capture(self) -> None:
        pool = None if self.graph is None else self.graph.pool()
        graph = torch.cuda.CUDAGraph()
        # Gradients allocated inside the capture live in the graph's memory pool.
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph, pool=pool, stream=self.side):
            self.step(self.index)
        self.graph, self.captured_lrs = graph, self._lrs()
        self.captures += 1


class GraphedSteps:
    """Training epochs of one model over device-resident ``x``/``y`` with a fixed batch size."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
    ) -> None:
        self.model, self.x, self.y, self.batch_size = model, x, y, batch_size
        self.loss_sum = torch.zeros((), device=x.device)
        self.correct = torch.zeros((), dtype=torch.long, device=x.device)
        index = torch.zeros(batch_size, dtype=torch.long, device=x.device)
        self.captured = CapturedStep(self._step, optimizer, index)

    def epoch(self, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass in ``order``; (mean batch loss, correct count) as device tensors."""
        self.model.train()
        self.loss_sum.zero_()
        self.correct.zero_()
        for start in range(0, len(order), self.batch_size):
            self.captured(order[start : start + self.batch_size])
        return self.loss_sum / len(order), self.correct.clone()

    def _step(self, index: torch.Tensor) -> None:
        inputs, targets = self.x[index], self.y[index]
        logits = self.model(inputs)
        loss = F.cross_entropy(logits, targets)
        loss.backward()
        self.captured.optimizer.step()
        self.loss_sum += loss.detach() * len(index)
        self.correct += (logits.detach().argmax(dim=1) == targets).sum()
