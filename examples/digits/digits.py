"""scikit-learn's bundled handwritten digits (1,797 real 8x8 images; no download) for hptune.

``load`` is the study's ``data.loader``: it returns the train and test sets as (x, y) arrays
and the class names, as hptune's loader contract asks (docs/own-model-and-data.md).
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits


def load(test_fraction: float = 0.2, seed: int = 0) -> dict[str, object]:
    """Images (N, 1, 8, 8) as float32 in [0, 1] (the set's 0..16 ink levels / 16), labels 0-9;
    a seeded ``test_fraction`` of the images held out as the test set."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # channels first
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = round(len(labels) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return {
        "train": (images[train], labels[train]),
        "test": (images[test], labels[test]),
        "classes": [str(digit) for digit in range(10)],
    }
