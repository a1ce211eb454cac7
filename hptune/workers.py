"""Several worker processes on one study (``workers: N``, ``hptune optimize --workers N``).

A small model's step is mostly per-operation cost, which more threads on one step barely cut
(B's MLP on 2 cores: 0.379 s per epoch on one thread, 0.370 on two, alternating in one
process), so ``N`` processes with ``threads // N`` threads each, training ``N`` trials at once,
get more done (experiment E on 2 cores: 55.2 s, 42.7 s with two workers). The main process
opens the study, its parent run and a table's queue (so workers never race to enqueue rows),
then starts the workers and shows the study's progress from its storage; when they are done it
records the best trial and evaluates its model on the test set, as a single process does.

Each worker (``hptune.worker_process``) runs its share of ``n_trials`` (of a table: of its
queued rows) through ``hptune.study.work``, with its own sampler seed. Ctrl-C or SIGTERM reach
the main process, which sends SIGTERM to each worker once: a worker stops like an interrupted
single process (its running trial queued again, its run KILLED) and hands over its best
complete trial, whose model the main process logs as at a normal end; the study can be
continued.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import torch

from hptune import pareto
from hptune.config import StudyConfig
from hptune.device import GPU_ENV, resolve_device, visible_gpus, worker_gpus
from hptune.errors import HptuneError
from hptune.progress import Progress

if TYPE_CHECKING:
    from hptune.objective import BestModel

POLL_S = 1.0  # how often the main process reads the study's progress from storage
INTERRUPTED = 130  # a worker's exit code after SIGTERM


def shares(n_trials: int | None, workers: int) -> list[int | None]:
    """Each worker's number of trials: ``n_trials`` split evenly, no trial more or less in
    total (None, until the timeout, for each when unbounded).

    For a table, ``n_trials`` is at most the number of queued rows, so every trial a worker
    asks for is a queued row; with "run until the queue is empty" instead, a worker asking
    just after another took the last row would get a sampled trial, i.e. a row run twice.
    """
    if n_trials is None:
        return [None] * workers
    split = [n_trials // workers + (k < n_trials % workers) for k in range(workers)]
    return [share for share in split if share]


def threads_per_worker(workers: int) -> int:
    """This process's intra-op threads divided among the workers (at least one each)."""
    return max(1, torch.get_num_threads() // workers)


def run_workers(
    config: StudyConfig, study: optuna.Study, n_trials: int | None, table: bool
) -> BestModel | None:
    """Run the study's trials in ``config.workers`` processes; return the study's best trial
    with its model if one of them trained it, else None.

    Raises:
        StudyStopped: interrupted (Ctrl-C, SIGTERM), here or in a worker; with the study's
            best trial and its model if a worker of this run trained it.
        HptuneError: a worker stopped on an error (its traceback is on stderr).
    """
    from hptune.objective import StudyStopped

    threads = threads_per_worker(config.workers)
    device = resolve_device(config.train.device)
    gpus = worker_gpus(config.gpus, config.workers, device, visible_gpus())
    first = len(study.get_trials(deepcopy=False))
    progress = Progress(n_trials, config.train.epochs, metric=config.objectives[0].metric)
    with tempfile.TemporaryDirectory(prefix="hptune-workers-") as folder:
        handoff = Path(folder)
        (handoff / "config.pickle").write_bytes(pickle.dumps(config))
        processes: list[subprocess.Popen[bytes]] = []
        try:
            for index, share in enumerate(shares(n_trials, config.workers), start=1):
                gpu = gpus[index - 1] if gpus else None
                processes.append(_start(handoff, index, share, table, threads, gpu))
            _watch(study, processes, first, progress)
        except KeyboardInterrupt:
            _stop(processes)  # each saves its best trial's model before it exits
            raise StudyStopped(_best_model(study, config, handoff)) from None
        finally:
            progress.close()
        codes = {index: process.returncode for index, process in enumerate(processes, start=1)}
        if INTERRUPTED in codes.values():  # a worker was stopped from outside
            raise StudyStopped(_best_model(study, config, handoff))
        failed = [
            f"worker {index} exited with code {code}" for index, code in codes.items() if code
        ]
        if failed:
            raise HptuneError(
                [
                    *(f"{line} (its error is printed above)" for line in failed),
                    "the finished trials are stored; run the same command again to continue",
                ]
            )
        return _best_model(study, config, handoff)


def _start(
    handoff: Path, index: int, share: int | None, table: bool, threads: int, gpu: str | None
) -> subprocess.Popen[bytes]:
    """A worker: a fresh interpreter running ``hptune.worker_process`` (whatever the caller's
    ``__main__`` is: a script, a notebook, stdin), able to import the same ``hptune``, pinned to
    ``gpu`` when given."""
    env = worker_environment(os.environ, gpu)
    command = [sys.executable, "-m", "hptune.worker_process"]
    command += [str(handoff), str(index), str(threads)]
    command += ["--n-trials", str(share)] if share is not None else []
    command += ["--table"] if table else []
    return subprocess.Popen(command, env=env)


def worker_environment(environ: Mapping[str, str], gpu: str | None) -> dict[str, str]:
    """A worker's environment: this one, able to import this ``hptune``, and with a GPU pinned
    by ``CUDA_VISIBLE_DEVICES`` (set before the worker's interpreter starts, so before torch
    is imported there: the worker sees its GPU as ``cuda:0``) and named in ``HPTUNE_GPU``."""
    package_root = str(Path(__file__).resolve().parents[1])
    path = environ.get("PYTHONPATH")
    env = {**environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}
    if gpu is not None:
        env.update({"CUDA_VISIBLE_DEVICES": gpu, GPU_ENV: gpu})
    return env


def _watch(
    study: optuna.Study,
    processes: Sequence[subprocess.Popen[bytes]],
    first: int,
    progress: Progress,
) -> None:
    """Show the trials finished since ``first`` until every worker has exited."""
    from hptune.objective import best_value

    done = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.FAIL,
    )
    while any(process.poll() is None for process in processes):
        time.sleep(POLL_S)
        trials = study.get_trials(deepcopy=False, states=done)
        progress.finished(sum(t.number >= first for t in trials), best_value(study))


def _stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """Ask each running worker once to stop (SIGTERM), then wait for all of them."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait()


def _best_model(study: optuna.Study, config: StudyConfig, handoff: Path) -> BestModel | None:
    """The study's best trial with its model, if a worker of this run trained it."""
    chosen = pareto.select(study, config)
    if chosen is None:
        return None
    path = handoff / f"{chosen.number}.pt"
    # Written by this run's own workers (a pickled BestModel), so not an untrusted file.
    return torch.load(path, weights_only=False) if path.exists() else None
