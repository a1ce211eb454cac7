"""Figures logged with runs (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import matplotlib
import numpy as np

matplotlib.use("Agg")  # sklearn's display imports pyplot; never pick a GUI backend

from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay


def confusion_matrix_figure(matrix: list[list[int]], classes: list[str], title: str) -> Figure:
    """Counts with class names on both axes (rows: true label, columns: predicted).

    Fixed margins (room for class names of a dozen characters) instead of a layout engine:
    drawn for every trial, and the constrained layout made it ~170 instead of ~105 ms.
    """
    figure = Figure(figsize=(7.5, 6.5))
    figure.subplots_adjust(left=0.17, right=0.97, bottom=0.19, top=0.94)
    axes = figure.add_subplot()
    display = ConfusionMatrixDisplay(np.array(matrix), display_labels=classes)
    display.plot(ax=axes, colorbar=False, xticks_rotation=45, values_format="d")
    axes.set_title(title)
    return figure


def gallery_figure(
    images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, classes: list[str]
) -> Figure:
    """Test images titled "true / predicted", green when right and red when wrong (experiment A)."""
    count = len(images)
    columns = min(count, 4)
    rows = -(-count // columns)
    figure = Figure(figsize=(2.2 * columns, 2.5 * rows), layout="constrained")
    for index in range(count):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(images[index].reshape(images.shape[-2:]), cmap="gray")
        right = labels[index] == predictions[index]
        axes.set_title(
            f"true: {classes[labels[index]]}\npred: {classes[predictions[index]]}",
            color="green" if right else "red",
            fontsize=9,
        )
        axes.set_axis_off()
    return figure
