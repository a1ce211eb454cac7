"""The data cache serves each source its own copy, and a copy that is not the data is refused."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import pytest
import torch

from hptune import data, datacache
from hptune.config import DataConfig
from hptune.errors import DataError
from hptune.study import _parent_tags
from hptune.studyfile import load_study_file
from tests.conftest import invoke, study_yaml, write_idx

CPU = torch.device("cpu")


def zero_labels(folder: Path) -> None:
    """Set every training label of a gzipped IDX folder to 0 (a poisoned copy)."""
    path = folder / "train-labels-idx1-ubyte.gz"
    labels = bytearray(gzip.decompress(path.read_bytes()))
    labels[8:] = bytes(len(labels) - 8)
    path.write_bytes(gzip.compress(bytes(labels)))


def test_a_modified_copy_does_not_poison_a_later_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_idx(tmp_path / "modified" / "fashion-mnist", gz=True)
    zero_labels(tmp_path / "modified" / "fashion-mnist")
    write_idx(tmp_path / "original" / "fashion-mnist", gz=True)
    # A study trains on the modified copy, on purpose.
    modified = DataConfig(data_dir=tmp_path / "modified", verify=False, validation="test")
    assert data.load(modified, CPU).train_y.max().item() == 0
    # A later study without data_dir gets the data it finds, never the modified copy.
    monkeypatch.setenv("HPTUNE_DATA_DIR", str(tmp_path / "original"))
    later = data.load(DataConfig(validation="test"), CPU)
    assert len(later.train_y.unique()) == 10


def test_a_source_changed_in_place_gets_a_new_copy(tmp_path: Path) -> None:
    folder = write_idx(tmp_path / "mine" / "fashion-mnist", gz=True)
    config = DataConfig(data_dir=tmp_path / "mine", validation="test")
    first = data.locate(config)
    zero_labels(folder)
    # The same folder with other content is another source: its own copy, its own labels.
    second = data.locate(config)
    assert second != first
    assert data.load(config, CPU).train_y.max().item() == 0


@pytest.mark.parametrize("gz", [False, True])
def test_a_short_file_is_named_not_the_cache(tmp_path: Path, gz: bool) -> None:
    folder = write_idx(tmp_path / "mine" / "fashion-mnist", gz=gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    payload = (folder / name).read_bytes()
    payload = gzip.decompress(payload) if gz else payload
    short = payload[: len(payload) // 2]
    (folder / name).write_bytes(gzip.compress(short) if gz else short)
    path = study_yaml(tmp_path / "s.yaml", f"name: s\ndata: {{data_dir: {tmp_path / 'mine'}}}\n")
    code, _, err = invoke("optimize", str(path), "--n-trials", "1")
    # One error line naming the short file the user gave, not hptune's cache; nothing written.
    assert code == 2
    assert err.splitlines() == [
        f"error: {folder / name}: short: its header says 200 x 28 x 28 values (156,816 bytes), "
        f"but the file has {len(short):,} bytes"
    ]
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()


def test_data_that_is_not_the_published_data_set_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(datacache.VERIFY_ENV)
    folder = write_idx(tmp_path / "mine" / "mnist", gz=True)
    config = DataConfig(dataset="mnist", data_dir=tmp_path / "mine")
    with pytest.raises(DataError) as caught:
        data.locate(config)
    # Each file that differs is named as the user gave it, with the way out.
    assert caught.value.problems[0] == (
        f"{folder / 'train-images-idx3-ubyte.gz'}: not MNIST's published train-images-idx3-ubyte "
        "(its md5 differs); use the original files, or set data.verify: false if the study uses "
        "a modified copy on purpose"
    )
    assert len(caught.value.problems) == 4
    # Said on purpose, the copy is used.
    assert data.locate(config.model_copy(update={"verify": False})).is_dir()


def test_the_real_fashion_mnist_passes_and_a_modified_copy_of_it_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fashion_mnist: Path
) -> None:
    monkeypatch.delenv(datacache.VERIFY_ENV)
    # Debian's files, decompressed, are the published Fashion-MNIST.
    assert data.locate(DataConfig()).is_dir()
    copy = tmp_path / "copy" / "fashion-mnist"
    copy.mkdir(parents=True)
    for name in datacache.IDX_FILES:
        (copy / f"{name}.gz").symlink_to(fashion_mnist / f"{name}.gz")
    (copy / "train-labels-idx1-ubyte.gz").unlink()
    (copy / "train-labels-idx1-ubyte.gz").write_bytes(
        (fashion_mnist / "train-labels-idx1-ubyte.gz").read_bytes()
    )
    zero_labels(copy)
    with pytest.raises(DataError) as caught:
        data.locate(DataConfig(data_dir=copy.parent))
    # Only the labels differ, and only they are named.
    (problem,) = caught.value.problems
    assert problem.startswith(f"{copy / 'train-labels-idx1-ubyte.gz'}: not Fashion-MNIST's")


def test_the_run_says_whether_its_data_were_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(datacache.VERIFY_ENV)
    plain = load_study_file(study_yaml(tmp_path / "a.yaml", "name: a\n"))
    modified = load_study_file(study_yaml(tmp_path / "b.yaml", "name: b\ndata: {verify: false}\n"))
    splits = _tiny_splits()
    # The parent run's tags: checked against the published digests, or a modified copy.
    assert _parent_tags(plain, splits)["hptune.data_verified"] == "true"
    assert _parent_tags(modified, splits)["hptune.data_verified"] == "false"
    monkeypatch.setenv(datacache.VERIFY_ENV, "false")
    assert _parent_tags(plain, splits)["hptune.data_verified"] == "false"


def _tiny_splits() -> data.Splits:
    x, y = torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)
    classes = [str(k) for k in range(10)]
    return data.Splits(x, y, x, y, x, y, classes=classes, val_is_test=False)


def test_each_file_is_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(datacache.VERIFY_ENV)
    write_idx(tmp_path / "mine" / "mnist", gz=True)
    hashed: list[str] = []
    real_new = hashlib.new

    def counting_new(name: str, *args: object) -> object:
        hashed.append(name)
        return real_new(name, *args)

    monkeypatch.setattr(datacache.hashlib, "new", counting_new)
    config = DataConfig(dataset="mnist", data_dir=tmp_path / "mine")
    for _ in range(2):
        with pytest.raises(DataError):
            data.locate(config)
    # The first study hashed the 4 sources (sha256: the copy's key) and the 4 copies (md5);
    # the second only looked at sizes and times.
    assert sorted(hashed) == ["md5"] * 4 + ["sha256"] * 4


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (bytes([3] * 199 + [10]), "labels must be 0 to 9, but go from 3 to 10"),
        (bytes([1] * 150), "150 labels for 200 images"),
    ],
)
def test_labels_that_are_not_classes_are_an_error(
    tmp_path: Path, labels: bytes, expected: str
) -> None:
    raw = write_idx(tmp_path / "tv" / "MNIST" / "raw")
    path = raw / "train-labels-idx1-ubyte"
    path.write_bytes(struct.pack(">II", 0x801, len(labels)) + labels)
    # A modified copy's label file is named before any training (not a crash in a trial).
    with pytest.raises(DataError, match=f"^{path}: {expected}$"):
        data.load(DataConfig(dataset="mnist", data_dir=tmp_path / "tv"), CPU)
