"""The user's own data: a loader's output or a torchvision data set, checked and turned into
the image and label tensors that ``hptune.data.load`` splits and keeps on the device.

A loader (``data.loader: "module:callable"``) is called with ``data.params`` and returns a
mapping with ``train`` and ``test``, each an ``(x, y)`` pair of tensors or NumPy arrays or a
``torch.utils.data.Dataset`` of ``(image, label)``, and optionally ``classes`` (names). Images
are channels-first, ``(N, C, H, W)``, or ``(N, H, W)`` for one channel; uint8 or float.
``data.dataset: "torchvision:NAME"`` reads that torchvision class from the folders
``hptune.data`` searches, downloading only with ``download: true``. Every problem is a
``ConfigError`` (or a ``DataError`` for files not found) naming the study file and the key.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hptune.config import TORCHVISION_PREFIX, DataConfig
from hptune.errors import ConfigError, DataError
from hptune.imports import resolve, spec_text


@dataclass(frozen=True)
class RawSets:
    """Train and test images ``(N, C, H, W)`` (uint8 or float) and int64 labels, on the CPU."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]


def read(config: DataConfig, roots: list[Path], folder: Path | None, where: str) -> RawSets:
    """The loader's or the torchvision set's train and test sets, checked.

    Args:
        roots: folders a torchvision set is looked for in (``hptune.data.search_roots``).
        folder: where the loader's module is looked up first (the study file's folder).
        where: the study file, for error messages.
    """
    if config.loader is not None:
        key = f"{where}: data.loader"
        loader = resolve(config.loader, folder, key)
        arguments = ", ".join(f"{k}={v!r}" for k, v in config.params.items())
        call = f"{spec_text(config.loader)}({arguments})"
        try:
            output = loader(**config.params)
        except Exception as error:  # the user's code: any error is theirs to fix
            raise ConfigError(f"{key}: {call} raised {type(error).__name__}: {error}") from error
        if not isinstance(output, Mapping) or not {"train", "test"} <= set(output):
            found = sorted(output) if isinstance(output, Mapping) else type(output).__name__
            raise ConfigError(
                f"{key}: {call} must return a mapping with 'train' and 'test', but returned {found}"
            )
        classes = output.get("classes")
    else:
        key = f"{where}: data.dataset"
        output, classes = _torchvision_sets(config, roots, key)
    train_x, train_y = _split(output["train"], f"{key}: train")
    test_x, test_y = _split(output["test"], f"{key}: test")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ConfigError(
            f"{key}: train images are {tuple(train_x.shape[1:])} but test images are "
            f"{tuple(test_x.shape[1:])}; both need one (C, H, W)"
        )
    names = _class_names(classes, train_y, test_y, key)
    return RawSets(train_x, train_y, test_x, test_y, names)


