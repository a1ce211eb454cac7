"""The optimizer's update for ``FlatSteps``' one flat parameter, without ``Optimizer.step``.

On a CPU the eager step of a small model is short, and ``Optimizer.step`` is a large part of it
in Python alone: the profiling wrapper, the grad-mode switch, the capture health check, and
rebuilding the lists of parameters, gradients and states (``_init_group``) before it reaches the
one fused kernel. For B's MLP in bf16 on 2 CPU cores (an Intel Xeon) that wrapper took ~125 us
of a ~1.2 ms step, more than it takes alone, as the step's matrix products leave the
interpreter's caches cold.

``DirectStep`` takes the first step through ``optimizer.step()`` (which creates the state), then
calls the kernel the optimizer itself would call, with the optimizer's own state tensors and the
hyperparameters read from its param group at every step (a scheduler's new learning rate applies
at once): ``torch._fused_adam_`` / ``_fused_adamw_`` / ``_fused_adagrad_`` / ``_fused_sgd_`` for
the optimizers built with ``fused=True``, and plain SGD's ``add_``. The numbers are the
optimizer's bit for bit (``tests/test_optstep.py``, every optimizer hptune offers, with weight
decay and a scheduler). Anything else (other optimizers, several parameters or groups, hooks,
gradient scaling, tensor learning rates) keeps ``optimizer.step()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import optimizer as optimizer_module
from torch.optim.optimizer import Optimizer

from hptune import fastpaths
from hptune.fastpaths import GLOBAL_HOOKS, OPTIMIZER_HOOKS

Update = Callable[[], None]


def _hooked(optimizer: Optimizer) -> bool:
    """Whether step hooks (the optimizer's own or global ones) expect ``optimizer.step``. (The
    attributes are private: ``hptune.fastpaths`` probes them; if one is gone this raises, and
    ``DirectStep`` keeps ``optimizer.step``.)"""
    return any(
        len(getattr(holder, name))
        for holder, names in ((optimizer, OPTIMIZER_HOOKS), (optimizer_module, GLOBAL_HOOKS))
        for name in names
    )


def _grad(p: torch.Tensor) -> torch.Tensor:
    """The gradient the update reads: bound once, so it must stay the same tensor, written in
    place (``FlatSteps`` copies or computes every step's gradient into it). The parameter is
    updated through its detached alias (``p.detach()``, the same storage), which needs none of
    the grad-mode switch an in-place update of a leaf that requires grad would."""
    assert p.grad is not None
    return p.grad


def _adam(
    optimizer: Optimizer, group: dict[str, Any], p: torch.Tensor, state: dict[str, Any]
) -> Update:
    decoupled = isinstance(optimizer, torch.optim.AdamW) or group.get(
        "decoupled_weight_decay", False
    )
    kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
    params, grads = [p.detach()], [_grad(p)]
    exp_avgs, exp_avg_sqs = [state["exp_avg"]], [state["exp_avg_sq"]]
    maxima = [state["max_exp_avg_sq"]] if group["amsgrad"] else []
    steps = [state["step"]]

    def update() -> None:
        beta1, beta2 = group["betas"]
        steps[0].add_(1)
        kernel(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            maxima,
            steps,
            amsgrad=group["amsgrad"],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )

    return update


def _adagrad(
    optimizer: Optimizer, group: dict[str, Any], p: torch.Tensor, state: dict[str, Any]
) -> Update:
    params, grads, sums, steps = [p.detach()], [_grad(p)], [state["sum"]], [state["step"]]

    def update() -> None:
        steps[0].add_(1)
        torch._fused_adagrad_(
            params,
            grads,
            sums,
            steps,
            lr=group["lr"],
            lr_decay=group["lr_decay"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )

    return update


def _sgd(
    optimizer: Optimizer, group: dict[str, Any], p: torch.Tensor, state: dict[str, Any]
) -> Update | None:
    data, grad = p.detach(), _grad(p)
    if group["fused"]:
        if group["momentum"] == 0:
            return None
        params, grads, buffers = [data], [grad], [state["momentum_buffer"]]

        def fused() -> None:
            torch._fused_sgd_(
                params,
                grads,
                buffers,
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                lr=group["lr"],
                dampening=group["dampening"],
                nesterov=group["nesterov"],
                maximize=group["maximize"],
                is_first_step=False,
            )

        return fused
    if group["momentum"] != 0 or group["foreach"]:
        return None

    def plain() -> None:  # torch.optim.sgd._single_tensor_sgd without momentum
        g = -grad if group["maximize"] else grad
        if group["weight_decay"] != 0:
            g = g.add(data, alpha=group["weight_decay"])
        data.add_(g, alpha=-group["lr"])

    return plain


BINDERS: dict[type[Optimizer], Callable[..., Update | None]] = {
    torch.optim.Adam: _adam,
    torch.optim.AdamW: _adam,
    torch.optim.Adagrad: _adagrad,
    torch.optim.SGD: _sgd,
}


def bind(optimizer: Optimizer) -> Update | None:
    """The optimizer's update as a direct kernel call, or None where it keeps ``step()``.
    Call it after a first ``optimizer.step()``: it binds the state that step created."""
    binder = BINDERS.get(type(optimizer))
    if binder is None or _hooked(optimizer) or len(optimizer.param_groups) != 1:
        return None
    if getattr(optimizer, "grad_scale", None) is not None:
        return None
    if getattr(optimizer, "found_inf", None) is not None:
        return None
    group = optimizer.param_groups[0]
    if len(group["params"]) != 1 or isinstance(group["lr"], torch.Tensor):
        return None
    if group.get("differentiable") or group.get("capturable"):
        return None
    if binder is not _sgd and not group.get("fused"):
        return None
    p = group["params"][0]
    if p.grad is None or p.grad.is_sparse or p.is_complex() or p.device.type != "cpu":
        return None
    return binder(optimizer, group, p, optimizer.state[p])


class DirectStep:
    """Callable as ``optimizer.step()`` is, every call one update (see the module docstring).
    What it checks, it checks at the first call: step hooks registered later are not run.

    The direct kernel call is the ``direct_step`` fast path (``hptune.fastpaths``): where its
    probe fails, where binding raises, or where its first update raises (the parameter and the
    optimizer's state are then restored), ``optimizer.step()`` serves for the rest of the
    process."""

    def __init__(self, optimizer: Optimizer, fast: bool = True) -> None:
        self.optimizer = optimizer
        self.fast = fast
        self.update: Update | None = None

    def __call__(self) -> None:
        if self.update is not None:
            self.update()
            return
        self.optimizer.step()
        self.update = self.optimizer.step
        if self.fast and fastpaths.usable("direct_step"):
            try:
                bound = bind(self.optimizer)
            except Exception as error:
                fastpaths.fail("direct_step", error)
                return
            if bound is not None:
                self.update = self._first(bound)

    def _first(self, bound: Update) -> Update:
        """The first direct update, guarded: on any exception, what it changed is put back and
        ``optimizer.step()`` makes the update instead."""
        tensors = [p.detach() for group in self.optimizer.param_groups for p in group["params"]]
        for state in self.optimizer.state.values():
            tensors += [value for value in state.values() if isinstance(value, torch.Tensor)]

        def first() -> None:
            saved = [tensor.clone() for tensor in tensors]
            try:
                bound()
            except torch.OutOfMemoryError:
                raise
            except Exception as error:
                for tensor, value in zip(tensors, saved, strict=True):
                    tensor.copy_(value)
                fastpaths.fail("direct_step", error)
                self.update = self.optimizer.step
                self.optimizer.step()
                return
            fastpaths.note("direct_step")
            self.update = bound

        return first
