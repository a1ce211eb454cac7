"""Figures logged with runs.

Drawn with matplotlib's object API (``Figure`` on a ``FigureCanvasAgg``): no display needed,
and no global backend chosen, so a program that imports hptune keeps its own (a notebook's
inline plots, a GUI's windows). Nothing here goes through ``pyplot``'s figure manager.
"""

from __future__ import annotations

import io
import threading
from functools import lru_cache

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave
from sklearn.metrics import ConfusionMatrixDisplay


def confusion_matrix_figure(matrix: list[list[int]], classes: list[str], title: str) -> Figure:
    """Counts with class names on both axes (rows: true label, columns: predicted): the full
    draw, whose PNG ``confusion_matrix_png`` gives at half the cost for every trial.

    Fixed margins (room for class names of a dozen characters) instead of a layout engine: the
    constrained layout made a full draw ~170 instead of ~105 ms.
    """
    return _confusion_display(matrix, classes, title).figure_


def _confusion_display(
    matrix: list[list[int]], classes: list[str], title: str
) -> ConfusionMatrixDisplay:
    figure = Figure(figsize=(7.5, 6.5))
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.17, right=0.97, bottom=0.19, top=0.94)
    axes = figure.add_subplot()
    display = ConfusionMatrixDisplay(np.array(matrix), display_labels=classes)
    display.plot(ax=axes, colorbar=False, xticks_rotation=45, values_format="d")
    axes.set_title(title)
    return display


def confusion_matrix_png(matrix: list[list[int]], classes: list[str], title: str) -> bytes:
    """``confusion_matrix_figure`` saved as PNG (the same pixels), at about half the cost.

    Drawn for every complete trial, where matplotlib's text layout of ~130 labels made it ~125 ms
    of CPU. The labels, ticks and title stay the same within a study, so they are drawn once
    (matplotlib's blitting) and each matrix redraws only its cells and their counts.
    """
    return _painter(tuple(classes), title).png(np.asarray(matrix))


@lru_cache(maxsize=8)
def _painter(classes: tuple[str, ...], title: str) -> _ConfusionPainter:
    return _ConfusionPainter(list(classes), title)


class _ConfusionPainter:
    """A drawn confusion-matrix figure whose cells and counts are redrawn per matrix."""

    def __init__(self, classes: list[str], title: str) -> None:
        size = len(classes)
        self.display = _confusion_display(np.zeros((size, size), int).tolist(), classes, title)
        self.figure = self.display.figure_
        self.canvas = FigureCanvasAgg(self.figure)
        self.axes = self.figure.axes[0]
        # Drawn over the cells: the frame, then the counts (their order in a full draw).
        self.cells = [self.display.im_, *self.axes.spines.values(), *self.display.text_.ravel()]
        for artist in self.cells:
            artist.set_animated(True)  # left out of the background
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.figure.bbox)
        self.lock = threading.Lock()  # one figure, drawn by any thread

    def png(self, matrix: np.ndarray) -> bytes:
        image = self.display.im_
        low, high = matrix.min(), matrix.max()
        # ConfusionMatrixDisplay.plot's colours: the cmap's far end on the other half's cells.
        dark, light = image.cmap(0), image.cmap(1.0)
        threshold = (high + low) / 2.0
        with self.lock:
            image.set_data(matrix)
            image.set_clim(low, high)
            for text, count in zip(self.display.text_.ravel(), matrix.ravel(), strict=True):
                text.set_text(format(count, "d"))
                text.set_color(light if count < threshold else dark)
            self.canvas.restore_region(self.background)
            for artist in self.cells:
                self.axes.draw_artist(artist)
            buffer = io.BytesIO()  # as savefig writes a PNG from the Agg canvas
            imsave(buffer, self.canvas.buffer_rgba(), format="png", dpi=self.figure.dpi)
        return buffer.getvalue()


def _displayable(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A (C, H, W) image as imshow takes it: grayscale (H, W), or RGB (H, W, 3) scaled to
    [0, 1] whatever the normalization; any other channel count shows its first channel."""
    if image.ndim == 3 and image.shape[0] == 3:
        rgb = image.transpose(1, 2, 0).astype(np.float64)
        low, high = rgb.min(), rgb.max()
        return (rgb - low) / (high - low) if high > low else np.zeros_like(rgb), None
    return image[0] if image.ndim == 3 else image, "gray"


def gallery_indices(labels: np.ndarray, predictions: np.ndarray, count: int) -> np.ndarray:
    """Which test images a gallery of ``count`` shows: the first misclassified ones (up to half
    of it: the errors are what a reader looks for) and the first correct ones, in test order."""
    wrong = np.flatnonzero(labels != predictions)
    right = np.flatnonzero(labels == predictions)
    errors = min(len(wrong), max(count // 2, count - len(right)))  # more when too few are right
    return np.sort(np.concatenate([wrong[:errors], right[: count - errors]]))


def gallery_figure(
    images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, classes: list[str]
) -> Figure:
    """Test images titled "true / predicted", green when right and red when wrong (experiment A);
    ``gallery_indices`` picks them."""
    count = len(images)
    columns = min(count, 4)
    rows = -(-count // columns)
    figure = Figure(figsize=(2.2 * columns, 2.5 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    for index in range(count):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(*_displayable(images[index]))
        right = labels[index] == predictions[index]
        axes.set_title(
            f"true: {classes[labels[index]]}\npred: {classes[predictions[index]]}",
            color="green" if right else "red",
            fontsize=9,
        )
        axes.set_axis_off()
    return figure
