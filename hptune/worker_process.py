"""One worker process of a study (``hptune.workers`` starts them): its share of the trials,
then its best complete trial with its model handed to the main process.

The worker's entry point lives here, not in ``hptune.workers``, so that imports flow one way:
``hptune.study`` starts workers through ``hptune.workers``, and this module, which only a
worker process runs, calls back into ``hptune.study``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hptune import interrupt
from hptune.allocator import imports_frozen, own_process
from hptune.workers import INTERRUPTED, POLL_S

if TYPE_CHECKING:
    from hptune.objective import BestModel


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
    parser = argparse.ArgumentParser(prog="python -m hptune.worker_process")
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
