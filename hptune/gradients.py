"""Gradient flow: per-layer statistics of the last training batch's weight gradients
(experiment B's dead-neuron indicator), computed on the device and read with the epoch's one
host sync.

Metric names are ``weight_grad/<layer>/<stat>`` (``PREFIX``): MLflow's UI orders metric sections
by name, and the prefix sorts after ``train/`` and ``val/``, so a trial's 3 statistics per layer
come after the curves a user compares first instead of before them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

PREFIX = "weight_grad/"  # stable: users chart these names, and the report reads them


def weight_layers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights of the linear and conv layers, named fc1, fc2, ... and conv1, conv2, ..."""
    layers: dict[str, torch.Tensor] = {}
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            prefix = "fc" if isinstance(module, nn.Linear) else "conv"
            count = sum(name.startswith(prefix) for name in layers)
            layers[f"{prefix}{count + 1}"] = module.weight
    return layers


def gradient_stats(layers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gradient flow on the epoch's last training batch (its gradients are still in place).

    Per layer: mean |grad|, std, and % of exactly-zero entries (experiment B's dead-neuron
    indicator for relu-family activations). Device tensors: read with the epoch's one sync.
    """
    grads = {name: w.grad.detach()[None] for name, w in layers.items() if w.grad is not None}
    return {name: value[0] for name, value in _grad_stats(grads).items()}


def members_gradient_stats(layers: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``gradient_stats`` of several same-architecture models at once: one tensor per
    statistic, one value per model (batched trials: a few operations, not a few per member)."""
    names = [name for name, weight in layers[0].items() if weight.grad is not None]
    grads = {
        name: torch.stack([member[name].grad.detach() for member in layers])  # type: ignore[union-attr]
        for name in names
    }
    return _grad_stats(grads)


def _grad_stats(grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per layer and along the first dimension (models): mean |grad|, std, % zero."""
    stats: dict[str, torch.Tensor] = {}
    for name, grad in grads.items():
        flat = grad.flatten(1)
        stats[f"{PREFIX}{name}/mean_abs"] = flat.abs().mean(dim=1)
        stats[f"{PREFIX}{name}/std"] = flat.std(dim=1)
        stats[f"{PREFIX}{name}/zero_pct"] = (flat == 0).float().mean(dim=1) * 100
    return stats
