"""Max-pooling on the CPU, computed in channels-last memory format: the same numbers, less time.

aten's CPU max-pool kernel for NCHW tensors works one plane at a time, scalar; its
channels-last kernel is vectorized across channels. On experiment A's CNN (64 x 64 x 24 x 24
bf16 per step, 2 AMD EPYC Zen 5 cores) the forward takes ~6.3 ms in NCHW; the conversion to
channels-last, the pooling and the conversion back take ~0.9 ms. Both kernels scan each window
in the same order and keep the first maximum (NaN counts as the maximum), so the values and the
indices are equal, and so is the gradient: ``_ChannelsLastMaxPool`` routes it back through the
NCHW backward kernel with those indices (~0.5 ms; autograd's own route through the two layout
conversions would take ~3 ms). ``tests/test_pooling.py`` checks values and gradients bit for bit.

``fast_max_pool`` puts ``ChannelsLastMaxPool2d`` in the models hptune's eager CPU steps train
(``hptune.flat.FlatSteps``) and evaluate (``hptune.training.evaluate``); the models that trials
log and export keep ``nn.MaxPool2d``. CUDA keeps aten's kernels (its convolutional models run
in channels-last already).

A model in channels-last (CPU bf16 training: ``hptune.device.uses_channels_last``) pools in
its own layout, but its gradient comes back through ``Flatten`` in NCHW, and aten's backward
kernel works in the gradient's layout: it copied the input's gradient to NCHW and back (two
64 x 64 x 24 x 24 copies per step of A's CNN). Giving it the gradient in channels-last (a copy
a quarter that size) made A's CNN epoch 1.24x faster in bf16 (1.602 -> 1.290 s on 6,400 images,
2-core Intel Xeon, alternating epochs), with the same weights.

A ``ReLU`` right before the pooling goes into it (``ChannelsLastMaxPool2d(pool, relu=True)``):
the forward is the same (ReLU, then pooling), but ReLU's backward runs on the pooled gradient,
before the scatter, instead of on the full-size gradient after it. Each pooled value came from
its window's maximum, so "ReLU's output there was positive" is "the pooled value is positive":
the same gradient bit for bit (ties, NaNs and overlapping windows included; tested), with the
largest elementwise pass of the backward 4x smaller. Alternating epochs on the Xeon (bf16, the
same weights): A's CNN 1.136 -> 1.075 s on 6,400 images, experiment D's 2-block ConvNet 0.807
-> 0.762 s and its 1-block baseline 0.653 -> 0.604 s on 12,800. (Pooling before the ReLU, which
gives the same numbers too, was mixed: the ConvNet 6% faster, A's CNN 3% slower.)
"""

from __future__ import annotations

from typing import Any, TypeGuard

import torch
import torch.nn.functional as F
from torch import nn

from hptune import fastpaths

aten = torch.ops.aten
CHANNELS_LAST = torch.channels_last
PATH = "channels_last_max_pool"  # the fast path (hptune.fastpaths): its kernels are private


def _pair(value: int | tuple[int, ...]) -> list[int]:
    """A window setting as [height, width] (``nn.MaxPool2d`` takes an int for both)."""
    return [value, value] if isinstance(value, int) else list(value)


