"""Classification metrics from predictions: scikit-learn's, except the per-epoch macro scores.

``macro_scores`` runs after every epoch of every trial (for each member of a batch), where
``precision_recall_fscore_support`` takes ~2.1 ms on 6,000 labels (2 CPU cores), mostly input
checks: by arithmetic, 2.4% of the 0.086 s a graphed MLP epoch took on an H100, and 0.13 s per
epoch of 64 batched members. It uses scikit-learn's formulas on a ``np.bincount`` confusion
matrix instead (~0.03 ms); a test compares it with scikit-learn's. Once-per-trial details stay
scikit-learn's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def macro_scores(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> dict[str, float]:
    """Unweighted means over all ``n_classes`` of per-class precision, recall and F1 (a class
    never predicted or never present counts 0), as ``val/precision_macro``,
    ``val/recall_macro``, ``val/f1_macro``: ``precision_recall_fscore_support(...,
    average="macro", zero_division=0)``'s numbers.
    """
    counts = np.bincount(labels * n_classes + predictions, minlength=n_classes**2)
    counts = counts.reshape(n_classes, n_classes)  # rows: true class
    hits = np.diag(counts).astype(np.float64)
    predicted, actual = counts.sum(axis=0), counts.sum(axis=1)

    def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
        return np.divide(numerator, denominator, out=np.zeros(n_classes), where=denominator > 0)

    return {  # F1 as scikit-learn computes it: 2 tp / (true + predicted)
        "val/f1_macro": float(ratio(2 * hits, actual + predicted).mean()),
        "val/precision_macro": float(ratio(hits, predicted).mean()),
        "val/recall_macro": float(ratio(hits, actual).mean()),
    }


def classification_details(
    labels: np.ndarray, predictions: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Confusion matrix (rows: true class) and per-class precision/recall/F1/support."""
    indices = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=indices, zero_division=0
    )
    return {
        "classes": classes,
        "confusion_matrix": confusion_matrix(labels, predictions, labels=indices).tolist(),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "accuracy": float(np.mean(labels == predictions)),
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
        "f1_macro": float(np.mean(f1)),
    }


def curve_summary(history: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Experiment B's summary of a training run from its per-epoch metrics (epochs from 1).

    - ``best_val_accuracy`` and ``best_epoch`` (argmax of val accuracy, experiment A);
    - ``epochs_to_90pct_best``: first epoch reaching 90% of the best val accuracy;
    - ``stability``: 1 / (1 + variance of the per-epoch train loss);
    - ``mean_epoch_s`` and ``final_train_loss``.
    """
    val_accuracy = np.array([epoch["val/accuracy"] for epoch in history])
    train_loss = np.array([epoch["train/loss"] for epoch in history])
    best = float(val_accuracy.max())
    return {
        "best_val_accuracy": best,
        "best_epoch": float(val_accuracy.argmax() + 1),
        "epochs_to_90pct_best": float(np.argmax(val_accuracy >= 0.9 * best) + 1),
        "stability": float(1.0 / (1.0 + train_loss.var())),
        "mean_epoch_s": float(np.mean([epoch["time/epoch_s"] for epoch in history])),
        "final_train_loss": float(train_loss[-1]),
    }


# Experiment C's question, answered by one rule over a trial's curves (thresholds in points of
# accuracy and relative changes of the validation loss).
OVERFIT_LOSS_RISE = 0.10
OVERFIT_ACCURACY_GAP = 0.03
UNDERFIT_TRAIN_ACCURACY = 0.80
UNDERFIT_LOSS_DROP = 0.02
FIT_RULE = (
    f"over-fit: the val loss ended at least {OVERFIT_LOSS_RISE:.0%} above its minimum while train "
    f"accuracy exceeded val accuracy by more than {OVERFIT_ACCURACY_GAP * 100:g} points; "
    f"under-fit: otherwise, train accuracy ended below {UNDERFIT_TRAIN_ACCURACY:.0%} or the val "
    f"loss was still falling (by more than {UNDERFIT_LOSS_DROP:.0%} over the last quarter of the "
    "epochs); good fit: neither"
)


def fit_diagnosis(history: Sequence[Mapping[str, float]]) -> str:
    """``"over-fit"``, ``"under-fit"`` or ``"good fit"`` by ``FIT_RULE`` from per-epoch metrics."""
    val_loss = np.array([epoch["val/loss"] for epoch in history])
    final = history[-1]
    gap = final["train/accuracy"] - final["val/accuracy"]
    if val_loss[-1] >= (1 + OVERFIT_LOSS_RISE) * val_loss.min() and gap > OVERFIT_ACCURACY_GAP:
        return "over-fit"
    if final["train/accuracy"] < UNDERFIT_TRAIN_ACCURACY:
        return "under-fit"
    lookback = max(1, round(len(val_loss) / 4))
    if (
        len(val_loss) > lookback
        and val_loss[-1] < (1 - UNDERFIT_LOSS_DROP) * val_loss[-1 - lookback]
    ):
        return "under-fit"
    return "good fit"
