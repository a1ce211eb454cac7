"""glibc's malloc thresholds: no page faults for the blocks a training process reuses; the
garbage collector leaves the long-lived heap alone."""

from __future__ import annotations

import gc
import platform
import subprocess
import sys
import weakref
from collections.abc import Iterator

import pytest

from hptune.allocator import imports_frozen, long_lived_frozen

# A fresh process each way (the thresholds are process-wide): A's CNN evaluates 500 images in
# bf16, twice to warm up, then ten times; the page faults of each of the ten are printed.
SCRIPT = """
import resource, sys, torch
from hptune.allocator import keep_freed_memory
from hptune.config import ModelConfig
from hptune.models import build_model
from hptune.training import evaluate
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.manual_seed(0)
model = build_model(ModelConfig(family="cnn"), (1, 28, 28), 10)
x, y = torch.randn(500, 1, 28, 28), torch.randint(0, 10, (500,))
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    evaluate(model, x, y, dtype=torch.bfloat16)
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
def collector() -> Iterator[None]:
    """The collector as it was, after a test that froze or disabled it."""
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
