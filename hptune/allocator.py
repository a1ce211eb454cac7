"""How hptune's processes hold memory: glibc's malloc thresholds, Python's garbage collector.

**malloc.** PyTorch's CPU tensors come from malloc. By default glibc maps each block above a moving
threshold (128 KiB, rising to the largest block freed, at most 32 MiB) with its own ``mmap`` and
returns free memory at the heap's top to the system above twice that. A training loop frees
and reallocates the same large blocks every step, so it keeps page-faulting fresh zeroed pages
back in. ``keep_freed_memory`` serves blocks up to 32 MiB (glibc's upper limit) from the heap
and keeps up to 1 GiB of freed heap for reuse; the process's resident size stays near its peak.

Measured on 2 AMD EPYC Zen 5 cores (A's CNN in bf16, 12,800 Fashion-MNIST training and 6,000
validation images, ``training.train`` for four epochs, two processes each way): ~93,000 page
faults per epoch before, 88,000 of them in validation; none after the first epoch. Validation
0.18-0.32 -> 0.10-0.13 s, epochs 3.45-3.93 -> 3.43-3.75 s. Where allocation sizes change more
(two models alternating in one process, as in a benchmark), faults ran to 5,000 per CNN step
and the steps took 1.2-1.4x as long. Where the heap's free space is fragmented, glibc still
grows it by one block now and then: evaluating A's CNN on 500 images 200 times (2-core Intel
Xeon), the heap grew by a 16 MB block (~4,000 faults) at most twice after the second
evaluation; which evaluations, if any, depends on the address-space layout and the hash seed,
so it varies from run to run (~23,000 faults in every evaluation by default).

**The garbage collector.** Python's cyclic collector looks at every tracked object in each full
collection, and importing torch, optuna, mlflow and their dependencies leaves ~760,000 of them:
a full collection takes 0.35-0.5 s on 2 cores, and allocations trigger one every few trials
(and several while importing, as the heap grows). The objects that exist before the trials are
modules, classes and the study's setup, which outlive the trials: ``imports_frozen``
runs imports with the collector paused and then freezes what they left (``gc.freeze``), and
``long_lived_frozen`` leaves what exists when a study starts out of collections until it ends.
The collector still runs, over the objects trials create (figures, runs, trials). Measured
(2-core Intel Xeon): importing hptune's study stack 4.75-5.54 -> 3.69-3.88 s; a study of 8 MLP
trials spent 382-545 ms in collections in three of four runs, 43-44 ms frozen.

**Whose process.** These settings are process-wide, and glibc's cannot be read back to restore
them. They apply only in processes hptune owns, those that call ``own_process`` first (its CLI,
its worker processes, its benchmark); in any other (a notebook or a program calling
``hptune.optimize``) each function here changes nothing. ``HPTUNE_FAST_PATHS=off`` turns them
off too, and ``train.fast_paths: off`` those that run once the study file is read
(``hptune.fastpaths``).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
from collections.abc import Iterator

M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts on 64-bit systems
TRIM_THRESHOLD = 2**30

# The operator's switch (hptune.fastpaths, which checks its value): off also means no
# process-wide tuning. Read here without importing torch: the CLI's imports run in
# ``imports_frozen``.
FAST_PATHS_ENV = "HPTUNE_FAST_PATHS"

_done = False
_owned = False


def own_process() -> None:
    """Declare this process hptune's own (its CLI, a worker, its benchmark): process-wide
    tuning (here, and ``hptune.device.flush_denormals``) may apply."""
    global _owned
    _owned = True


def owns_process() -> bool:
    """Whether hptune owns this process (``own_process``)."""
    return _owned


def _tuning() -> bool:
    """Whether process-wide tuning applies: an owned process, not ``HPTUNE_FAST_PATHS=off``."""
    return _owned and os.environ.get(FAST_PATHS_ENV, "").strip().lower() != "off"


def keep_freed_memory() -> bool:
    """Set the thresholds once per process (glibc only, in a process hptune owns); whether
    they are set."""
    global _done
    if not _done and _tuning() and platform.libc_ver()[0] == "glibc":
        _done = _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and _mallopt(
            M_TRIM_THRESHOLD, TRIM_THRESHOLD
        )
    return _done


def _mallopt(parameter: int, value: int) -> bool:
    """glibc's ``mallopt``: whether it took the setting."""
    return bool(ctypes.CDLL(None).mallopt(parameter, value))


@contextlib.contextmanager
def imports_frozen() -> Iterator[None]:
    """Import in this block without cyclic collections, then freeze the objects alive: what
    imports create lives as long as the process (in a process hptune owns)."""
    if not _tuning():
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


@contextlib.contextmanager
def long_lived_frozen(tuned: bool = True) -> Iterator[None]:
    """Leave the objects alive now out of cyclic collections until the block ends; where some
    were frozen before (by ``imports_frozen``), they all stay frozen, as ``gc.unfreeze`` would
    thaw those too. Only in a process hptune owns, and when ``tuned`` (``train.fast_paths``)."""
    if not (tuned and _tuning()):
        yield
        return
    frozen_before = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()
