"""Data sets: found on disk (or downloaded when allowed), read by torchvision, kept on the device.

Where a data set is looked for, in order (the first complete copy wins):

1. the study's ``data.data_dir``;
2. ``$HPTUNE_DATA_DIR``;
3. ``./data`` (torchvision's usual ``root``);
4. hptune's cache, ``$XDG_CACHE_HOME/hptune/datasets`` (default ``~/.cache/hptune/datasets``),
   which is also where downloads and decompressed copies go;
5. the Debian package's folder, e.g. ``/usr/share/datasets/fashion-mnist``.

In folders 1-4 a copy is either torchvision's layout (``ROOT/FashionMNIST/raw/*-ubyte``) or the
four IDX files, gzipped or not, in a folder named after the data set (``ROOT/fashion-mnist/``).
torchvision reads only decompressed files in its own layout, so other copies are decompressed
into the cache once, each source into its own folder (``hptune.datacache``); system files are
never linked there (a download would write through). Whatever copy is found is checked before
it is read: its files' headers, and the published digests of the known data sets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hptune import datacache
from hptune.config import DataConfig
from hptune.datacache import IDX_FILES, cache_root
from hptune.errors import DataError
from hptune.registry import lookup

__all__ = ["DATASETS", "IDX_FILES", "DatasetSpec", "Splits", "cache_root", "load", "locate"]


@dataclass(frozen=True)
class DatasetSpec:
    title: str
    torchvision_class: str
    folder: str
    debian_package: str | None


DATASETS = {
    "fashion_mnist": DatasetSpec(
        "Fashion-MNIST", "FashionMNIST", "fashion-mnist", "dataset-fashion-mnist"
    ),
    "mnist": DatasetSpec("MNIST", "MNIST", "mnist", None),
}


@dataclass(frozen=True)
class Splits:
    """Normalized images ``(N, 1, 28, 28)`` float32 and int64 labels, all on one device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    val_is_test: bool
    _cast: dict[torch.dtype, torch.Tensor] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def train_x_in(self, dtype: torch.dtype | None) -> torch.Tensor:
        """The training images in ``dtype`` (``None``: as they are), cast once and kept: every
        trial of a study trains on the same splits (~25 ms per cast of 60,000 images)."""
        if dtype is None or dtype == self.train_x.dtype:
            return self.train_x
        if dtype not in self._cast:
            self._cast[dtype] = self.train_x.to(dtype)
        return self._cast[dtype]


def search_roots(config: DataConfig) -> list[Path]:
    """The folders looked in, in order (see the module docstring)."""
    roots = [config.data_dir] if config.data_dir else []
    if os.environ.get("HPTUNE_DATA_DIR"):
        roots.append(Path(os.environ["HPTUNE_DATA_DIR"]))
    roots += [Path("data"), cache_root()]
    return roots


def locate(config: DataConfig) -> Path:
    """Return a torchvision root holding the data set, preparing or downloading it if needed,
    and checked (``hptune.datacache.check``).

    Raises:
        DataError: not found, unreadable, or not the published data (unless ``data.verify``
            is false), naming the file.
    """
    spec = lookup(DATASETS, config.dataset, "dataset")
    looked = []
    for root in search_roots(config):
        if _has_files(root / spec.torchvision_class / "raw", compressed=False):
            return _checked(root, spec, config)
        looked.append(root / spec.torchvision_class / "raw")
        if _has_files(root / spec.folder, compressed=None):
            return _copy_of(root / spec.folder, spec, config)
        looked.append(root / spec.folder)
    debian = Path("/usr/share/datasets") / spec.folder
    if _has_files(debian, compressed=None):
        return _copy_of(debian, spec, config)
    looked.append(debian)
    if config.download:
        return _checked(_download(spec), spec, config)
    raise DataError(_missing_message(spec, looked))


def _checked(root: Path, spec: DatasetSpec, config: DataConfig) -> Path:
    verify = datacache.verification_enabled(config.verify)
    datacache.check(root / spec.torchvision_class / "raw", config.dataset, spec.title, verify)
    return root


def _copy_of(folder: Path, spec: DatasetSpec, config: DataConfig) -> Path:
    """The cache's decompressed copy of ``folder``, checked; errors name the source files."""
    for source in datacache.source_files(folder):  # a short uncompressed file: named at once
        if source.suffix != ".gz" and (problem := datacache.idx_problem(source, source.name)):
            raise DataError(f"{source}: {problem}")
    root = datacache.decompressed_copy(folder, spec.torchvision_class)
    sources = dict(zip(IDX_FILES, datacache.source_files(folder), strict=True))
    verify = datacache.verification_enabled(config.verify)
    raw = root / spec.torchvision_class / "raw"
    datacache.check(raw, config.dataset, spec.title, verify, sources)
    return root


