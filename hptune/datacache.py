"""Decompressed copies of data sets, each tied to its source, and checks of what a copy holds.

torchvision reads only decompressed IDX files in its own layout, so a gzipped copy (Debian's
package, a study's ``data_dir``) is decompressed into hptune's cache. Each source gets its own
copy, under a key made of its files' paths, sizes and SHA-256 digests: a copy made from one
folder never serves another (a modified copy in one study's ``data_dir`` once became every later
study's data).

Every copy that is read is checked first: each IDX file's header must match its size (a short
file is named as such, not blamed on the cache), and for the known data sets, unless the study
says it uses a modified copy on purpose (``data.verify: false``), each file's decompressed
content must match the published digest. Compressed files differ between distributions
(Debian's .gz files are not torchvision's); what they hold does not.

Digests are computed once per file and remembered in the cache (``digests.json``), keyed by the
file's path, size and modification time, so that later studies only ``stat`` the files.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from hptune.errors import DataError

# Set to false (0, no) to skip the digest check for every study in this environment, as for a
# study with ``data.verify: false`` (e.g. a test suite's small stand-in data sets).
VERIFY_ENV = "HPTUNE_DATA_VERIFY"

# The decompressed content of the published files: (algorithm, digest). Fashion-MNIST: SHA-256
# of Debian's dataset-fashion-mnist files decompressed (the same MD5s as zalando's release);
# MNIST: the MD5s of the decompressed files of LeCun's release (torchvision lists only the MD5s
# of its .gz files).
PUBLISHED: dict[str, dict[str, tuple[str, str]]] = {
    "fashion_mnist": {
        "train-images-idx3-ubyte": (
            "sha256",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        "train-labels-idx1-ubyte": (
            "sha256",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        "t10k-images-idx3-ubyte": (
            "sha256",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        "t10k-labels-idx1-ubyte": (
            "sha256",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    },
    "mnist": {
        "train-images-idx3-ubyte": ("md5", "6bbc9ace898e44ae57da46a324031adb"),
        "train-labels-idx1-ubyte": ("md5", "a25bea736e30d166cdddb491f175f624"),
        "t10k-images-idx3-ubyte": ("md5", "2646ac647ad5339dbf082846283269ea"),
        "t10k-labels-idx1-ubyte": ("md5", "27ae3e4e09519cfbb04c329615203637"),
    },
}
IDX_FILES = tuple(PUBLISHED["mnist"])
_IDX_DIMENSIONS = {"images": 3, "labels": 1}  # images N x 28 x 28, labels N


def cache_root() -> Path:
    """hptune's own data folder (torchvision layout): downloads, and copies under ``copies/``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hptune" / "datasets"


def verification_enabled(verify: bool) -> bool:
    """Whether digests are checked: the study's ``data.verify`` and ``$HPTUNE_DATA_VERIFY``."""
    setting = os.environ.get(VERIFY_ENV, "true").strip().lower()
    return verify and setting not in ("0", "false", "no", "off")


def decompressed_copy(folder: Path, torchvision_class: str) -> Path:
    """A torchvision root holding the four IDX files of ``folder`` (gzipped or not), decompressed
    into the cache under a key of their paths, sizes and contents (made once, then reused).

    Raises:
        DataError: a source file cannot be read or decompressed (naming it).
    """
    sources = source_files(folder)
    identity = [(str(p.resolve()), p.stat().st_size, file_digest(p, "sha256")) for p in sources]
    key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:20]
    root = cache_root() / "copies" / key
    raw = root / torchvision_class / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot write hptune's data cache {raw}: {exc.strerror}") from None
    for name, source in zip(IDX_FILES, sources, strict=True):
        if not (raw / name).is_file():
            _decompress(source, raw / name)
    return root


def source_files(folder: Path) -> list[Path]:
    """The four IDX files of a folder, each as written: decompressed or ``.gz``."""
    return [folder / n if (folder / n).is_file() else folder / f"{n}.gz" for n in IDX_FILES]


def _decompress(source: Path, target: Path) -> None:
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    opener = gzip.open if source.suffix == ".gz" else open
    try:
        with opener(source, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        partial.unlink(missing_ok=True)
        raise DataError(f"cannot read {source}: {exc}") from None
    partial.replace(target)  # atomic: a half-written file is never taken for data


def check(
    raw: Path,
    dataset: str,
    title: str,
    verify: bool,
    sources: Mapping[str, Path] | None = None,
) -> None:
    """Check the decompressed IDX files in ``raw`` before they are read.

    Each file's header must fit its size; with ``verify`` (``verification_enabled``), each
    file's content must be the published one of ``dataset``.

    Args:
        raw: the folder of the four decompressed files.
        dataset: the data set's registry name (``fashion_mnist``).
        title: its name for people ("Fashion-MNIST").
        verify: check the contents' digests.
        sources: file name -> the file it was decompressed from, named in errors instead.

    Raises:
        DataError: one line per file that does not pass, naming it (its source, for a copy).
    """
    problems = []
    for name in IDX_FILES:
        path, shown = raw / name, (sources or {}).get(name, raw / name)
        problem = idx_problem(path, name)
        if problem is None and verify and dataset in PUBLISHED:
            algorithm, published = PUBLISHED[dataset][name]
            if file_digest(path, algorithm) != published:
                problem = (
                    f"not {title}'s published {name} (its {algorithm} differs); use the original "
                    "files, or set data.verify: false if the study uses a modified copy on purpose"
                )
        if problem is not None:
            problems.append(f"{shown}: {problem}")
    if problems:
        raise DataError(problems)


def idx_problem(path: Path, name: str) -> str | None:
    """What is wrong with an IDX file's header (magic number, sizes) given its size, or None."""
    dimensions = _IDX_DIMENSIONS["images" if "images" in name else "labels"]
    size = path.stat().st_size
    with path.open("rb") as stream:
        header = stream.read(4 + 4 * dimensions)
    if len(header) < 4 + 4 * dimensions or header[:4] != bytes([0, 0, 8, dimensions]):
        return f"not an IDX file of {name.split('-')[1]} (its first bytes are not an IDX header)"
    shape = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions)]
    expected = len(header) + math.prod(shape)
    if size != expected:
        kind = "short" if size < expected else "too long"
        return (
            f"{kind}: its header says {' x '.join(map(str, shape))} values "
            f"({expected:,} bytes), but the file has {size:,} bytes"
        )
    return None


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of a file's bytes, remembered by path, size and modification time."""
    stat = path.stat()
    key = f"{algorithm}:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    known = _read_digests()
    if key not in known:
        digest = hashlib.new(algorithm)
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        known = _read_digests()  # another process may have added some meanwhile
        known[key] = digest.hexdigest()
        _write_digests(known)
    return known[key]


def _digests_file() -> Path:
    return cache_root() / "digests.json"


def _read_digests() -> dict[str, str]:
    try:
        known = json.loads(_digests_file().read_text())
    except (OSError, ValueError):  # none yet, or unreadable: computed again
        return {}
    return known if isinstance(known, dict) else {}


def _write_digests(known: dict[str, str]) -> None:
    path = _digests_file()
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    with contextlib.suppress(OSError):  # a read-only cache: digests are computed each time
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(known, indent=0, sort_keys=True))
        partial.replace(path)
