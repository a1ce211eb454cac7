"""The user's own model and data: import paths, name routing, the factory call, the loader
contract (hptune.imports, hptune.space, hptune.models, hptune.userdata)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hptune import data, userdata
from hptune.config import DataConfig
from hptune.errors import ConfigError, DataError
from hptune.imports import resolve
from hptune.models import build_model
from hptune.studyfile import load_study_file, validate_config
from tests.usercode import user_code_fixture, write  # noqa: F401  (the user_code fixture)


def test_module_in_the_study_folder_is_found_before_sys_path(user_code: Path) -> None:
    # A module beside the study file wins over one of the same name on sys.path.
    elsewhere = user_code / "elsewhere"
    elsewhere.mkdir()
    write(elsewhere, "mymodels.py", "def small_cnn(): return 'from sys.path'\n")
    sys.path.insert(0, str(elsewhere))
    try:
        factory = resolve("mymodels:small_cnn", user_code, "model.factory")
    finally:
        sys.path.remove(str(elsewhere))
    assert Path(factory.__code__.co_filename).parent == user_code
    # The folder is on sys.path only while importing: the caller's path is left as it was.
    assert str(user_code) not in sys.path


def test_searched_names_hptune_does_not_know_go_to_the_factory(user_code: Path) -> None:
    config = load_study_file(user_code / "study.yaml")
    trial = config.with_params({"channels": 8, "lr": 0.01})
    # channels is the factory's, lr hptune's; the fixed params stay.
    assert trial.model.params == {"dropout": 0.1, "channels": 8}
    assert trial.train.lr == 0.01


def test_factory_gets_params_settings_shape_and_classes(user_code: Path) -> None:
    write(user_code, "mymodels.py", "def small_cnn(**kwargs):\n    raise SystemExit(kwargs)\n")
    config = load_study_file(user_code / "study.yaml", ["model.width=64"])
    assert config.model.factory == "mymodels:small_cnn"
    trial = config.with_params({"channels": 4})
    with pytest.raises(SystemExit) as called:
        build_model(trial.model, (3, 6, 6), 4, user_code)
    # **kwargs takes fixed and searched params, hptune's settings the study sets, the data's
    # shape (C, H, W) and its class count.
    assert called.value.code == {
        "dropout": 0.1,
        "channels": 4,
        "width": 64,
        "input_shape": (3, 6, 6),
        "num_classes": 4,
    }


def test_a_name_neither_hptune_nor_the_factory_knows_is_an_error(user_code: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_study_file(
            user_code / "study.yaml", ["search_space.depthh={type: int, low: 1, high: 2}"]
        )
    [problem] = error.value.problems
    # The line names the key, hptune's names and the factory's signature.
    assert problem.startswith(f"{user_code / 'study.yaml'}: search_space.depthh: neither")
    assert "lr, weight_decay" in problem and "small_cnn(channels: int, input_shape" in problem


def test_an_hptune_setting_the_factory_does_not_name_is_an_error(user_code: Path) -> None:
    # A setting the factory would never see is an error, not a silent no-op.
    with pytest.raises(ConfigError, match=r"model\.width: hptune passes width to the factory"):
        load_study_file(user_code / "study.yaml", ["model.width=64"])


def test_a_callable_factory_and_loader_work_from_python(user_code: Path) -> None:
    sys.path.insert(0, str(user_code))
    try:
        import mydata
        import mymodels
    finally:
        sys.path.remove(str(user_code))
    config = validate_config(
        {
            "name": "py",
            "model": {"factory": mymodels.small_cnn, "params": {"channels": 2}},
            "data": {"loader": mydata.load},
        }
    )
    splits = data.load(config.data, torch.device("cpu"))
    model = build_model(config.model, splits.input_shape, len(splits.classes))
    assert model(splits.train_x[:3]).shape == (3, 4)
    # A callable is written as its import path wherever text is needed (batch keys, params).
    assert '"factory":"mymodels:small_cnn"' in config.model.model_dump_json()


def sets(train: object, test: object, classes: object = None) -> dict[str, object]:
    return {"train": train, "test": test, **({"classes": classes} if classes else {})}


def read(output: dict[str, object], **options: object) -> userdata.RawSets:
    config = DataConfig(loader=lambda: output, **options)  # type: ignore[arg-type]
    return userdata.read(config, [], None, "s.yaml")


def test_loader_arrays_become_channels_first_tensors_with_k_classes() -> None:
    x = np.zeros((5, 8, 8), np.uint8)
    raw = read(sets((x, np.array([0, 1, 2, 1, 0])), (x[:2], np.array([2, 0]))))
    # (N, H, W) is one channel; without names, K = largest label + 1 and names are "0".."K-1".
    assert raw.train_x.shape == (5, 1, 8, 8)
    assert raw.classes == ["0", "1", "2"]
    assert raw.train_y.dtype == torch.int64


def test_loader_dataset_of_pil_images_is_read_item_by_item() -> None:
    from PIL import Image

    class Pictures(torch.utils.data.Dataset[tuple[object, int]]):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, index: int) -> tuple[object, int]:
            return Image.new("RGB", (5, 4), (index, 0, 0)), index

    raw = read(sets(Pictures(), Pictures()))
    # RGB pictures (W=5, H=4) become (3, 4, 5), channels first; the labels come along.
    assert raw.train_x.shape == (3, 3, 4, 5)
    assert raw.train_x[2, 0, 0, 0] == 2
    assert raw.train_y.tolist() == [0, 1, 2]


def test_uint8_is_scaled_and_float_is_used_as_given() -> None:
    x = np.full((20, 1, 4, 4), 255, np.uint8)
    y = np.arange(20) % 2
    output = sets((x, y), (x, y))
    uint8 = data.load(DataConfig(loader=lambda: output), torch.device("cpu"))  # type: ignore[arg-type]
    # uint8 -> [-1, 1] by default (normalize: minus_one_one): 255 -> 1.
    assert uint8.train_x.max() == 1.0 and uint8.train_x.dtype == torch.float32
    floats = sets((x / 510.0, y), (x / 510.0, y))
    given = data.load(DataConfig(loader=lambda: floats), torch.device("cpu"))  # type: ignore[arg-type]
    # float images are left as they are unless the file sets normalize itself.
    assert given.train_x.max() == pytest.approx(0.5)
    scaled = data.load(
        DataConfig(loader=lambda: floats, normalize="minus_one_one"),  # type: ignore[arg-type]
        torch.device("cpu"),
    )
    assert scaled.train_x.max() == pytest.approx(0.0)


def test_loader_data_gets_the_seeded_split_and_subsets() -> None:
    x = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1).repeat(4, 2)
    y = np.arange(100) % 3
    output = sets((x, y), (x, y))
    config = DataConfig(
        loader=lambda: output,
        train_subset=50,
        test_subset=7,
        val_fraction=0.2,
        seed=3,  # type: ignore[arg-type]
    )
    first = data.load(config, torch.device("cpu"))
    again = data.load(config, torch.device("cpu"))
    # 50 training images -> 40 train + 10 validation, the same ones each time (seeded).
    assert (len(first.train_y), len(first.val_y), len(first.test_y)) == (40, 10, 7)
    assert torch.equal(first.val_x, again.val_x)
    # Only the first 50 images are used.
    assert sorted(
        (first.train_x[:, 0, 0, 0] * 127.5 + 127.5).round().int().tolist()
        + (first.val_x[:, 0, 0, 0] * 127.5 + 127.5).round().int().tolist()
    ) == list(range(50))


def test_a_set_larger_than_free_memory_is_an_error_giving_its_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(userdata, "_free_bytes", lambda device: 1000)
    x = np.zeros((10, 3, 8, 8), np.uint8)
    output = sets((x, np.arange(10) % 2), (x, np.arange(10) % 2))
    with pytest.raises(DataError, match=r"needs 0.00 GiB as float32 on cpu, but 0.00 GiB"):
        data.load(DataConfig(loader=lambda: output), torch.device("cpu"))  # type: ignore[arg-type]


def test_workers_need_an_import_path_not_a_callable(user_code: Path) -> None:
    from hptune.study import optimize

    config = validate_config(
        {"name": "py", "workers": 2, "model": {"factory": build_model, "params": {}}}
    )
    # A worker process cannot receive a callable by value: it imports the path itself.
    with pytest.raises(ConfigError, match=r"model\.factory: workers > 1 .* 'module:callable'"):
        optimize(config)
    assert not (user_code / "mlflow.db").exists()


def test_validate_shows_the_factory_signature_and_user_params(user_code: Path) -> None:
    from tests.conftest import invoke

    code, out, err = invoke("validate", str(user_code / "study.yaml"))
    assert code == 0, err
    # The factory's path and signature, its fixed params, the loader; searched names as usual.
    assert "model: factory mymodels:small_cnn, small_cnn(channels: int, input_shape," in out
    assert "  dropout      0.1" in out and "data: mydata:load {'n': 300}" in out
    assert "  channels     categorical  4, 8" in out


def test_the_digits_example_loader_and_factory_fit_together() -> None:
    example = Path(__file__).parents[1] / "examples" / "digits" / "study.yaml"
    config = load_study_file(example)
    splits = data.load(config.data, torch.device("cpu"), config.source)
    # 1,797 real 8x8 digits: 20% held out for test, 10% of the rest for validation.
    assert (len(splits.train_y) + len(splits.val_y), len(splits.test_y)) == (1438, 359)
    assert splits.input_shape == (1, 8, 8) and splits.classes == [str(d) for d in range(10)]
    trial = config.with_params({"channels": 8, "dropout": 0.1})
    model = build_model(trial.model, splits.input_shape, 10, config.folder)
    assert model(splits.test_x[:3]).shape == (3, 10)
