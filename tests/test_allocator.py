"""glibc's malloc thresholds: no page faults for the blocks a training process reuses."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# A fresh process each way (the thresholds are process-wide): A's CNN evaluates 500 images four
# times in bf16; the page faults of the last evaluation are printed.
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
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    evaluate(model, x, y, dtype=torch.bfloat16)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_kept_memory_is_reused_without_page_faults() -> None:
    # By default glibc maps the ~9-17 MB layer outputs afresh (or trims them off its heap)
    # and faults their pages in again on every evaluation (~24,000 faults here).
    assert page_faults("default") > 5000
    assert page_faults("keep") < 100
