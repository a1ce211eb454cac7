"""``data.dataset: torchvision:NAME``: a torchvision class read from the folders hptune
searches, here CIFAR-10 from files written in its own python-batches format."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets

from hptune import data
from hptune.config import DataConfig
from hptune.errors import DataError

CLASSES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: Path, monkeypatch: pytest.MonkeyPatch, per_batch: int = 4) -> None:
    """CIFAR-10's layout under ``root``: five training batches, a test batch, batches.meta
    (pickled dicts; rows of 3,072 bytes, channel-major). torchvision checks each file's MD5
    against its list, so the lists are pointed at these files' MD5s."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    for index, name in enumerate(names):
        rows = np.zeros((per_batch, 3, 32, 32), np.uint8)
        rows[:, 1, 2, 3] = 10 * index + np.arange(per_batch)  # green at row 2, column 3
        labels = [(index + k) % 10 for k in range(per_batch)]
        entry = {"data": rows.reshape(per_batch, -1), "labels": labels}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CLASSES}))

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    cifar = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cifar, "train_list", [[n, md5(n)] for n in names[:5]])
    monkeypatch.setattr(cifar, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(cifar, "meta", {**cifar.meta, "md5": md5("batches.meta")})


def test_cifar10_batches_are_read_channels_first_with_their_class_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_cifar10(tmp_path / "tv", monkeypatch)
    config = DataConfig(
        dataset="torchvision:CIFAR10", data_dir=tmp_path / "tv", validation="test",
        normalize="zero_one",
    )  # fmt: skip
    splits = data.load(config, torch.device("cpu"))
    # 5 batches of 4 training images, 4 test images, each (3, 32, 32) channels first.
    assert splits.train_x.shape == (20, 3, 32, 32)
    assert splits.test_x.shape == (4, 3, 32, 32)
    # The pixel written at channel 1 (green), row 2, column 3 is there, scaled to [0, 1].
    assert splits.train_x[5, 1, 2, 3] * 255 == pytest.approx(11)
    assert splits.train_x[5].sum() * 255 == pytest.approx(11)
    assert splits.test_x[:, 1, 2, 3].mul(255).round().tolist() == [50, 51, 52, 53]
    # Labels and the class names from batches.meta.
    assert splits.train_y[:5].tolist() == [0, 1, 2, 3, 1]
    assert splits.classes == CLASSES


def test_a_torchvision_set_not_on_disk_is_an_error_without_download(tmp_path: Path) -> None:
    config = DataConfig(dataset="torchvision:CIFAR10", data_dir=tmp_path / "nothing")
    # Nothing is downloaded unless download: true; the message says where it looked.
    with pytest.raises(DataError, match=r"CIFAR10 was not found .*/nothing, .*download=true"):
        data.load(config, torch.device("cpu"))
    assert not (tmp_path / "cache" / "hptune" / "datasets" / "cifar-10-batches-py").exists()
