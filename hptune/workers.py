"""Several worker processes on one study (``workers: N``, ``hptune optimize --workers N``).

A small model leaves most of a CPU idle: its step is a few hundred microseconds of framework
overhead per batch, whatever the thread count. ``N`` processes with ``threads // N`` threads
each train ``N`` trials at once. The main process opens the study, its parent run and a table's
queue (so workers never race to enqueue rows), then starts the workers and shows the study's
progress from its storage; when they are done it records the best trial and evaluates its model
on the test set, as a single process does.

Each worker runs its share of ``n_trials`` (a table's rows: until the queue is empty) through
``hptune.study.work``, with its own sampler seed. Ctrl-C or SIGTERM reach the main process,
which sends SIGTERM to each worker once: a worker stops like an interrupted single process (its
running trial queued again, its run KILLED) and the study can be continued.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import torch

from hptune.config import StudyConfig
from hptune.errors import HptuneError
from hptune.progress import Progress

if TYPE_CHECKING:
    from hptune.study import BestModel

POLL_S = 1.0  # how often the main process reads the study's progress from storage
INTERRUPTED = 130  # a worker's exit code after SIGTERM


def shares(n_trials: int | None, workers: int, table: bool) -> list[int | None]:
    """Each worker's number of trials: ``n_trials`` split evenly (no trial more or less in
    total); None (until the timeout) for each when unbounded; a table's queue bounds itself,
    so its workers each take rows until none waits."""
    if n_trials is None:
        return [None] * workers
    if table:
        return [n_trials] * min(workers, n_trials)
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
        KeyboardInterrupt: interrupted (Ctrl-C, SIGTERM), here or in a worker.
        HptuneError: a worker stopped on an error (its traceback is on stderr).
    """
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked CUDA state
    threads = threads_per_worker(config.workers)
    first = len(study.get_trials(deepcopy=False))
    progress = Progress(n_trials, config.train.epochs)
    with tempfile.TemporaryDirectory(prefix="hptune-workers-") as handoff:
        processes = [
            context.Process(
                target=_work,
                args=(config, share, table, index, threads, handoff),
                name=f"hptune-worker-{index}",
            )
            for index, share in enumerate(shares(n_trials, config.workers, table), start=1)
        ]
        try:
            for process in processes:
                process.start()
            _watch(study, processes, first, progress)
        except KeyboardInterrupt:
            _stop(processes)
            raise
        finally:
            progress.close()
        codes = {process.name: process.exitcode for process in processes}
        if INTERRUPTED in codes.values():  # a worker was stopped from outside
            raise KeyboardInterrupt
        failed = [f"{name} exited with code {code}" for name, code in codes.items() if code]
        if failed:
            raise HptuneError(
                [
                    *(f"{line} (its error is printed above)" for line in failed),
                    "the finished trials are stored; run the same command again to continue",
                ]
            )
        return _best_model(study, Path(handoff))


def _watch(
    study: optuna.Study,
    processes: Sequence[multiprocessing.process.BaseProcess],
    first: int,
    progress: Progress,
) -> None:
    """Show the trials finished since ``first`` until every worker has exited."""
    from hptune.study import best_value

    done = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.FAIL,
    )
    while any(process.is_alive() for process in processes):
        time.sleep(POLL_S)
        trials = study.get_trials(deepcopy=False, states=done)
        progress.finished(sum(t.number >= first for t in trials), best_value(study))
    for process in processes:
        process.join()


def _stop(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """Ask each running worker once to stop (SIGTERM), then wait for all of them."""
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        if process.pid is not None:
            process.join()


def _best_model(study: optuna.Study, handoff: Path) -> BestModel | None:
    """The study's best trial with its model, if a worker of this run trained it."""
    try:
        number = study.best_trial.number
    except ValueError:
        return None
    path = handoff / f"{number}.pt"
    # Written by this run's own workers (a pickled BestModel), so not an untrusted file.
    return torch.load(path, weights_only=False) if path.exists() else None


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _work(
    config: StudyConfig, n_trials: int | None, table: bool, index: int, threads: int, handoff: str
) -> None:
    """A worker process: its trials, then its best complete trial (with its model) saved for
    the main process. Exits with ``INTERRUPTED`` when stopped by SIGTERM."""
    # The main process decides when to stop: Ctrl-C reaches it, and it sends SIGTERM here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    torch.set_num_threads(threads)
    from hptune.study import work

    try:
        best = work(config, n_trials, table, index)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    if best is not None:
        torch.save(best, Path(handoff) / f"{best.number}.pt")
