"""Classification metrics from predictions, computed by scikit-learn (not by hand)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support


def macro_f1(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over all ``n_classes`` (a class never predicted counts 0)."""
    return float(
        f1_score(labels, predictions, labels=range(n_classes), average="macro", zero_division=0)
    )


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
