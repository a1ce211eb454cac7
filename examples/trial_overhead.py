"""Optuna + MLflow overhead per trial at a chosen trial length (real Fashion-MNIST).

    python examples/trial_overhead.py [--epochs 10] [--rounds 3] [--device cpu|cuda]

Runs the benchmark's four-trial study (``benchmarks/bench.py``'s ``study_config``: B's MLP, one
learning rate per trial, through ``hptune.optimize`` in a temporary folder) ``--rounds`` times
after an untimed one-trial warm-up, and prints each study's wall time and its trials' bookkeeping
as ``python benchmarks/bench.py`` measures it (``bench.trial_overhead``: a trial's wall time not
spent in its epochs), also per trial. The benchmark's own study uses ``--epochs`` (3 or 4 there);
this shows the same figure for the longer trials real studies run.

Figures (2-core Intel Xeon VM, bf16, 2026-11-24, commit 7c3073c): 10 epochs: 2.8%, 3.1%, 2.8%
(119, 127, 115 ms per trial); 3 epochs: 6.0-8.6% (75-105 ms per trial).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ (not installed)

import hptune
from benchmarks import bench
from hptune.allocator import own_process
from hptune.device import flush_denormals, resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()
    own_process()  # as the hptune command's process
    flush_denormals()  # as hptune.optimize does
    device = resolve_device(args.device)
    trials = bench.STUDY_TRIALS
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        hptune.optimize(bench.study_config("warm_up", device, args.epochs, None, 1, 1, 1))
        for round_ in range(args.rounds):
            config = bench.study_config(f"s{round_}", device, args.epochs, None, 1, trials, 1)
            started = time.perf_counter()
            result = hptune.optimize(config)
            wall = time.perf_counter() - started
            percent, ms = bench.trial_overhead(result)
            each = [
                (trial.datetime_complete - trial.datetime_start).total_seconds() - sum(epochs)
                for trial, epochs in bench.epoch_times(result)
            ]
            print(
                f"{trials} trials of {args.epochs} epochs: study {wall:.2f} s, bookkeeping"
                f" {percent:.1f}% of trial wall time, {ms:.0f} ms per trial"
                f" ({', '.join(f'{1000 * s:.0f}' for s in each)})",
                flush=True,
            )


if __name__ == "__main__":
    main()
