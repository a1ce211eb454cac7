"""Where and how training computes: precision per device, denormals flushed in every thread."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
import torch

from hptune import device as device_module
from hptune.config import TrainConfig
from hptune.device import compute_dtype, uses_cuda_graphs


@pytest.mark.parametrize(
    ("precision", "device", "native", "expected"),
    [
        ("auto", "cpu", True, torch.bfloat16),
        ("auto", "cpu", False, None),  # emulated bf16 would be slower than fp32
        ("auto", "cuda", True, None),  # CUDA trains the graphed fp32 step
        ("fp32", "cpu", True, None),
        ("bf16", "cpu", False, torch.bfloat16),
        ("bf16", "cuda", False, torch.bfloat16),
    ],
)
def test_precision_resolves_per_device(
    monkeypatch: pytest.MonkeyPatch,
    precision: str,
    device: str,
    native: bool,
    expected: torch.dtype | None,
) -> None:
    monkeypatch.setattr(device_module, "native_cpu_bf16", lambda *fast: native)
    config = TrainConfig(precision=precision)  # type: ignore[arg-type]
    assert compute_dtype(config, torch.device(device)) == expected
    # bf16 on CUDA trains eagerly (a bf16 compute copy): a graph would fix the fp32 step.
    assert uses_cuda_graphs(config, torch.device("cuda")) == (precision != "bf16")


# A fresh process (the setting is per thread, copied by threads as they start): a product whose
# values are denormal, computed by torch's two threads; the nonzero results are printed.
DENORMALS = """
import sys, torch
from hptune.allocator import own_process
from hptune.device import flush_denormals
own_process()  # (as the hptune command does)
if sys.argv[1] == "flush":
    assert flush_denormals()
torch.set_num_threads(2)
product = torch.full((1 << 22,), 1e-30) * 1e-10  # 1e-40: below float32's normal range
print(int((product != 0).sum()))
"""


def nonzero_denormals(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", DENORMALS, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86's FTZ/DAZ")
def test_flushed_denormals_are_zero_in_every_thread() -> None:
    # By default the CPU keeps denormals (and computes slowly with them) ...
    assert nonzero_denormals("keep") == 1 << 22
    # ... flushed before torch's threads start, every thread writes zeros.
    assert nonzero_denormals("flush") == 0
