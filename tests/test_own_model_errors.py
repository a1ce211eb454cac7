"""Bad user code and data fail at start, through the real CLI: one ``error:`` line naming the
study file, the key and what was found, exit code 2, nothing written to the stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import invoke
from tests.usercode import user_code_fixture, write  # noqa: F401  (the user_code fixture)

# Extra user code appended to mymodels.py / mydata.py for the cases below.
MODELS = """
import torch
WIDTH = 3
def raises(**kwargs):
    raise ValueError("no such layer size")
def not_a_module(**kwargs):
    return 42
def three_logits(input_shape, **kwargs):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(3))
def forward_fails(**kwargs):
    return torch.nn.Linear(5, 4)
"""
DATA = """
import torch
def a_list():
    return [1, 2]
def five_dims():
    x = np.zeros((10, 1, 1, 4, 4), np.uint8)
    return {"train": (x, np.zeros(10, int)), "test": (x, np.zeros(10, int))}
def label_too_big():
    x = np.zeros((10, 4, 4), np.uint8)
    return {"train": (x, np.arange(10) % 2), "test": (x, np.full(10, 7)), "classes": ["a", "b"]}
def strings():
    return {"train": ("x", [0]), "test": ("x", [0])}
class Ragged(torch.utils.data.Dataset):
    def __len__(self):
        return 3
    def __getitem__(self, i):
        return torch.zeros(1, 4 + i, 4), 0
def ragged():
    return {"train": Ragged(), "test": Ragged()}
"""

CASES = {
    # name: (--set overrides, text the error line must contain after "<file>: ")
    "module not found": (
        ["model.factory=nosuchmodule:build"],
        "model.factory: module 'nosuchmodule' not found",
    ),
    "attribute missing": (
        ["model.factory=mymodels:nope"],
        "model.factory: module 'mymodels' (",
    ),
    "not callable": (
        ["model.factory=mymodels:WIDTH"],
        "'mymodels:WIDTH' is not callable (found int 3)",
    ),
    "factory raises": (
        ["model.factory=mymodels:raises"],
        "model.factory: mymodels:raises(dropout=0.1, channels=4, input_shape=(3, 6, 6), "
        "num_classes=4) raised ValueError: no such layer size",
    ),
    "factory returns no module": (
        ["model.factory=mymodels:not_a_module"],
        "returned int 42, not a torch.nn.Module",
    ),
    "output of the wrong shape": (
        ["model.factory=mymodels:three_logits"],
        "model.factory: the model maps input (2, 3, 6, 6) to (2, 3), but hptune needs (2, 4)",
    ),
    "forward pass fails": (
        ["model.factory=mymodels:forward_fails"],
        "model.factory: the model's forward pass on input (2, 3, 6, 6) raised RuntimeError",
    ),
    "loader module not found": (["data.loader=nodata:load"], "data.loader: module 'nodata'"),
    "loader returns a list": (
        ["data.loader=mydata:a_list", "data.params={}"],
        "data.loader: mydata:a_list() must return a mapping with 'train' and 'test', but "
        "returned list",
    ),
    "images of five dimensions": (
        ["data.loader=mydata:five_dims", "data.params={}"],
        "data.loader: train: images must be (N, C, H, W) or (N, H, W) with N > 0, but found "
        "shape (10, 1, 1, 4, 4)",
    ),
    "labels outside 0..K-1": (
        ["data.loader=mydata:label_too_big", "data.params={}"],
        "data.loader: labels must be in 0..1 (the classes given), but found labels from 0 to 7",
    ),
    "not arrays": (
        ["data.loader=mydata:strings", "data.params={}"],
        "data.loader: train: expected a tensor or a NumPy array, but found str",
    ),
    "images of different shapes": (
        ["data.loader=mydata:ragged", "data.params={}"],
        "data.loader: train: images of different shapes: [0] is (1, 4, 4), [1] is (1, 5, 4)",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_user_code_or_data_is_one_error_line_and_writes_nothing(
    user_code: Path, case: str
) -> None:
    write(user_code, "mymodels.py", (user_code / "mymodels.py").read_text() + MODELS)
    write(user_code, "mydata.py", (user_code / "mydata.py").read_text() + DATA)
    overrides, expected = CASES[case]
    sets = [part for override in overrides for part in ("--set", override)]
    study = user_code / "study.yaml"
    code, _, err = invoke("optimize", str(study), *sets)
    # One line, naming the file and the key, with what was found; exit code 2.
    assert code == 2, err
    assert err.count("error:") == 1, err
    assert err.startswith(f"error: {study}: "), err
    assert expected in err
    # Checked before anything is written: no Optuna study, no MLflow store.
    assert not (user_code / "mlflow.db").exists()
    assert not (user_code / "mlruns").exists()
