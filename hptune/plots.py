"""Figures logged with runs (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import matplotlib
import numpy as np

matplotlib.use("Agg")  # sklearn's display imports pyplot; never pick a GUI backend

from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay


def confusion_matrix_figure(matrix: list[list[int]], classes: list[str], title: str) -> Figure:
    """Counts with class names on both axes (rows: true label, columns: predicted)."""
    figure = Figure(figsize=(7.5, 6.5), layout="constrained")
    axes = figure.add_subplot()
    display = ConfusionMatrixDisplay(np.array(matrix), display_labels=classes)
    display.plot(ax=axes, colorbar=False, xticks_rotation=45, values_format="d")
    axes.set_title(title)
    return figure
