"""Finding data sets on disk, splitting them, and keeping them on the device as tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hptune import data
from hptune.config import DataConfig
from hptune.errors import DataError
from tests.conftest import write_idx

CPU = torch.device("cpu")


def test_torchvision_layout_in_data_dir_is_used_as_is(tmp_path: Path) -> None:
    write_idx(tmp_path / "tv" / "MNIST" / "raw")
    config = DataConfig(dataset="mnist", data_dir=tmp_path / "tv")
    # A torchvision root is read in place, not copied.
    assert data.locate(config) == tmp_path / "tv"


def test_gzipped_flat_folder_is_decompressed_into_the_cache(tmp_path: Path) -> None:
    write_idx(tmp_path / "mine" / "mnist", gz=True)
    config = DataConfig(dataset="mnist", data_dir=tmp_path / "mine")
    root = data.locate(config)
    # torchvision reads only decompressed files in its own layout, so hptune's cache holds them,
    # in a folder of their own source.
    assert root.parent == data.cache_root() / "copies"
    assert (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_study_data_dir_comes_before_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_idx(tmp_path / "first" / "MNIST" / "raw")
    write_idx(tmp_path / "second" / "MNIST" / "raw")
    monkeypatch.setenv("HPTUNE_DATA_DIR", str(tmp_path / "second"))
    assert (
        data.locate(DataConfig(dataset="mnist", data_dir=tmp_path / "first")) == tmp_path / "first"
    )
    # Without a data_dir in the study, $HPTUNE_DATA_DIR is next.
    assert data.locate(DataConfig(dataset="mnist")) == tmp_path / "second"


def test_datasets_do_not_take_each_others_files(tmp_path: Path) -> None:
    write_idx(tmp_path / "root" / "fashion-mnist")
    # Fashion-MNIST's files are never served as MNIST (their file names are the same).
    with pytest.raises(DataError, match="MNIST was not found"):
        data.locate(DataConfig(dataset="mnist", data_dir=tmp_path / "root"))


def test_missing_data_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        data.locate(DataConfig(dataset="mnist", data_dir=tmp_path / "empty"))
    text = str(caught.value)
    # The error lists where it looked and the ways to fix it, and nothing was downloaded.
    assert str(tmp_path / "empty") in text
    assert "--set data.download=true" in text and "HPTUNE_DATA_DIR" in text
    assert not (data.cache_root() / "MNIST").exists()


def test_corrupt_file_is_a_data_error(tmp_path: Path) -> None:
    raw = write_idx(tmp_path / "tv" / "MNIST" / "raw")
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataError, match=f"{raw / 'train-images-idx3-ubyte'}: not an IDX file"):
        data.load(DataConfig(dataset="mnist", data_dir=tmp_path / "tv"), CPU)


def test_split_is_seeded_and_disjoint(mnist_dir: Path) -> None:
    config = DataConfig(dataset="mnist", val_fraction=0.1, seed=7)
    first, again = data.load(config, CPU), data.load(config, CPU)
    # 200 training images -> 180 / 20, the same 20 each time for the same seed.
    assert (len(first.train_y), len(first.val_y), len(first.test_y)) == (180, 20, 100)
    assert torch.equal(first.val_x, again.val_x)
    other = data.load(DataConfig(dataset="mnist", val_fraction=0.1, seed=8), CPU)
    assert not torch.equal(first.val_x, other.val_x)


def test_subsets_keep_the_first_images(mnist_dir: Path) -> None:
    full = data.load(DataConfig(dataset="mnist", validation="test"), CPU)
    cut = data.load(
        DataConfig(dataset="mnist", validation="test", train_subset=50, test_subset=30), CPU
    )
    # train_subset takes the first N training images (experiment C used the first 500).
    assert torch.equal(cut.train_x, full.train_x[:50])
    assert torch.equal(cut.test_y, full.test_y[:30])
    # validation: test validates on the (subset) test set itself.
    assert cut.val_is_test and torch.equal(cut.val_x, cut.test_x)


@pytest.mark.parametrize(
    ("normalize", "low", "high"), [("minus_one_one", -1.0, 1.0), ("zero_one", 0.0, 1.0)]
)
def test_normalization_ranges(mnist_dir: Path, normalize: str, low: float, high: float) -> None:
    splits = data.load(DataConfig(dataset="mnist", normalize=normalize), CPU)
    assert splits.train_x.dtype == torch.float32 and splits.input_shape == (1, 28, 28)
    # Pixel 0 maps to the low end and 255 to the high end of the range.
    assert splits.train_x.min().item() == low and splits.train_x.max().item() == high


def test_real_fashion_mnist_from_the_debian_package(fashion_mnist: Path) -> None:
    splits = data.load(DataConfig(dataset="fashion_mnist", normalize="zero_one"), CPU)
    # Experiment B's split: 54,000 / 6,000 of the 60k, and the 10k test set aside.
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (54_000, 6_000, 10_000)
    assert splits.classes[0] == "T-shirt/top"
    pixels = torch.cat([splits.train_x, splits.val_x])
    # Known statistics of Fashion-MNIST's training pixels in [0, 1].
    assert pixels.mean().item() == pytest.approx(0.2860, abs=1e-3)
    assert pixels.std().item() == pytest.approx(0.3530, abs=1e-3)


def test_training_images_are_cast_once_per_splits(mnist_dir: Path) -> None:
    splits = data.load(DataConfig(dataset="mnist", val_fraction=0.2), torch.device("cpu"))
    assert splits.train_x_in(None) is splits.train_x
    assert splits.train_x_in(torch.float32) is splits.train_x
    bf16 = splits.train_x_in(torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and torch.equal(bf16, splits.train_x.to(torch.bfloat16))
    assert splits.train_x_in(torch.bfloat16) is bf16  # kept: the next trial casts nothing