def _split(part: Any, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split's images ``(N, C, H, W)`` and int64 labels ``(N,)``, checked."""
    if isinstance(part, tuple | list) and len(part) == 2:
        images, labels = (_tensor(value, key) for value in part)
    elif isinstance(part, torch.utils.data.Dataset) and hasattr(part, "__len__"):
        images, labels = _from_dataset(part, key)
    else:
        raise ConfigError(
            f"{key}: expected an (x, y) pair of tensors or arrays or a torch Dataset, "
            f"but found {type(part).__name__}"
        )
    if images.dim() == 3:
        images = images.unsqueeze(1)  # (N, H, W): one channel
    if images.dim() != 4 or images.shape[0] == 0:
        raise ConfigError(
            f"{key}: images must be (N, C, H, W) or (N, H, W) with N > 0, but found shape "
            f"{tuple(images.shape)}"
        )
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise ConfigError(f"{key}: images must be uint8 or float, but found {images.dtype}")
    if labels.dim() != 1 or len(labels) != len(images):
        raise ConfigError(
            f"{key}: labels must be one per image, shape ({len(images)},), but found "
            f"{tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ConfigError(f"{key}: labels must be integers, but found {labels.dtype}")
    return images, labels.long()


def _tensor(value: Any, key: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray) and value.dtype != object:
        return torch.from_numpy(np.ascontiguousarray(value))
    raise ConfigError(
        f"{key}: expected a tensor or a NumPy array, but found {type(value).__name__}"
    )


def _from_dataset(dataset: Any, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``(image, label)`` of a Dataset stacked; PIL images become channels-first."""
    images: list[torch.Tensor] = []
    labels: list[int] = []
    for index in range(len(dataset)):
        item = dataset[index]
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise ConfigError(
                f"{key}[{index}]: expected (image, label), found {type(item).__name__}"
            )
        image, label = item
        if type(image).__module__.startswith("PIL"):
            array = np.asarray(image)
            image = array if array.ndim == 2 else array.transpose(2, 0, 1)  # HWC -> CHW
        image = _tensor(image, f"{key}[{index}] image")
        if images and image.shape != images[0].shape:
            raise ConfigError(
                f"{key}: images of different shapes: [0] is {tuple(images[0].shape)}, "
                f"[{index}] is {tuple(image.shape)}; resize them to one shape"
            )
        images.append(image)
        labels.append(int(label))
    if not images:
        raise ConfigError(f"{key}: the Dataset is empty")
    return torch.stack(images), torch.tensor(labels)


def _class_names(classes: Any, train_y: torch.Tensor, test_y: torch.Tensor, key: str) -> list[str]:
    """The class names given (as text), or ``0 .. K-1`` with K the largest label + 1."""
    lowest = int(min(train_y.min(), test_y.min()))
    highest = int(max(train_y.max(), test_y.max()))
    names = [str(name) for name in classes] if classes is not None else None
    count = len(names) if names is not None else highest + 1
    if lowest < 0 or highest >= count:
        raise ConfigError(
            f"{key}: labels must be in 0..{count - 1} ({'the classes given' if names else 'K'}), "
            f"but found labels from {lowest} to {highest}"
        )
    if count < 2:
        raise ConfigError(f"{key}: a classifier needs at least 2 classes, but found {count}")
    return names if names is not None else [str(k) for k in range(count)]


def _torchvision_sets(
    config: DataConfig, roots: list[Path], key: str
) -> tuple[dict[str, Any], Any]:
    """The torchvision set's train and test splits (images, labels) and its class names."""
    import torchvision.datasets

    name = config.dataset.removeprefix(TORCHVISION_PREFIX)
    dataset_class = getattr(torchvision.datasets, name, None)
    if not isinstance(dataset_class, type):
        raise ConfigError(f"{key}: torchvision.datasets has no data set {name!r}")
    looked = []
    for root in roots:
        sets = _construct(dataset_class, root, config.params, download=False)
        if sets is not None:
            break
        looked.append(str(root))
    else:
        if not config.download:
            raise DataError(
                f"{key}: {name} was not found in torchvision's layout under any of "
                f"{', '.join(looked)}; allow a download: --set data.download=true"
            )
        sets = _construct(dataset_class, roots[-1], config.params, download=True, key=key)
    assert sets is not None
    train, test = sets
    return {"train": _arrays(train), "test": _arrays(test)}, getattr(train, "classes", None)


def _construct(
    dataset_class: type,
    root: Path,
    params: Mapping[str, Any],
    download: bool,
    key: str | None = None,
) -> tuple[Any, Any] | None:
    """Both splits of ``dataset_class`` under ``root``; None when not there (``key``: raise)."""
    takes_split = "split" in inspect.signature(dataset_class).parameters
    options = [
        {"split": split} if takes_split and "split" not in params else {"train": train}
        for split, train in (("train", True), ("test", False))
    ]
    try:
        train, test = (
            dataset_class(root=str(root), download=download, **params, **option)
            for option in options
        )
        return train, test
    except TypeError as error:  # a data.params key the class does not take
        raise ConfigError(f"{key or 'data.params'}: {dataset_class.__name__}: {error}") from None
    except Exception as error:  # not found or corrupt (RuntimeError, OSError, URLError, ...)
        if key is None:
            return None
        raise DataError(f"{key}: downloading {dataset_class.__name__} failed: {error}") from None


def _arrays(dataset: Any) -> Any:
    """A torchvision set's whole ``data`` and labels when it keeps them (fast), channels-first;
    otherwise the Dataset itself, read item by item."""
    data = getattr(dataset, "data", None)
    labels = getattr(dataset, "targets", getattr(dataset, "labels", None))
    if data is None or labels is None:
        return dataset
    data = torch.as_tensor(np.asarray(data))
    if data.dim() == 4 and data.shape[-1] in (1, 3) and data.shape[1] not in (1, 3):
        data = data.permute(0, 3, 1, 2).contiguous()  # CIFAR keeps (N, H, W, C)
    return data, torch.as_tensor(np.asarray(labels))


def check_fits(values: int, device: torch.device, where: str) -> None:
    """Raise if ``values`` float32 numbers do not fit the device's free memory."""
    needed = values * 4
    free = _free_bytes(device)
    if free is not None and needed > free:
        raise DataError(
            f"{where}: the data set needs {needed / 2**30:.2f} GiB as float32 on {device}, but "
            f"{free / 2**30:.2f} GiB is free; set data.train_subset / data.test_subset"
        )


def _free_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
