"""The confusion-matrix PNG drawn once per study and redrawn per matrix."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from hptune.plots import confusion_matrix_figure, confusion_matrix_png, gallery_indices

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
FASHION += ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def full_draw(matrix: list[list[int]], classes: list[str], title: str) -> bytes:
    buffer = io.BytesIO()
    confusion_matrix_figure(matrix, classes, title).savefig(buffer, format="png")
    return buffer.getvalue()


def matrices(size: int, seed: int) -> list[list[list[int]]]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 1000, (size, size)).tolist(),  # counts of 1 to 3 digits
        (np.diag(np.full(size, 6000)) + 1).tolist(),  # one colour each side of the threshold
        np.zeros((size, size), int).tolist(),  # no spread: one colour
        rng.integers(0, 5, (size, size)).tolist(),
    ]


@pytest.mark.parametrize(
    ("classes", "title"),
    [(FASHION, "Confusion matrix (validation)"), (["0", "1", "2"], "Confusion matrix (test set)")],
)
def test_each_png_is_the_full_draw_of_its_matrix(classes: list[str], title: str) -> None:
    # One figure serves them all in turn: nothing of a previous matrix may stay on it.
    for matrix in matrices(len(classes), seed=len(classes)):
        assert confusion_matrix_png(matrix, classes, title) == full_draw(matrix, classes, title)


def test_the_counts_and_frame_are_drawn_over_the_cells() -> None:
    # A check on the check above: the two PNGs differ where the matrices do.
    first, second = matrices(10, seed=1)[:2]
    title = "Confusion matrix (validation)"
    pixels = [
        np.asarray(Image.open(io.BytesIO(confusion_matrix_png(m, FASHION, title))))
        for m in (first, second)
    ]
    assert pixels[0].shape == (650, 750, 4)
    assert (pixels[0] != pixels[1]).any(axis=-1).sum() > 10_000


def test_threads_drawing_at_once_each_get_their_own_matrix() -> None:
    title = "Confusion matrix (validation)"
    cases = matrices(10, seed=2) * 3
    with ThreadPoolExecutor(4) as pool:
        pngs = list(pool.map(lambda m: confusion_matrix_png(m, FASHION, title), cases))
    assert pngs == [full_draw(m, FASHION, title) for m in cases]


def test_the_gallery_shows_the_first_errors_beside_the_first_right_answers() -> None:
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
    predicted = np.array([0, 1, 2, 3, 4, 9, 6, 7, 0, 9, 1, 1])  # wrong at 5, 8 and 10
    assert gallery_indices(labels, predicted, 4).tolist() == [0, 1, 5, 8]
    assert gallery_indices(labels, predicted, 8).tolist() == [0, 1, 2, 3, 4, 5, 8, 10]
    # No errors (or only errors): the gallery is still full.
    assert gallery_indices(labels, labels, 4).tolist() == [0, 1, 2, 3]
    assert gallery_indices(labels, (labels + 1) % 10, 4).tolist() == [0, 1, 2, 3]
