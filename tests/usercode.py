"""User code for the own-model tests: modules written into a test's folder, forgotten after."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

# A 4-class set of 3-channel 6x6 images: class k lights row k of channel k % 3.
LOADER = """
import numpy as np

def load(n=300, dtype="uint8"):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, n)
    x = rng.integers(0, 50, (n, 3, 6, 6)).astype(np.uint8)
    for k in range(4):
        x[y == k, k % 3, k, :] = 255
    if dtype == "float":
        x = x.astype(np.float32) / 255
    cut = n * 2 // 3
    return {"train": (x[:cut], y[:cut]), "test": (x[cut:], y[cut:]),
            "classes": ["north", "east", "south", "west"]}
"""

# A small CNN; ``batchnorm`` adds a layer with buffers.
FACTORY = """
from torch import nn

def small_cnn(channels: int, input_shape, num_classes, dropout: float = 0.0, batchnorm=False):
    c, h, w = input_shape
    layers = [nn.Conv2d(c, channels, 3, padding=1), nn.ReLU()]
    if batchnorm:
        layers.append(nn.BatchNorm2d(channels))
    return nn.Sequential(*layers, nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(channels * h * w, num_classes))
"""

STUDY = """
name: own
n_trials: 2
model:
  factory: mymodels:small_cnn
  params: {dropout: 0.1}
data:
  loader: mydata:load
  params: {n: 300}
train: {epochs: 2, batch_size: 32, device: cpu}
search_space:
  channels: {type: categorical, choices: [4, 8]}
  lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(name="user_code")
def user_code_fixture(tmp_path: Path) -> Iterator[Path]:
    """``mymodels.py``, ``mydata.py`` and ``study.yaml`` in the test's folder; the modules
    imported from it are forgotten afterwards (the next test writes its own)."""
    write(tmp_path, "mymodels.py", FACTORY)
    write(tmp_path, "mydata.py", LOADER)
    write(tmp_path, "study.yaml", STUDY)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(tmp_path)):
            del sys.modules[name]
