"""Shared fixtures and helpers: an isolated working folder per test, small IDX data sets, real
Fashion-MNIST, and the ``hptune`` command run in this process (``invoke``) or in its own
(``hptune_command``, ``command_environment``)."""

from __future__ import annotations

import contextlib
import gc
import gzip
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hptune import interrupt
from hptune.cli import main
from hptune.data import IDX_FILES

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
ROOT = Path(__file__).parents[1]  # the checkout: its hptune is the one tested


@pytest.fixture(autouse=True, scope="session")
def stand_in_data() -> Iterator[None]:
    """The tests' small data sets (``write_idx``) stand in for MNIST and Fashion-MNIST: they
    are not the published files, so digests are not checked (module-scoped fixtures included).
    Tests of the check itself delete ``HPTUNE_DATA_VERIFY``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HPTUNE_DATA_VERIFY", "false")
        yield


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test runs in its own folder: its own mlruns/, mlflow.db and data cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.delenv("HPTUNE_DATA_DIR", raising=False)
    yield tmp_path
    # The CLI's imports freeze the heap for the rest of a command's process
    # (hptune.allocator); CLI tests run the command in this one, which lives on.
    gc.unfreeze()


@pytest.fixture
def stop_requested() -> Iterator[None]:
    """For tests that request a stop (``interrupt.stop``) in this process, which lives on."""
    yield
    interrupt._requested.clear()


def write_idx(
    folder: Path, n_train: int = 200, n_test: int = 100, gz: bool = False, seed: int = 0
) -> Path:
    """Write the four IDX files of a small, learnable 28x28 10-class data set into ``folder``.

    Each class lights up its own horizontal band of pixels, plus noise.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label : 4 + 2 * label, :] = 255
        files = {
            f"{prefix}-images-idx3-ubyte": struct.pack(">IIII", 0x803, n, 28, 28)
            + images.tobytes(),
            f"{prefix}-labels-idx1-ubyte": struct.pack(">II", 0x801, n) + labels.tobytes(),
        }
        for name, payload in files.items():
            if gz:
                with gzip.open(folder / f"{name}.gz", "wb") as f:
                    f.write(payload)
            else:
                (folder / name).write_bytes(payload)
    assert sorted(p.name.removesuffix(".gz") for p in folder.iterdir()) == sorted(IDX_FILES)
    return folder


@pytest.fixture
def mnist_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Small MNIST-shaped IDX files under $HPTUNE_DATA_DIR/mnist/ (gzipped, as distributed)."""
    root = tmp_path / "datasets"
    write_idx(root / "mnist", gz=True)
    monkeypatch.setenv("HPTUNE_DATA_DIR", str(root))
    return root


@pytest.fixture
def fashion_mnist() -> Path:
    """The real Fashion-MNIST from Debian's package; CI installs it, so there it must exist."""
    if not DEBIAN_FASHION.is_dir():
        message = "needs Debian's dataset-fashion-mnist (make data)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return DEBIAN_FASHION


def invoke(*args: str) -> tuple[int, str, str]:
    """Run ``hptune ARGS`` in this process; its exit code, stdout and stderr. An exception the
    command does not turn into an exit code (a programming error) is raised here."""
    result = CliRunner().invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def hptune_command(*args: str) -> list[str]:
    """``python -m hptune ARGS``, for a test that needs the command in its own process."""
    return [sys.executable, "-m", "hptune", *args]


def command_environment(**extra: str) -> dict[str, str]:
    """This process's environment for a child process, with this checkout's hptune first on
    its import path, and ``extra``."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def study_yaml(path: Path, text: str) -> Path:
    """Write a study file and return its path."""
    path.write_text(text)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(backend_uri: str, *options: str) -> Iterator[str]:
    """A real ``mlflow server`` on loopback over ``backend_uri`` (with ``options``, e.g. where
    artifacts go), stopped at the end; yields its URL once it answers."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
            *options, "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # No job runner: its seven huey consumers (~240 MB each) serve GenAI features only.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # it creates its tables first
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not come up")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
