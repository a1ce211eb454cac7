"""Eager training steps over one flat parameter buffer, with an optional bf16 compute copy.

Where no CUDA graph replays the step, a small model's step is mostly per-operation cost, not
arithmetic. Two changes cut operations without changing the arithmetic:

- **Flat parameters.** The model's parameters become views of one fp32 buffer and their
  gradients views of one fp32 gradient buffer, so the optimizer updates one tensor per step
  instead of one per weight and bias, and zeroing the gradients is one fill. Every optimizer
  hptune offers is elementwise, so one flat tensor updates exactly as the separate ones do.
- **A bf16 compute copy** (``dtype=torch.bfloat16``): forward and backward run on a bf16 copy
  of the model whose weights and gradients are views of one bf16 buffer each; per step one
  cast brings the gradients to the fp32 buffer and one cast the updated weights back. This is
  the arithmetic of ``torch.autocast`` for these models (each matmul on bf16-rounded weights
  and inputs, the loss in fp32, gradients cast to fp32 for an fp32 optimizer; B's MLP trains
  to the same accuracy bit for bit), with two casts per step instead of one per weight use and
  its backward. ``training.train`` passes the training images in bf16 too
  (``Splits.train_x_in``, a copy cast once per study): B's MLP 3-4% faster per epoch, as each
  step gathers half the bytes and casts nothing (the same numbers: rounding commutes with
  gathering). Models with buffers (batch-norm statistics would update in the copy only) keep
  autocast: ``FlatSteps.supports`` says which.

Measured on 2 CPU cores (AMD EPYC Zen 5, real Fashion-MNIST, one process alternating epochs,
``python examples/cpu_probes.py``): B's MLP 0.485 -> 0.421 s/epoch in bf16 and 0.660 -> 0.625
in fp32, the same validation accuracy to the last digit; A's CNN (10,000 images) 3.54 -> 3.44 s
in bf16, 5.70 -> 5.68 in fp32. ``tests/test_flat.py`` checks that both ways give the same
weights bit for bit (fp32 for every optimizer; bf16 against autocast, MLP and CNN).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hptune import fastpaths
from hptune.backprop import ManualBackprop
from hptune.dropout import fast_dropout, plain_dropout
from hptune.optstep import DirectStep
from hptune.pooling import fast_max_pool

OptimizerFactory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]


def _dense(p: torch.Tensor) -> bool:
    return p.is_contiguous() or (
        p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
    )


def _point_into(params: list[nn.Parameter], weights: torch.Tensor, grads: torch.Tensor) -> None:
    """Make each parameter and its gradient a view of the flat ``weights`` and ``grads``, laid
    out as the parameter is (a channels-last convolution weight stays channels-last)."""
    offset = 0
    for p in params:
        shape, stride = p.shape, p.stride()
        # Autograd accumulates into an existing gradient in place, so the views stay.
        p.data = weights.as_strided(shape, stride, offset)
        p.grad = grads.as_strided(shape, stride, offset)
        offset += p.numel()


class FlatSteps:
    """Training epochs of one model over device-resident ``x``/``y``; the model's parameters
    are views of ``master`` (fp32) until ``release``.

    ``make_optimizer`` gets ``[master]``; the optimizer is ``self.optimizer`` (for schedulers).
    With ``manual`` (the default), a model ``ManualBackprop`` takes gets its gradients from it
    instead of autograd: the same numbers, fewer operations (the ``manual_backprop`` fast path:
    if it raises, autograd computes that step and every later one). Dropout draws its masks with
    ``hptune.dropout.dropout_mask`` either way, and CPU max-pooling runs in channels-last
    (``hptune.pooling``).
    """

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether ``FlatSteps`` can train ``model``: dense fp32 parameters on one device, no
        buffers."""
        params = list(model.parameters())
        return (
            bool(params)
            and not list(model.buffers())
            and all(
                p.dtype == torch.float32 and p.device == params[0].device and _dense(p)
                for p in params
            )
        )

    def __init__(
        self,
        model: nn.Module,
        make_optimizer: OptimizerFactory,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        dtype: torch.dtype | None = None,
        manual: bool = True,
    ) -> None:
        assert self.supports(model), (
            "FlatSteps needs dense fp32 parameters on one device, no buffers"
        )
        self.model, self.x, self.y, self.batch_size = model, x, y, batch_size
        self.dtype = dtype
        self.params = list(model.parameters())
        total = sum(p.numel() for p in self.params)
        flat = torch.empty(total, device=self.params[0].device)
        values = [p.detach() for p in self.params]
        self.master = nn.Parameter(flat)
        self.master.grad = torch.zeros_like(flat)
        _point_into(self.params, flat, self.master.grad)
        for p, value in zip(self.params, values, strict=True):
            p.data.copy_(value)
        self.optimizer = make_optimizer([self.master])
        self.update = DirectStep(self.optimizer)  # its step() without the wrapper, bit for bit
        fastpaths.note("flat_steps")
        if dtype is None:
            self.compute, self.weights, self.grads = model, None, self.master.grad
        else:
            self.compute = copy.deepcopy(model).to(dtype)
            self.weights = flat.detach().to(dtype)
            self.grads = torch.zeros_like(self.weights)
            _point_into(list(self.compute.parameters()), self.weights, self.grads)
        self.backprop = (
            ManualBackprop(self.compute)
            if manual
            and ManualBackprop.supports(self.compute)
            and fastpaths.usable("manual_backprop")
            else None
        )
        # Autograd's model: dropout with hptune.dropout's masks (as ManualBackprop draws them),
        # CPU max-pooling in channels-last; it shares every other layer with ``compute``.
        self.autograd_model = fast_max_pool(fast_dropout(self.compute))
        if any(plain_dropout(layer) for layer in self.compute.modules()):
            fastpaths.note("mask_dropout")
        self.loss_sum = torch.zeros((), device=x.device)

    def epoch(self, order: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass in ``order``; (mean batch loss, correct count) as device tensors."""
        self.autograd_model.train()
        self.loss_sum.zero_()
        # The labels in this epoch's order, gathered once; each step writes its predictions into
        # one buffer, compared once at the end (per step: a slice instead of a gather, one op
        # instead of four).
        targets = self.y.index_select(0, order)
        predicted = torch.empty_like(targets)
        for start in range(0, len(order), self.batch_size):
            stop = start + self.batch_size
            self._step(order[start:stop], targets[start:stop], predicted[start:stop])
        return self.loss_sum / len(order), (predicted == targets).sum()

    def _step(self, index: torch.Tensor, targets: torch.Tensor, predicted: torch.Tensor) -> None:
        inputs = self.x.index_select(0, index)
        if self.dtype is not None:
            inputs = inputs.to(self.dtype)  # nothing to do for images given in the dtype
        if self.backprop is not None:  # overwrites every gradient: nothing to zero
            loss, logits = fastpaths.call(
                "manual_backprop", self.backprop.step, self._autograd, inputs, targets
            )
        else:
            loss, logits = self._autograd(inputs, targets)
        if self.weights is not None:
            self.master.grad.copy_(self.grads)  # type: ignore[union-attr]
        self.update()
        if self.weights is not None:
            self.weights.copy_(self.master.detach())
        self.loss_sum.add_(loss.detach(), alpha=len(index))
        torch.argmax(logits.detach(), dim=1, out=predicted)

    def _autograd(
        self, inputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and logits of a step whose gradients autograd computes into ``self.grads``."""
        logits = self.autograd_model(inputs)
        loss = F.cross_entropy(logits.float(), targets)
        self.grads.zero_()
        loss.backward()
        return loss, logits

    def release(self) -> None:
        """Give the model's parameters (and last gradients) their own memory again."""
        for p in self.params:
            p.data = p.data.clone()
            if p.grad is not None:
                p.grad = p.grad.clone()