class _ChannelsLastMaxPool(torch.autograd.Function):
    """Max-pooling of a CPU ``x`` (of ``relu(x)`` when ``relu``) through the channels-last
    kernel, in ``x``'s layout (NCHW or channels-last) out; the gradient goes back in that layout
    too."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, relu: bool, *window: Any) -> torch.Tensor:
        if relu:
            x = torch.relu(x)
        out, indices = aten.max_pool2d_with_indices(
            x.contiguous(memory_format=CHANNELS_LAST), *window
        )
        # The indices count positions within each plane, so they hold in either layout.
        ctx.layout = torch.contiguous_format if x.is_contiguous() else CHANNELS_LAST
        out = out.contiguous(memory_format=ctx.layout)
        ctx.save_for_backward(x, indices.contiguous(memory_format=ctx.layout), out)
        ctx.relu, ctx.window = relu, window
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_input = fastpaths.call(PATH, _fast_backward, _plain_backward, ctx, grad)
        return (grad_input, None, *[None] * len(ctx.window))


def _fast_backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
    """The input's gradient through aten's NCHW backward kernel, with the forward's indices."""
    x, indices, out = ctx.saved_tensors
    # aten's backward kernel works in the gradient's layout and converts the rest to it.
    # A channels-last model's gradient arrives NCHW from Flatten: in NCHW the kernel would
    # copy the input's gradient (64 x 64 x 24 x 24 for A's CNN) into NCHW and back.
    grad = grad.contiguous(memory_format=ctx.layout)
    if ctx.relu:
        # ReLU's backward before the scatter, on the 4x smaller pooled gradient: each value
        # lands where its window's maximum was, and that maximum is the pooled value.
        grad = aten.threshold_backward(grad, out, 0)
    return aten.max_pool2d_with_indices_backward(grad, x, *ctx.window, indices)


def _plain_backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
    """The input's gradient as autograd computes it for ``nn.ReLU`` and ``F.max_pool2d``."""
    x = ctx.saved_tensors[0].detach().requires_grad_()
    with torch.enable_grad():
        out = F.max_pool2d(torch.relu(x) if ctx.relu else x, *ctx.window)
    (grad_input,) = torch.autograd.grad(out, x, grad)
    return grad_input


class ChannelsLastMaxPool2d(nn.Module):
    """``nn.MaxPool2d`` (without indices) that pools dense 4-d CPU tensors through the
    channels-last kernel, keeping their layout; other inputs go to ``nn.MaxPool2d``. With
    ``relu``, ``nn.ReLU`` followed by that pooling."""

    def __init__(self, pool: nn.MaxPool2d, relu: bool = False) -> None:
        super().__init__()
        self.pool = pool
        self.relu = relu
        stride = pool.stride if pool.stride is not None else pool.kernel_size
        self.window = (
            _pair(pool.kernel_size),
            _pair(stride),
            _pair(pool.padding),
            _pair(pool.dilation),
            pool.ceil_mode,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fastpaths.call(PATH, self._channels_last, self._plain, x)

    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(x) if self.relu else x)

    def _channels_last(self, x: torch.Tensor) -> torch.Tensor:
        nchw = x.is_contiguous()
        if (
            x.device.type != "cpu"
            or x.dim() != 4
            or not (nchw or x.is_contiguous(memory_format=CHANNELS_LAST))
        ):
            return self._plain(x)
        if not (torch.is_grad_enabled() and x.requires_grad):  # evaluation: no indices kept
            if self.relu:
                x = torch.relu(x)
            out = F.max_pool2d(x.contiguous(memory_format=CHANNELS_LAST), *self.window)
            return out.contiguous() if nchw else out
        return _ChannelsLastMaxPool.apply(x, self.relu, *self.window)

    def extra_repr(self) -> str:
        return "relu" if self.relu else ""


def plain_max_pool(layer: nn.Module) -> TypeGuard[nn.MaxPool2d]:
    """An ``nn.MaxPool2d`` (exactly) returning no indices: what ``ChannelsLastMaxPool2d`` takes."""
    return type(layer) is nn.MaxPool2d and not layer.return_indices


def fast_max_pool(model: nn.Module) -> nn.Module:
    """``model`` with ``ChannelsLastMaxPool2d`` for each plain ``nn.MaxPool2d``, which takes in
    an ``nn.ReLU`` right before it; like ``hptune.models.swap_layers``, a new ``nn.Sequential``
    sharing every other layer, or ``model`` when nothing changes."""
    if type(model) is not nn.Sequential:
        return model
    layers: list[nn.Module] = []
    swapped = False
    for layer in model:
        if not plain_max_pool(layer):
            layers.append(layer)
            continue
        relu = bool(layers) and type(layers[-1]) is nn.ReLU and not layers[-1].inplace
        if relu:
            layers.pop()
        layers.append(ChannelsLastMaxPool2d(layer, relu))
        swapped = True
    return nn.Sequential(*layers) if swapped else model