def _has_files(folder: Path, compressed: bool | None) -> bool:
    """All four IDX files present; ``compressed=None`` accepts each gzipped or not."""
    suffixes = {False: ("",), True: (".gz",), None: ("", ".gz")}[compressed]
    return all(any((folder / f"{name}{s}").is_file() for s in suffixes) for name in IDX_FILES)


def _download(spec: DatasetSpec) -> Path:
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, spec.torchvision_class)
    root = cache_root()
    try:
        for train in (True, False):
            dataset_class(root=str(root), train=train, download=True)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError by mirror
        raise DataError(f"downloading {spec.title} into {root} failed: {exc}") from None
    return root


def _missing_message(spec: DatasetSpec, looked: list[Path]) -> list[str]:
    lines = [f"{spec.title} was not found; looked in: {', '.join(map(str, looked))}"]
    if spec.debian_package:
        lines.append(f"on Debian/Ubuntu: sudo apt-get install {spec.debian_package}")
    lines.append(
        f"or put the four IDX files ({', '.join(IDX_FILES)}, .gz or not) in "
        f"$HPTUNE_DATA_DIR/{spec.folder}/, or allow a download: --set data.download=true"
    )
    return lines


def _read(root: Path, spec: DatasetSpec, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, spec.torchvision_class)
    try:
        dataset = dataset_class(root=str(root), train=train, download=False)
    except (RuntimeError, OSError, ValueError, AssertionError) as exc:
        raise DataError(f"cannot read {spec.title} from {root}: {exc}") from None
    labels_file = root / spec.torchvision_class / "raw" / IDX_FILES[1 if train else 3]
    _check_labels(dataset.targets, len(dataset.data), len(dataset_class.classes), labels_file)
    return dataset.data, dataset.targets


def _check_labels(labels: torch.Tensor, n_images: int, n_classes: int, path: Path) -> None:
    """One label per image, each a class (a modified copy may hold others: an error, not a
    crash in the middle of training)."""
    if len(labels) != n_images:
        raise DataError(f"{path}: {len(labels)} labels for {n_images} images")
    low, high = (int(labels.min()), int(labels.max())) if len(labels) else (0, 0)
    if low < 0 or high >= n_classes:
        raise DataError(f"{path}: labels must be 0 to {n_classes - 1}, but go from {low} to {high}")


def load(config: DataConfig, device: torch.device) -> Splits:
    """Load train/validation/test splits as normalized tensors on ``device``.

    ``train_subset``/``test_subset`` keep the first N images; the validation split is a seeded
    ``random_split`` of the (subset) training images, or the test set with ``validation: test``.
    """
    spec = lookup(DATASETS, config.dataset, "dataset")
    root = locate(config)
    train_images, train_labels = _read(root, spec, train=True)
    test_images, test_labels = _read(root, spec, train=False)
    train_images, train_labels = (
        train_images[: config.train_subset],
        train_labels[: config.train_subset],
    )
    test_images, test_labels = test_images[: config.test_subset], test_labels[: config.test_subset]

    import torchvision.datasets

    classes = list(getattr(torchvision.datasets, spec.torchvision_class).classes)
    test_x, test_y = _to_device(test_images, config, device), test_labels.to(device)
    if config.validation == "test":
        train_x, train_y = _to_device(train_images, config, device), train_labels.to(device)
        return Splits(train_x, train_y, test_x, test_y, test_x, test_y, classes, val_is_test=True)

    n_val = round(len(train_images) * config.val_fraction)
    if not 0 < n_val < len(train_images):
        raise DataError(
            f"val_fraction={config.val_fraction} of {len(train_images)} training images leaves "
            "an empty split; raise data.train_subset or change data.val_fraction"
        )
    generator = torch.Generator().manual_seed(config.seed)
    # random_split over indices: the same 54k/6k partition experiment B drew with seed 42.
    parts: list[torch.utils.data.Subset[int]] = torch.utils.data.random_split(
        range(len(train_images)),  # type: ignore[arg-type]
        [len(train_images) - n_val, n_val],
        generator=generator,
    )
    train_index, val_index = (torch.tensor(part.indices) for part in parts)
    return Splits(
        train_x=_to_device(train_images[train_index], config, device),
        train_y=train_labels[train_index].to(device),
        val_x=_to_device(train_images[val_index], config, device),
        val_y=train_labels[val_index].to(device),
        test_x=test_x,
        test_y=test_y,
        classes=classes,
        val_is_test=False,
    )


def _to_device(images: torch.Tensor, config: DataConfig, device: torch.device) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1] or [-1, 1], converted on the device."""
    x = images.to(device).unsqueeze(1).float().div_(255.0)
    if config.normalize == "minus_one_one":
        x.sub_(0.5).div_(0.5)  # torchvision's Normalize((0.5,), (0.5,)) as the seeds used it
    return x
