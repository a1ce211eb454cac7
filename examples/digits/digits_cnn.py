"""A small CNN for the digits study: its ``channels`` are searched (a name hptune passes to the
factory), its ``dropout`` too (hptune's own setting, passed because the signature names it)."""

from __future__ import annotations

from torch import nn


def small_cnn(
    channels: int, input_shape: tuple[int, int, int], num_classes: int, dropout: float = 0.0
) -> nn.Module:
    """Two padded 3x3 convolutions (``channels``, 2 x ``channels``), a 2x2 max-pool, a linear
    head: (N, C, H, W) -> (N, num_classes) logits."""
    in_channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(2 * channels * (height // 2) * (width // 2), num_classes),
    )
