"""Where and how training computes: the device, the precision, the convolutions' memory layout,
and the CPU's handling of denormal floats. Nothing here knows Optuna or MLflow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from hptune import fastpaths
from hptune.allocator import owns_process
from hptune.config import TrainConfig
from hptune.cudagraph import GRAPH_OPTIMIZERS
from hptune.errors import HptuneError
from hptune.fastpaths import CPU_BF16_CHECKS

# NHWC convolutions on CUDA: A's CNN epoch 0.583 -> 0.560 s on an H100 (graphed, batch 64;
# examples/gpu_probes.py). On the CPU in bf16 (oneDNN's bf16 convolutions work in NHWC and
# reorder NCHW tensors at every call), the same weights bit for bit, and on a 2-core Intel Xeon
# with AMX A's CNN 1.10x and experiment D's 2-block ConvNet 1.58x faster per epoch
# (examples/cpu_probes.py --channels-last); on AMD Zen 5 A's CNN was within noise. CPU fp32
# keeps NCHW: mixed results (A's CNN 2-4% slower), and other numbers.
CHANNELS_LAST = True


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is a user error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise HptuneError(
            "train.device=cuda but no CUDA device is available (torch.cuda.is_available() is "
            "False); use --device cpu or auto"
        )
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def native_cpu_bf16(fast: bool = True) -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX512-BF16 or AMX tiles).

    Elsewhere bf16 is emulated and slower than fp32. torch exposes this only privately: the
    ``cpu_bf16_detection`` fast path (``hptune.fastpaths``); without it (``fast`` False, or the
    path off), False.
    """
    if not (fast and fastpaths.usable("cpu_bf16_detection")):
        return False
    return fastpaths.call(
        "cpu_bf16_detection",
        lambda: any([getattr(torch.cpu, check)() for check in CPU_BF16_CHECKS]),  # (each one)
        lambda: False,
    )


def flush_denormals() -> bool:
    """Have the CPU flush denormal floats to zero (FTZ/DAZ), as TensorFlow does by default, in
    a process hptune owns (``hptune.allocator.own_process``: the setting is process-wide, and
    torch's threads keep it); whether it did. Call it before torch's first parallel operation:
    its threads copy the setting when they start, and the ones already running keep theirs.

    Adam's first moment of a weight whose gradient stays zero (a dead ReLU unit) shrinks 10x
    every ~22 steps and sinks into the denormal range, where each operation on it is slow: in
    B's MLP 3,139 of the 235,146 values were denormal after the second epoch and 9,221 after
    the fourth, and its epochs took 0.42 s at first and up to 0.55 s by the tenth (2-core Intel
    Xeon); flushed, every epoch took 0.41 s (10 epochs: 4.98 -> 4.15 s), with the same weights
    bit for bit after 4 epochs (Adam, AdamW, RMSprop; A's CNN after one).
    """
    return owns_process() and torch.set_flush_denormal(True)


def compute_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The dtype training computes in (bf16), or None for plain fp32 (``train.precision``)."""
    if config.precision == "bf16" or (
        config.precision == "auto"
        and device.type == "cpu"
        and native_cpu_bf16(fastpaths.enabled(config.fast_paths))
    ):
        return torch.bfloat16
    return None


def precision_name(config: TrainConfig, device: torch.device) -> str:
    """``bf16`` or ``fp32``: what ``train.precision`` resolves to on ``device``."""
    return "fp32" if compute_dtype(config, device) is None else "bf16"


def uses_cuda_graphs(config: TrainConfig, device: torch.device) -> bool:
    """Whether ``train`` replays captured steps: on CUDA, when enabled, in fp32, for optimizers
    that can be captured."""
    return (
        device.type == "cuda"
        and config.cuda_graphs
        and config.optimizer in GRAPH_OPTIMIZERS
        and compute_dtype(config, device) is None
    )


def uses_channels_last(
    model: nn.Module, device: torch.device, dtype: torch.dtype | None, fast: bool = True
) -> bool:
    """Whether ``train`` puts ``model`` in channels-last memory format: a convolutional model on
    CUDA, or on the CPU computing in bf16 (``CHANNELS_LAST``); never with ``fast`` False
    (``train.fast_paths: off``)."""
    return (
        CHANNELS_LAST
        and fast
        and (device.type == "cuda" or dtype == torch.bfloat16)
        and any(isinstance(m, nn.Conv2d) for m in model.modules())
    )


GPU_ENV = "HPTUNE_GPU"  # a worker's GPU (as CUDA_VISIBLE_DEVICES names it), set by its parent


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this process sees, as a child's ``CUDA_VISIBLE_DEVICES`` names them: entries of
    this process's own ``CUDA_VISIBLE_DEVICES`` when set, else ``0 .. device_count - 1``."""
    environ = os.environ if environ is None else environ
    count = torch.cuda.device_count()  # (asks the driver without starting CUDA here)
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [part.strip() for part in listed.split(",") if part.strip()][:count]
    return [str(index) for index in range(count)]


def worker_gpus(
    gpus: Sequence[int] | None, workers: int, device: torch.device, visible: Sequence[str]
) -> list[str] | None:
    """Each worker's GPU, round-robin over ``gpus`` (indices into ``visible``; None: all of
    them), as its ``CUDA_VISIBLE_DEVICES``; None when the workers do not train on CUDA.

    Raises:
        HptuneError: GPUs named for CPU training, or a GPU that is not visible.
    """
    if device.type != "cuda":
        if gpus is not None:
            raise HptuneError(
                f"gpus={list(gpus)} needs CUDA, but trials train on {device.type}; "
                "drop --gpus or use --device cuda"
            )
        return None
    chosen = list(range(len(visible))) if gpus is None else list(gpus)
    if not chosen:
        return None
    hidden = [index for index in chosen if index >= len(visible)]
    if hidden:
        raise HptuneError(
            f"gpus: GPU {', '.join(map(str, hidden))} is not visible; this process sees "
            f"{len(visible)} (indices 0-{len(visible) - 1})"
        )
    return [visible[chosen[worker % len(chosen)]] for worker in range(workers)]
