"""glibc's malloc thresholds: no page faults for the blocks a training process reuses; the
garbage collector leaves the long-lived heap alone."""

from __future__ import annotations

import gc
import platform
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import hptune
from hptune import allocator
from hptune.allocator import imports_frozen, long_lived_frozen
from hptune.studyfile import load_study_file

# A fresh process each way (the thresholds are process-wide): A's CNN evaluates 500 images in
# the precision hptune trains in on this CPU (bf16 where the CPU has it, else fp32), twice to
# warm up, then ten times; the page faults of each of the ten are printed.
SCRIPT = """
import resource, sys, torch
from hptune.allocator import keep_freed_memory, own_process
from hptune.config import ModelConfig
from hptune.device import native_cpu_bf16
from hptune.models import build_model
from hptune.training import evaluate
own_process()  # (as the hptune command does)
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.manual_seed(0)
model = build_model(ModelConfig(family="cnn"), (1, 28, 28), 10)
x, y = torch.randn(500, 1, 28, 28), torch.randint(0, 10, (500,))
dtype = torch.bfloat16 if native_cpu_bf16(True) else None
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    evaluate(model, x, y, dtype=dtype)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults[2:])
"""


def page_faults(mode: str) -> list[int]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return [int(n) for n in done.stdout.split()]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_kept_memory_is_reused_without_page_faults() -> None:
    # By default glibc maps the ~9-17 MB layer outputs afresh (or trims them off its heap)
    # and faults their pages in again on every evaluation (~23,000 faults here).
    default = page_faults("default")
    assert min(default) > 5000
    # Kept, they are reused: most evaluations fault no page. Where the heap's free space is
    # fragmented, glibc still grows it by one block now and then (~4,000 faults; where depends
    # on the address-space layout, so it varies from run to run: at most twice in 200
    # evaluations measured). Ten evaluations fault fewer pages than one did by default.
    kept = page_faults("keep")
    assert sum(kept) < min(default)
    assert sorted(kept)[len(kept) // 2] < 100


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A process hptune owns (its CLI, a worker), and the collector as it was after a test that
    froze or disabled it."""
    monkeypatch.setattr(allocator, "_owned", True)
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()


@pytest.mark.parametrize("enabled", [True, False])
def test_imports_run_without_collections_and_stay_frozen(collector: None, enabled: bool) -> None:
    (gc.enable if enabled else gc.disable)()
    gc.unfreeze()
    with imports_frozen():
        assert not gc.isenabled()  # no automatic collection while importing ...
    # ... then what the imports left is frozen, and the collector is as it was.
    assert gc.get_freeze_count() > 0
    assert gc.isenabled() == enabled


def test_a_study_collects_its_own_garbage_not_the_setup(collector: None) -> None:
    gc.unfreeze()
    before = Node()
    setup = weakref.ref(before)
    with long_lived_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        del before  # garbage from before the study: left alone while it runs
        gc.collect()
        assert setup() is not None
        trial = weakref.ref(Node())  # garbage the trials make: collected as usual
        gc.collect()
        assert trial() is None
    # After the study, nothing stays frozen and the old garbage goes too.
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert setup() is None


def test_a_study_leaves_what_was_frozen_before_it_frozen(collector: None) -> None:
    gc.freeze()  # e.g. the CLI's imports, or a server that preloads and freezes
    with long_lived_frozen():
        pass
    # gc.unfreeze would thaw the caller's frozen heap along with the study's: it stays.
    assert gc.get_freeze_count() > 0


def denormals_flushed() -> bool:
    """Whether this thread flushes denormals: 1e-39 (denormal in float32) times one is zero."""
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


@pytest.fixture
def library_caller(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """This process as a notebook's: not hptune's own (a CLI test in this process claimed it),
    denormals kept, and every call of glibc's ``mallopt`` recorded."""
    monkeypatch.setattr(allocator, "_owned", False)
    monkeypatch.setattr(allocator, "_done", False)
    calls: list[object] = []
    monkeypatch.setattr(allocator, "_mallopt", lambda *args: bool(calls.append(args)))
    flushed = denormals_flushed()
    torch.set_flush_denormal(False)
    yield calls
    torch.set_flush_denormal(flushed)


def test_optimize_leaves_a_library_callers_process_as_it_was(
    tmp_path: Path, mnist_dir: Path, library_caller: list[object]
) -> None:
    study = tmp_path / "small.yaml"
    study.write_text(
        "name: small\nn_trials: 2\ndata: {dataset: mnist, val_fraction: 0.2}\n"
        "model: {width: 16, depth: 1}\ntrain: {epochs: 1, batch_size: 32, device: cpu}\n"
        "search_space:\n  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}\n"
    )
    gc.freeze()  # the caller's own frozen heap (e.g. a server that preloads and freezes)
    frozen, enabled = gc.get_freeze_count(), gc.isenabled()
    callers = Node()  # the caller's object, alive during the study, garbage after it
    result = hptune.optimize(load_study_file(study))
    assert len(result.completed) == 2
    # No malloc tuning (glibc's thresholds cannot be read back, so none is set) ...
    assert library_caller == [] and not allocator._done
    # ... the CPU still keeps denormals, and the collector is as the caller left it: enabled,
    # nothing frozen but what the caller froze (frozen objects can only die since) ...
    assert not denormals_flushed()
    assert gc.isenabled() == enabled
    assert gc.get_freeze_count() <= frozen
    # ... so the caller's garbage is collected as before (a frozen object never would be).
    garbage = weakref.ref(callers)
    del callers
    gc.collect()
    assert garbage() is None
