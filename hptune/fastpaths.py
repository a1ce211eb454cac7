"""hptune's fast training paths: the switch, every private PyTorch call they make, and fallback.

``train.fast_paths: auto`` (the default) lets hptune's CPU training take the paths in
``FAST_PATHS``; ``off``, or ``HPTUNE_FAST_PATHS=off`` in the environment (an operator's switch,
which wins over the study file), trains as plain PyTorch does: ``model(x)``, ``loss.backward()``,
``optimizer.step()``, ``nn.Dropout``, ``nn.MaxPool2d``, autocast for bf16, and no malloc or
garbage-collector tuning. CUDA graphs keep their own switch (``train.cuda_graphs``).

Some fast paths call underscore-named (private) PyTorch symbols, which a PyTorch release may
rename or change. Each such path is listed here with the symbols it calls and the public
behaviour it replaces. Before its first use a path's ``probe`` checks that what it calls exists,
and its calls go through ``call`` (or a guard of the same kind where state must be restored):
any exception turns that path off for the rest of the process, with one warning line naming the
path and the reason, and the step runs the plain way. A fast path's failure never fails a
trial. The fast paths a trial used are recorded (``note``) for its MLflow run's
``hptune.fast_paths`` tag (``trial_tags``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from hptune.allocator import FAST_PATHS_ENV as ENV
from hptune.errors import HptuneError

TAG = "hptune.fast_paths"
log = logging.getLogger("hptune.fastpaths")
T = TypeVar("T")

aten = torch.ops.aten
# The ATen kernels hptune.backprop calls (autograd's formulas for the MLP's layers and loss).
BACKPROP_KERNELS = (
    "threshold_backward",
    "leaky_relu_backward",
    "elu_backward",
    "gelu_backward",
    "tanh_backward",
    "sigmoid_backward",
    "softplus_backward",
    "hardsigmoid_backward",
    "nll_loss_forward",
    "nll_loss_backward",
    "_log_softmax_backward_data",
)
POOLING_KERNELS = ("max_pool2d_with_indices", "max_pool2d_with_indices_backward")
FUSED_KERNELS = ("_fused_adam_", "_fused_adamw_", "_fused_adagrad_", "_fused_sgd_")
GLOBAL_HOOKS = ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")
OPTIMIZER_HOOKS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks")
CPU_BF16_CHECKS = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def _probe_direct_step() -> None:
    from torch.optim import optimizer as optimizer_module

    for name in FUSED_KERNELS:
        getattr(torch, name)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    for holder, names in ((optimizer_module, GLOBAL_HOOKS), (optimizer, OPTIMIZER_HOOKS)):
        for name in names:
            len(getattr(holder, name))  # a mapping of hooks, or this raises


def _probe_manual_backprop() -> None:
    for name in BACKPROP_KERNELS:
        getattr(aten, name)


def _probe_onednn_linear() -> None:
    torch.ops.mkldnn._linear_pointwise  # noqa: B018 (a missing op raises)
    torch.ops.mkldnn._is_mkldnn_bf16_supported  # noqa: B018


def _probe_max_pool() -> None:
    for name in (*POOLING_KERNELS, "threshold_backward"):
        getattr(aten, name)


def _probe_cpu_bf16() -> None:
    for name in CPU_BF16_CHECKS:
        getattr(torch.cpu, name)


def _probe_fused_optimizer() -> None:
    """One fused step of each CPU optimizer hptune builds with ``fused=True``."""
    for factory in (torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad):
        weight = torch.zeros(2, requires_grad=True)
        weight.grad = torch.ones(2)
        factory([weight], lr=0.1, fused=True).step()
    weight = torch.zeros(2, requires_grad=True)
    weight.grad = torch.ones(2)
    torch.optim.SGD([weight], lr=0.1, momentum=0.9, fused=True).step()


@dataclass(frozen=True)
class FastPath:
    """A fast path: where it lives, the public behaviour it replaces (its fallback), the private
    PyTorch symbols it calls, and the probe that checks them before the first use."""

    module: str
    replaces: str
    private: tuple[str, ...]
    probe: Callable[[], None] | None = None


FAST_PATHS: dict[str, FastPath] = {
    "flat_steps": FastPath(
        "hptune.flat",
        "the model's own parameters, one optimizer update per weight and bias",
        (),
    ),
    "fused_optimizer": FastPath(
        "hptune.training",
        "the optimizer's default (foreach) update on the CPU, without fused=True",
        (),
        _probe_fused_optimizer,
    ),
    "direct_step": FastPath(
        "hptune.optstep",
        "optimizer.step()",
        (
            *(f"torch.{name}" for name in FUSED_KERNELS),
            *(f"torch.optim.optimizer.{name}" for name in GLOBAL_HOOKS),
            *(f"torch.optim.Optimizer.{name}" for name in OPTIMIZER_HOOKS),
        ),
        _probe_direct_step,
    ),
    "manual_backprop": FastPath(
        "hptune.backprop",
        "loss.backward() (autograd)",
        tuple(f"torch.ops.aten.{name}" for name in BACKPROP_KERNELS),
        _probe_manual_backprop,
    ),
    "onednn_linear": FastPath(
        "hptune.backprop",
        "torch.addmm for a linear layer's forward in bf16",
        ("torch.ops.mkldnn._linear_pointwise", "torch.ops.mkldnn._is_mkldnn_bf16_supported"),
        _probe_onednn_linear,
    ),
    "mask_dropout": FastPath("hptune.dropout", "nn.Dropout", ()),
    "channels_last_max_pool": FastPath(
        "hptune.pooling",
        "nn.MaxPool2d (and the nn.ReLU before it)",
        tuple(f"torch.ops.aten.{name}" for name in (*POOLING_KERNELS, "threshold_backward")),
        _probe_max_pool,
    ),
    "cpu_bf16_detection": FastPath(
        "hptune.device",
        "precision: auto computes in fp32 on the CPU (PyTorch has no public check)",
        tuple(f"torch.cpu.{name}" for name in CPU_BF16_CHECKS),
        _probe_cpu_bf16,
    ),
}

_failed: dict[str, str] = {}  # path -> why it is off in this process
_probed: set[str] = set()
_used: set[str] = set()  # paths the current trial used


def enabled(setting: str) -> bool:
    """Whether fast paths are on for ``train.fast_paths`` = ``setting``; ``HPTUNE_FAST_PATHS=off``
    wins over it.

    Raises:
        HptuneError: ``HPTUNE_FAST_PATHS`` is set to something other than auto or off.
    """
    override = os.environ.get(ENV, "").strip().lower()
    if override not in ("", "auto", "off"):
        raise HptuneError(f"{ENV} must be auto or off, but got {ENV}={os.environ[ENV]!r}")
    return override != "off" and setting == "auto"


def usable(name: str) -> bool:
    """Whether path ``name`` may be taken: not failed in this process, and its probe (run once)
    passed; a failing probe turns it off with a warning."""
    if name in _failed:
        return False
    if name not in _probed:
        _probed.add(name)
        probe = FAST_PATHS[name].probe
        try:
            if probe is not None:
                probe()
        except Exception as error:
            fail(name, error)
            return False
    return True


def fail(name: str, error: BaseException) -> None:
    """Turn path ``name`` off for the rest of the process; one warning line the first time."""
    if name in _failed:
        return
    reason = f"{type(error).__name__}: {error}".splitlines()[0]
    _failed[name] = reason
    log.warning(
        "hptune fast path %s is off for this process (%s); using %s instead",
        name,
        reason,
        FAST_PATHS[name].replaces,
    )


def failed() -> dict[str, str]:
    """The paths turned off in this process, with the reason."""
    return dict(_failed)


def call(name: str, fast: Callable[..., T], plain: Callable[..., T], *args: Any) -> T:
    """``fast(*args)``, or ``plain(*args)`` once path ``name`` has failed; an exception in
    ``fast`` (other than running out of memory) turns it off and runs ``plain`` instead.

    ``fast`` must change nothing before it raises that ``plain`` would not redo."""
    if name not in _failed:
        try:
            result = fast(*args)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:
            fail(name, error)
        else:
            _used.add(name)
            return result
    return plain(*args)


def note(name: str) -> None:
    """Record that the current trial used path ``name``."""
    _used.add(name)


def start_trial() -> None:
    """Forget the paths recorded so far: a new trial starts."""
    _used.clear()


def trial_tags() -> dict[str, str]:
    """The trial run's tag listing the fast paths it used (``none`` for plain PyTorch only)."""
    return {TAG: ",".join(sorted(_used)) or "none"}
