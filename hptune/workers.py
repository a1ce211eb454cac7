"""Several worker processes on one study (``workers: N``, ``hptune optimize --workers N``).

A small model's step is mostly per-operation cost, which more threads on one step barely cut
(B's MLP on 2 cores: 0.379 s per epoch on one thread, 0.370 on two, alternating in one
process), so ``N`` processes with ``threads // N`` threads each, training ``N`` trials at once,
get more done (experiment E on 2 cores: 55.2 s, 42.7 s with two workers). The main process
opens the study, its parent run and a table's queue (so workers never race to enqueue rows),
then starts the workers and shows the study's progress from its storage; when they are done it
records the best trial and evaluates its model on the test set, as a single process does.

Each worker runs its share of ``n_trials`` (of a table: of its queued rows) through
``hptune.study.work``, with its own sampler seed. Ctrl-C or SIGTERM reach the main process,
which sends SIGTERM to each worker once: a worker stops like an interrupted single process (its
running trial queued again, its run KILLED) and hands over its best complete trial, whose model
the main process logs as at a normal end; the study can be continued.
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import torch

from hptune import interrupt, pareto
from hptune.allocator import imports_frozen, own_process
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
    progress = Progress(n_trials, config.train.epochs)
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
    """A worker: a fresh interpreter running this module (whatever the caller's ``__main__``
    is: a script, a notebook, stdin), able to import the same ``hptune``."""
    env = worker_environment(os.environ, gpu)
    command = [sys.executable, "-m", "hptune.workers", str(handoff), str(index), str(threads)]
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


def _stop_with_parent() -> threading.Event:
    """Stop (as on SIGTERM) if the main process dies without stopping us (``kill -9``); the
    returned event is set when that happened."""
    parent = os.getppid()
    orphaned = threading.Event()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_S)
        orphaned.set()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="hptune-parent-watch", daemon=True).start()
    return orphaned


def main(argv: list[str] | None = None) -> None:
    """A worker process (started by ``run_workers``): its trials, then its best complete trial
    with its model saved for the main process. Exits with ``INTERRUPTED`` on SIGTERM."""
    # The main process decides when to stop: Ctrl-C reaches it, and it sends SIGTERM here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    interrupt.install(signal.SIGTERM)
    orphaned = _stop_with_parent()
    own_process()  # a worker: process-wide tuning may apply (hptune.allocator)
    parser = argparse.ArgumentParser(prog="python -m hptune.workers")
    parser.add_argument("handoff", type=Path)
    parser.add_argument("index", type=int)
    parser.add_argument("threads", type=int)
    parser.add_argument("--n-trials", type=int, default=None)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # Written by the main process into its own temporary folder: not an untrusted file.
    config = pickle.loads((args.handoff / "config.pickle").read_bytes())
    with imports_frozen():
        from hptune.study import end_study_run, work

    best: BestModel | None = None
    try:
        best = work(config, args.n_trials, args.table, args.index)
        with interrupt.held():
            _save_best(best, args.handoff)
            _nothing_left_to_stop()
    except KeyboardInterrupt as stop:  # the main process sends one SIGTERM, at any point
        _nothing_left_to_stop()
        if orphaned.is_set():  # the main process was killed, so it cannot end the study's run
            end_study_run(config, "KILLED")
        else:  # the main process logs the study's best model, also after a stop
            _save_best(getattr(stop, "best", best), args.handoff)
        sys.exit(INTERRUPTED)


def _nothing_left_to_stop() -> None:
    """Ignore SIGTERM from here on: the worker only exits. A stop raised during the
    interpreter's shutdown would land in atexit handlers and thread joins, whose locks it could
    leave half taken (see ``Objective.report``)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _save_best(best: BestModel | None, handoff: Path) -> None:
    """This worker's best complete trial, with its model, for the main process (written whole
    or not at all)."""
    if best is not None:
        partial = handoff / f"{best.number}.pt.partial"
        torch.save(best, partial)
        partial.replace(handoff / f"{best.number}.pt")


if __name__ == "__main__":
    main()
