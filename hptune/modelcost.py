"""What a trained model costs: its trainable parameters and its inference latency.

The per-trial metrics ``model/params`` and ``model/latency_ms`` (``registry.TRIAL_METRICS``),
which a multi-objective study can trade against accuracy. Latency is the median time of one
forward pass over a fixed batch of validation images on the training device, in eval mode
without gradients, after warm-up passes (the first passes allocate and pick kernels).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

LATENCY_BATCH = 256  # images per timed forward pass
WARMUP = 3
REPEATS = 20


def trainable_parameters(model: nn.Module) -> int:
    """The number of parameters the optimizer trains."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def latency_ms(model: nn.Module, images: torch.Tensor) -> float:
    """Median milliseconds of one forward pass over ``images`` (warm, eval mode)."""
    was_training = model.training
    model.eval()
    cuda = images.device.type == "cuda"
    times = []
    try:
        for index in range(WARMUP + REPEATS):
            if cuda:
                torch.cuda.synchronize(images.device)
            started = time.perf_counter()
            model(images)
            if cuda:
                torch.cuda.synchronize(images.device)
            if index >= WARMUP:
                times.append((time.perf_counter() - started) * 1000)
    finally:
        model.train(was_training)
    return statistics.median(times)
