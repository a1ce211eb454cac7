"""What checking the data costs: locating Fashion-MNIST with a cold cache, then again.

    PYTHONPATH=. python examples/data_check_cost.py

The first study hashes the Debian files (SHA-256: the copy's key), decompresses them into the
cache and hashes the copies (the published digests); later studies find the digests remembered
by path, size and modification time and only ``stat`` the files.
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp()  # a cold cache of its own
os.environ.pop("HPTUNE_DATA_VERIFY", None)

from hptune import data
from hptune.config import DataConfig

for label in ("first study (cold cache)", "second study", "third study"):
    start = time.perf_counter()
    data.locate(DataConfig())
    print(f"{label}: locate and check {time.perf_counter() - start:.3f} s")
