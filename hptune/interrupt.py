"""Stop on SIGTERM (and Ctrl-C) as on Ctrl-C, even when the first KeyboardInterrupt is lost.

A signal handler's exception is raised wherever the main thread happens to be. When that is a
weakref callback or a ``__del__`` run by the garbage collector, Python prints "Exception
ignored" and goes on: a study asked to stop kept training (seen in a SIGTERM test, the
handler's KeyboardInterrupt inside ``WeakKeyDictionary``'s callback). So the handler also sets
a flag, and ``check`` (called at every epoch's report) raises again while it is set.

Inside a study's trial loop a request raises only while a trial trains (``held`` and
``allowed``), where the trial's error handling queues it again: never between Optuna's store
writes, which would leave a trial RUNNING.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_requested = threading.Event()
_holding = False  # read by the handler, which Python runs in the main thread only


def stop(signum: int, frame: object) -> None:
    """Signal handler: remember the request and raise ``KeyboardInterrupt`` here, unless a
    ``held`` block is running outside ``allowed`` (then ``allowed`` or ``check`` raises it)."""
    _requested.set()
    if not _holding:
        raise KeyboardInterrupt


@contextmanager
def held() -> Iterator[None]:
    """Keep a stop request from raising inside this block, except inside ``allowed`` blocks.

    A study's trial loop runs held: Optuna's ``ask`` stores a RUNNING trial and only then
    calls the objective, whose error handling queues an interrupted trial again. A
    ``KeyboardInterrupt`` raised in between (a SIGTERM test with two workers failed so in 2 of
    20 runs) left the trial RUNNING for good: with no heartbeat recorded yet, nothing would
    ever fail it. Held, the request waits for the trial's ``allowed`` block (its training) or
    for the ``check`` after the loop.
    """
    global _holding
    before, _holding = _holding, True
    try:
        yield
    finally:
        _holding = before


@contextmanager
def allowed() -> Iterator[None]:
    """Inside ``held``, a block that a stop request interrupts at once (a trial's training):
    raises ``KeyboardInterrupt`` first if one is waiting."""
    global _holding
    before, _holding = _holding, False
    try:
        check()
        yield
    finally:
        _holding = before


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a stop was requested (in case the first one was lost)."""
    if _requested.is_set():
        raise KeyboardInterrupt


def install(*signals: signal.Signals) -> None:
    """Make these signals stop the process through ``stop`` (except those it ignores, as a
    background job ignores SIGINT)."""
    for number in signals:
        if signal.getsignal(number) is not signal.SIG_IGN:
            signal.signal(number, stop)
