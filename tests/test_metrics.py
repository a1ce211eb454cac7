"""Metrics and the fit diagnosis, from numbers whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from hptune.metrics import fit_diagnosis, macro_scores


def curves(train_acc: list[float], val_acc: list[float], val_loss: list[float]) -> list[dict]:
    return [
        {"train/accuracy": t, "val/accuracy": v, "val/loss": loss}
        for t, v, loss in zip(train_acc, val_acc, val_loss, strict=True)
    ]


@pytest.mark.parametrize(
    ("history", "label"),
    [
        # Val loss 30% above its minimum while train accuracy runs 10 points ahead.
        (
            curves([0.9, 0.97, 1.0, 1.0], [0.88, 0.9, 0.89, 0.88], [0.4, 0.3, 0.35, 0.39]),
            "over-fit",
        ),
        # Train accuracy stuck low: the model cannot fit even its training data.
        (curves([0.5, 0.6, 0.7, 0.75], [0.5, 0.6, 0.7, 0.74], [1.5, 1.2, 1.0, 0.99]), "under-fit"),
        # Still falling fast at the end: stopped before fitting.
        (
            curves([0.85, 0.88, 0.9, 0.92], [0.84, 0.87, 0.89, 0.9], [0.6, 0.5, 0.4, 0.3]),
            "under-fit",
        ),
        # Flat val loss at its minimum, small gap.
        (
            curves([0.9, 0.92, 0.93, 0.93], [0.89, 0.9, 0.91, 0.91], [0.4, 0.3, 0.29, 0.29]),
            "good fit",
        ),
        # A rising val loss with no accuracy gap is noise, not over-fitting.
        (
            curves([0.9, 0.91, 0.92, 0.92], [0.9, 0.91, 0.92, 0.91], [0.3, 0.25, 0.26, 0.3]),
            "good fit",
        ),
    ],
)
def test_fit_diagnosis_follows_the_documented_rule(history: list[dict], label: str) -> None:
    assert fit_diagnosis(history) == label


def test_macro_scores_count_a_never_predicted_class_as_zero() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 1])
    scores = macro_scores(labels, predictions, 3)
    # Class 2 is never predicted: precision 0 and recall 0 pull the means down.
    assert scores["val/recall_macro"] == pytest.approx((1 + 1 + 0) / 3)
    assert scores["val/precision_macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)


@pytest.mark.parametrize("seed", range(20))
def test_macro_scores_are_scikit_learns(seed: int) -> None:
    # Random labels and predictions over 10 classes, some classes missing from one or both.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    present = rng.choice(10, size=int(rng.integers(1, 11)), replace=False)
    labels = rng.choice(present, n)
    noisy = rng.random(n) < rng.random()
    predictions = np.where(noisy, rng.choice(present[: max(1, len(present) // 2)], n), labels)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=range(10), average="macro", zero_division=0
    )
    scores = macro_scores(labels, predictions, 10)
    assert scores["val/precision_macro"] == pytest.approx(precision, rel=1e-12, abs=1e-15)
    assert scores["val/recall_macro"] == pytest.approx(recall, rel=1e-12, abs=1e-15)
    assert scores["val/f1_macro"] == pytest.approx(f1, rel=1e-12, abs=1e-15)
