"""Stop on SIGTERM (and Ctrl-C) as on Ctrl-C, even when the first KeyboardInterrupt is lost.

A signal handler's exception is raised wherever the main thread happens to be. When that is a
weakref callback or a ``__del__`` run by the garbage collector, Python prints "Exception
ignored" and goes on: a study asked to stop kept training (seen in a SIGTERM test, the
handler's KeyboardInterrupt inside ``WeakKeyDictionary``'s callback). So the handler also sets
a flag, and ``check`` (called at every epoch's report) raises again while it is set.
"""

from __future__ import annotations

import signal
import threading

_requested = threading.Event()


def stop(signum: int, frame: object) -> None:
    """Signal handler: remember the request and raise ``KeyboardInterrupt`` here."""
    _requested.set()
    raise KeyboardInterrupt


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
