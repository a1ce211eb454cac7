"""CPU probes behind the eager training path's defaults (real Fashion-MNIST, CPU only).

    python examples/cpu_probes.py [--model mlp|cnn] [--rounds 4] [--train-subset N] [--compile]
    python examples/cpu_probes.py --model cnn|convnet --channels-last [--train-subset N]

Trains one model per variant from the same seed and alternates their epochs in one process (the
machine's speed drifts between runs; alternating keeps the comparison fair):

- ``autocast bf16``: per-parameter optimizer, ``torch.autocast`` forward (hptune before
  ``hptune.flat``; still what models with buffers use);
- ``flat autograd bf16``: ``hptune.flat.FlatSteps`` with its bf16 compute copy, gradients from
  autograd (``manual=False``; what models ``ManualBackprop`` does not take use);
- ``flat manual bf16``: the same with ``hptune.backprop.ManualBackprop`` (the default for MLPs
  on CPUs with native bf16; not shown for the CNN, which it does not take);
- the same three in fp32;
- with ``--compile``, ``compiled bf16``: the autocast step under ``torch.compile`` (inductor);
- with ``--channels-last`` instead: flat steps in bf16 and fp32, each with the model in the
  default (NCHW) and in channels-last memory format (what ``training.train`` uses for
  convolutional models on CUDA, and on the CPU in bf16); ``--model convnet`` is experiment D's
  ConvNet with two blocks (batch 128).

Prints each variant's median epoch time (all rounds after the first), its per-epoch times and
its final validation accuracy. The global generator is seeded before every epoch, so the
variants draw the same dropout masks where they draw them the same way (the flat steps' fast
masks differ from autocast's ``nn.Dropout``; with equal masks the flat and per-parameter steps
give equal weights: ``tests/test_flat.py``).

Figures (2 CPU cores, AMD EPYC Zen 5), 6 rounds (2026-11-23, the second session): MLP autocast /
flat autograd / flat manual bf16 0.488 / 0.419 / **0.328** s, fp32 0.666 / 0.617 / **0.537** s,
val acc 0.8784 all three in bf16 and 0.8754 all three in fp32; a run in a slow phase of the
machine gave 0.600 / 0.520 / 0.418 and 0.817 / 0.767 / 0.696 s. Before ``ManualBackprop``,
4 rounds with ``--compile``: MLP autocast / flat bf16 0.504 / 0.435 s, fp32 0.696 / 0.656 s,
val acc 0.8731 both in bf16 and 0.8706 both in fp32; compiled bf16 (torch 2.14, inductor,
gcc 12) 0.477 s after a first epoch of 7.4 s with a warm compile cache (18.7 s cold): slower
than the flat step and costly to start, so not used.
CNN on 10,000 images, 3 rounds: bf16 3.540 / 3.441 s, fp32 5.700 / 5.682 s.
``--channels-last``, CNN on 5,000 images: NCHW / channels-last bf16 1.678 / 1.772 s, fp32 3.333 /
3.465 s (4 rounds); an earlier run of the same comparison gave bf16 2.15 / 2.00 s, fp32 2.87 /
2.93 s. The max-pool itself is ~10x faster in channels-last, but the gradient coming back
through ``Flatten`` is NCHW and is copied: no reliable gain on Zen 5.
On a 2-core Intel Xeon with AMX (2026-11-23, the bf16 images ``training.train`` gathers, equal
dropout masks, 6 rounds on 5,000 images), NCHW / channels-last: A's CNN bf16 1.423 / **1.296**
s (val acc 0.8538 both), fp32 3.020 / 3.078 s (0.8541 / 0.8589); experiment D's 2-block ConvNet
bf16 0.617 / **0.391** s (0.8078 both), fp32 1.203 / 1.001 s (0.8058 / 0.8043). oneDNN's bf16
convolutions work in NHWC and reorder NCHW tensors at every call; in bf16 both layouts give the
same weights bit for bit. So ``training.train`` trains convolutional models channels-last on
the CPU in bf16; fp32 keeps NCHW (mixed results on both machines, and other numbers).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ (not installed)

from benchmarks.bench import MODELS
from hptune import data, training
from hptune.config import DataConfig, ModelConfig, TrainConfig
from hptune.flat import FlatSteps
from hptune.models import build_model

CPU = torch.device("cpu")
PROBE_MODELS = {**MODELS, "convnet": (ModelConfig(family="convnet", conv_blocks=2), 128)}
Epoch = Callable[[torch.Tensor], object]


def layouts(name: str, splits: data.Splits) -> dict[str, tuple[Epoch, torch.nn.Module]]:
    model_config, batch_size = PROBE_MODELS[name]
    config = TrainConfig(batch_size=batch_size)
    built: dict[str, tuple[Epoch, torch.nn.Module]] = {}
    for dtype, label in ((torch.bfloat16, "bf16"), (None, "fp32")):
        for layout in (torch.contiguous_format, torch.channels_last):
            torch.manual_seed(0)
            model = build_model(model_config, splits.input_shape, 10)
            model = model.to(memory_format=layout)
            steps = FlatSteps(
                model,
                lambda p: training.make_optimizer(p, config),
                splits.train_x_in(dtype),
                splits.train_y,
                batch_size,
                dtype,
            )
            name = "channels-last" if layout == torch.channels_last else "nchw"
            built[f"{name} {label}"] = (steps.epoch, model)
    return built


def variants(
    name: str, splits: data.Splits, compile_step: bool
) -> dict[str, tuple[Epoch, torch.nn.Module]]:
    model_config, batch_size = PROBE_MODELS[name]
    config = TrainConfig(batch_size=batch_size)
    x, y = splits.train_x, splits.train_y
    built: dict[str, tuple[Epoch, torch.nn.Module]] = {}

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(model_config, splits.input_shape, 10)

    for dtype, label in ((torch.bfloat16, "bf16"), (None, "fp32")):
        model = fresh()
        optimizer = training.make_optimizer(model.parameters(), config)
        built[f"autocast {label}"] = (
            lambda order, m=model, o=optimizer, d=dtype: training.train_epoch(
                m, o, x, y, batch_size, order, d
            ),
            model,
        )
        for manual, kind in ((False, "autograd"), (True, "manual")):
            model = fresh()
            steps = FlatSteps(
                model,
                lambda p: training.make_optimizer(p, config),
                x,
                y,
                batch_size,
                dtype,
                manual=manual,
            )
            if manual and steps.backprop is None:
                continue  # a model ManualBackprop does not take: the autograd line says it
            built[f"flat {kind} {label}"] = (steps.epoch, model)
    if compile_step:
        model = fresh()
        optimizer = training.make_optimizer(model.parameters(), config)

        def step(inputs: torch.Tensor, targets: torch.Tensor) -> None:
            with torch.autocast("cpu", torch.bfloat16):
                loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        compiled = torch.compile(step)

        def compiled_epoch(order: torch.Tensor) -> None:
            model.train()
            for start in range(0, len(order), batch_size):
                index = order[start : start + batch_size]
                compiled(x[index], y[index])

        built["compiled bf16"] = (compiled_epoch, model)
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(PROBE_MODELS), default="mlp")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    splits = data.load(DataConfig(validation="test", train_subset=args.train_subset), CPU)
    if args.channels_last:
        runs = layouts(args.model, splits)
    else:
        runs = variants(args.model, splits, args.compile)
    times: dict[str, list[float]] = {label: [] for label in runs}
    generator = torch.Generator().manual_seed(0)
    for round_ in range(args.rounds):
        order = torch.randperm(len(splits.train_x), generator=generator)
        for label, (epoch, _) in runs.items():
            torch.manual_seed(round_)  # the same dropout masks for variants that draw alike
            started = time.perf_counter()
            epoch(order)
            times[label].append(time.perf_counter() - started)
    print(f"{args.model}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    for label, (_, model) in runs.items():
        _, predictions = training.evaluate(model, splits.val_x, splits.val_y)
        accuracy = (predictions == splits.val_y).float().mean().item()
        median = statistics.median(times[label][1:])
        epochs = " ".join(f"{t:.3f}" for t in times[label])
        print(f"{label:>20}: median {median:.3f} s/epoch  [{epochs}]  val acc {accuracy:.4f}")


if __name__ == "__main__":
    main()
