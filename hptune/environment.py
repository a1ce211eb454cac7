"""``os.environ`` put back as it was after hptune's work in a caller's process.

hptune runs in its caller's process (a notebook, a program) when used as a library, and that
environment is the caller's; yet libraries hptune calls write to it: importing torchvision
makes torch set ``TORCHINDUCTOR_CACHE_DIR``, MLflow's fluent API sets ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def restored_environment() -> Iterator[None]:
    """Run the block, then put back every environment variable it set, changed or removed."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        restore_environment(saved)


def restore_environment(saved: Mapping[str, str]) -> None:
    """Make ``os.environ`` ``saved`` again, changing only the variables that differ."""
    for name in os.environ.keys() - saved.keys():
        del os.environ[name]
    for name, value in saved.items():
        if os.environ.get(name) != value:
            os.environ[name] = value
