"""Optuna's internals (``hptune.optuna_private``): a changed one costs speed, never a study.

Each test breaks one internal as a new Optuna release could (gone, renamed, another signature,
other data) and checks that a small batched table still runs each row once, with one warning
that names the internal and the reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna.storages._cached_storage as cached_module
import pytest
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hptune import optuna_private, storage, study
from hptune.optuna_private import CACHED_STORAGE, FallbackWarning, TrialCache
from tests.test_study import small_study
from tests.test_workers import TAKE_QUEUED, queued_study

OptunaCache = cached_module._CachedStorage

TABLE = """name: table
data: {dataset: mnist, val_fraction: 0.2}
model: {width: 16, depth: 1}
train: {epochs: 1, batch_size: 32}
pruner: {name: none}
sampler: {name: grid}
search_space:
  lr: {type: categorical, choices: [0.03, 0.01, 0.003]}
batch_trials: 2
"""


@pytest.fixture(autouse=True)
def no_fallback_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with every internal in use (a fallback lasts for the process)."""
    monkeypatch.setattr(optuna_private, "_fallen_back", set())


def run_each_row_once(tmp_path: Path) -> None:
    """Run the batched table; check that each of its rows ran once, to completion."""
    result = study.optimize(small_study(tmp_path, TABLE))
    assert result.configurations_run == 3
    assert sorted(t.params["lr"] for t in result.study.trials) == [0.003, 0.01, 0.03]
    assert {t.state for t in result.study.trials} == {TrialState.COMPLETE}


def renamed_in_code(function: Any, old: str, new: str) -> types.FunctionType:
    """``function`` calling ``new`` where it called ``old`` (as a release renaming it would)."""
    code = function.__code__
    names = tuple(new if name == old else name for name in code.co_names)
    return types.FunctionType(
        code.replace(co_names=names), function.__globals__, function.__name__,
        function.__defaults__, function.__closure__,
    )  # fmt: skip


def class_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(cached_module, "_CachedStorage")


def read_method_renamed(monkeypatch: pytest.MonkeyPatch) -> None:
    read = OptunaCache._read_trials_from_remote_storage
    monkeypatch.setattr(OptunaCache, "_refresh_trials", read, raising=False)
    monkeypatch.delattr(OptunaCache, "_read_trials_from_remote_storage")
    bulk_read = renamed_in_code(
        OptunaCache.get_all_trials, "_read_trials_from_remote_storage", "_refresh_trials"
    )
    monkeypatch.setattr(OptunaCache, "get_all_trials", bulk_read)


def add_method_signature_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    add = OptunaCache._add_trials_to_cache

    def new_add(self: Any, study_id: int, trials: list, finished: bool | None = None) -> None:
        add(self, study_id, trials)

    monkeypatch.setattr(OptunaCache, "_add_trials_to_cache", new_add)


BREAKAGES: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], str]] = {
    "class gone": (class_gone, "not found"),
    "method renamed": (read_method_renamed, "_read_trials_from_remote_storage was not found"),
    "signature changed": (add_method_signature_changed, "(self, study_id, trials, finished)"),
}


def test_the_installed_optuna_fits_the_trial_cache(tmp_path: Path) -> None:
    # The probe is not stricter than it needs to be: with the installed Optuna hptune's cache
    # is used (no warning), else every batched study would lose its speed without a word.
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackWarning)
        opened = storage.open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert optuna_private.cache_problem() is None
    assert isinstance(opened, TrialCache)


@pytest.mark.parametrize("breakage", BREAKAGES.values(), ids=BREAKAGES.keys())
def test_a_changed_cache_falls_back_and_a_batched_table_runs_each_row_once(
    tmp_path: Path,
    mnist_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    breakage: tuple[Callable[[pytest.MonkeyPatch], None], str],
) -> None:
    breaks, reason = breakage
    breaks(monkeypatch)
    with pytest.warns(FallbackWarning) as caught:
        run_each_row_once(tmp_path)
    # One warning, naming the internal and the reason; the storage is Optuna's own cache.
    (warning,) = [w for w in caught if w.category is FallbackWarning]
    assert CACHED_STORAGE in str(warning.message) and reason in str(warning.message)
    assert not isinstance(storage.open_storage(storage.storage_url(None)), TrialCache)


def test_a_queued_trial_without_its_private_id_falls_back_at_first_use(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe passes, but the queued trials an ask reads lack FrozenTrial._trial_id (as if
    # Optuna had renamed it): the first ask falls back to Optuna's own read of them.
    read = RDBStorage.get_all_trials

    def without_private_ids(self: RDBStorage, *args: Any, **kwargs: Any) -> list[FrozenTrial]:
        trials = read(self, *args, **kwargs)
        for trial in trials:
            trial._id = trial.__dict__.pop("_trial_id")  # type: ignore[attr-defined]
        return trials

    monkeypatch.setattr(RDBStorage, "get_all_trials", without_private_ids)
    with pytest.warns(FallbackWarning) as caught:
        run_each_row_once(tmp_path)
    (warning,) = [w for w in caught if w.category is FallbackWarning]
    assert re.search(r"AttributeError: .*_trial_id", str(warning.message))


TAKE_QUEUED_WITHOUT_CACHE = (
    "import optuna.storages._cached_storage as cached\ndel cached._CachedStorage\n" + TAKE_QUEUED
)


def test_two_processes_on_optunas_own_cache_take_each_queued_trial_once(tmp_path: Path) -> None:
    # Where hptune's cache cannot be used, processes sharing a table still take each queued
    # row exactly once (the take's lock is in the storage behind any cache).
    url = queued_study(tmp_path, 60)
    command = [sys.executable, "-c", TAKE_QUEUED_WITHOUT_CACHE, url, "30"]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    taken = [number for out, _ in outputs for number in json.loads(out)]
    assert sorted(taken) == list(range(60))
    for _, err in outputs:  # each process said once why it fell back
        assert err.count("FallbackWarning") == 1 and f"{CACHED_STORAGE} is not usable" in err
