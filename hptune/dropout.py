"""Dropout masks for hptune's eager training steps, drawn 2x faster than aten's CPU dropout.

aten's CPU dropout draws one ``bernoulli_`` number per value, ~8 ns each on the machine measured
here (2 AMD EPYC Zen 5 cores): 35-60% of a step of the flagship's MLPs with dropout, and ~10% of
experiment A's CNN step. ``dropout_mask`` draws 64 random bits per two values and compares each
32-bit half with a threshold: the same law to within 2^-32 in the keep probability, 2x faster.
Where the keep probability is a multiple of 1/256 (p = 0.25 and 0.5 in A's CNN, 0.5 in MLPs),
one byte per value decides it exactly, from a quarter of the draws. From the same seed the
masks differ from ``nn.Dropout``'s (tests compare the training paths with equal masks).

Where it is used: ``hptune.backprop.ManualBackprop`` (MLPs), and ``fast_dropout`` for the other
models that ``hptune.flat.FlatSteps`` trains (CNNs). CUDA-graph steps and models with buffers
keep ``nn.Dropout``; the models that trials log and export always have ``nn.Dropout``.

Measured (bf16, epochs alternating in one process): the 32-bit halves against aten's dropout,
on Zen 5: flagship-like MLPs 384x3 units, batch 64, p 0.2: 1.315 -> 1.176 s/epoch; 1024x2,
batch 128, p 0.3: 2.815 -> 2.288 s; A's CNN on 6,400 images: 2.286 -> 2.075 s. Bytes against
32-bit halves, on a 2-core Intel Xeon: A's CNN on 6,400 images 1.112 -> 1.029 s; 2 x 512 units
with p 0.5, batch 128, on 20,000 images: 0.302 -> 0.270 s.
"""

from __future__ import annotations

from typing import TypeGuard

import torch
from torch import nn

from hptune.models import swap_layers


def dropout_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout's scaled mask for ``x``: 0 with probability ``p``, else ``1 / (1 - p)`` (in
    ``x``'s dtype, as aten's dropout scales). Random numbers come from torch's generator for
    ``x``'s device, so the global seed decides the masks."""
    keep = 1 - p
    if 0 < keep < 1 and (keep * 256).is_integer():  # 0.25, 0.5, 0.75, ...: a byte is exact
        draws, threshold = _random_values(x, torch.uint8), int(keep * 256)
    else:
        draws = _random_values(x, torch.int32)
        # P(value < threshold) = (threshold + 2^31) / 2^32: the keep probability within 2^-32.
        threshold = min(round(keep * 2**32) - 2**31, 2**31 - 1)
    return (draws < threshold).to(x.dtype).div_(keep)


def _random_values(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Uniform random integers of ``dtype`` (all bit patterns equally likely), shaped as ``x``:
    the bytes of 64-bit draws, each draw split into 64 / bits values."""
    per_draw = 64 // torch.iinfo(dtype).bits
    draws = torch.empty(-(-x.numel() // per_draw), dtype=torch.int64, device=x.device)
    return draws.random_(-(2**63), None).view(dtype)[: x.numel()].view(x.shape)


class MaskDropout(nn.Module):
    """``nn.Dropout`` (not in place) with ``dropout_mask``'s masks; autograd differentiates
    ``x * mask``, as it does aten's CPU dropout."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * dropout_mask(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def plain_dropout(layer: nn.Module) -> TypeGuard[nn.Dropout]:
    """An ``nn.Dropout`` (exactly) that ``dropout_mask`` can stand in for: not in place, p < 1."""
    return type(layer) is nn.Dropout and not layer.inplace and layer.p < 1


def fast_dropout(model: nn.Module) -> nn.Module:
    """``model`` with ``MaskDropout`` for each plain ``nn.Dropout`` (see
    ``hptune.models.swap_layers``), and a dropout right before a ``Flatten`` moved after it.

    The move changes no number: the mask is drawn in the values' logical order either way, and
    multiplies the same values. It saves a slow multiply when the input is channels-last (A's
    CNN on the CPU in bf16): the mask is laid out in NCHW order, and multiplying a channels-last
    tensor by it took ~1 ms against ~0.13 ms for equal layouts (64 x 64 x 12 x 12 bf16), while
    ``Flatten`` copies to NCHW order anyway. A's CNN 1.027 -> 0.984 s per epoch on 6,400 images
    (2-core Intel Xeon, bf16, alternating epochs, faster in 10 of 10, the same weights).
    """
    swapped = swap_layers(
        model, lambda layer: MaskDropout(layer.p) if plain_dropout(layer) else layer
    )
    layers = list(swapped) if isinstance(swapped, nn.Sequential) else []
    moved = False
    for index in range(len(layers) - 1):
        if isinstance(layers[index], MaskDropout) and type(layers[index + 1]) is nn.Flatten:
            layers[index], layers[index + 1] = layers[index + 1], layers[index]
            moved = True
    return nn.Sequential(*layers) if moved else swapped
