"""Exhaustive studies: a configuration list crossed with the search space's grid, as a table.

A study is exhaustive when it lists ``configurations``, uses ``sampler: grid``, or has an empty
search space (one configuration). Its table is run row by row through Optuna's public
``enqueue_trial``: rows run in file order, a conditional parameter (``when``) is left out where
it does not apply (Optuna's GridSampler would run such grids with duplicates), and a rerun
enqueues only the rows that have not run yet.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hptune.attrs import failed_as_result
from hptune.config import CategoricalParam, Choice, FloatParam, IntParam, Param, StudyConfig
from hptune.errors import ConfigError

if TYPE_CHECKING:
    from optuna import Study


def is_exhaustive(config: StudyConfig) -> bool:
    """Whether the study runs a fixed table of configurations rather than sampling."""
    return bool(config.configurations) or config.sampler.name == "grid" or not config.search_space


def explicit_n_trials(config: StudyConfig) -> int | None:
    """``n_trials`` when the file or the command line set it; a table's default is its rest."""
    return config.n_trials if "n_trials" in config.model_fields_set else None


def table_kind(config: StudyConfig) -> str | None:
    """How an exhaustive study's table is made ("list x grid", "list", "grid", "one run")."""
    if not is_exhaustive(config):
        return None
    if config.configurations:
        return "list x grid" if config.search_space else "list"
    return "grid" if config.search_space else "one run"


def param_values(name: str, param: Param) -> list[Choice]:
    """Every value of one parameter on a grid.

    Raises:
        ConfigError: a log-scaled or step-less float range has no finite grid.
    """
    if isinstance(param, CategoricalParam):
        return list(param.choices)
    if isinstance(param, IntParam) and not param.log:
        return list(range(param.low, param.highest + 1, param.step))
    if isinstance(param, FloatParam) and param.step is not None:
        count = round((param.highest - param.low) / param.step) + 1
        return [param.low + i * param.step for i in range(count)]
    raise ConfigError(
        f"search_space.{name}: a grid needs choices, an unlogged int range or a float step; "
        "this range has no finite grid"
    )


def listed_space(config: StudyConfig) -> dict[str, Param]:
    """The configuration list's parameters as categoricals over the values listed, in order."""
    space: dict[str, Param] = {}
    for name in (config.configurations or [{}])[0]:
        values = list(dict.fromkeys(row[name] for row in config.configurations or []))
        space[name] = CategoricalParam(type="categorical", choices=values)
    return space


def full_space(config: StudyConfig) -> dict[str, Param]:
    """What a trial suggests: listed parameters first, then the search space in file order."""
    return {**listed_space(config), **config.search_space}


def table(config: StudyConfig) -> list[dict[str, Choice]]:
    """Every configuration of an exhaustive study: each listed row x each grid point.

    Raises:
        ConfigError: the search space has no finite grid.
    """
    try:
        return [
            point
            for row in config.configurations or [{}]
            for point in _grid(config.search_space, dict(row))
        ]
    except ConfigError as error:
        where = f"{config.source}: " if config.source else ""
        raise ConfigError(where + problem for problem in error.problems) from None


def _grid(space: Mapping[str, Param], start: dict[str, Choice]) -> list[dict[str, Choice]]:
    """Grid points in file order; a parameter whose ``when`` fails is left out of a point."""
    points = [start]
    for name, param in space.items():
        values = param_values(name, param)
        grown: list[dict[str, Choice]] = []
        for point in points:
            if param.applies(point):
                grown += [{**point, name: value} for value in values]
            else:
                grown.append(point)
        points = grown
    return points


def row_key(params: Mapping[str, object]) -> str:
    """A canonical text of one configuration, to match trials against the table."""
    return json.dumps(dict(params), sort_keys=True)


def enqueue_table(study: Study, rows: list[dict[str, Choice]]) -> int:
    """Enqueue the table rows that have not run yet, in order; return how many trials wait.

    A row has run when a trial with its values is complete, pruned, or failed as a recorded
    result (``attrs.failed_as_result``); it is pending while such a trial waits or runs (an
    interrupted or killed trial is queued again). Every other row is enqueued.
    """
    from optuna.trial import TrialState

    done, pending = table_status(study)
    for row in rows:
        key = row_key(row)
        if key not in done and key not in pending:
            study.enqueue_trial(row)
            pending.add(key)
    waiting = (TrialState.WAITING,)
    return len(study.get_trials(deepcopy=False, states=waiting))


def table_status(study: Study) -> tuple[set[str], set[str]]:
    """Row keys of the configurations that have run, and of those waiting or running."""
    from optuna.trial import TrialState

    done, pending = set(), set()
    for trial in study.get_trials(deepcopy=False):
        key = row_key(trial.system_attrs.get("fixed_params", trial.params))
        state = trial.state
        if state.is_finished() and (state != TrialState.FAIL or failed_as_result(trial.user_attrs)):
            done.add(key)
        elif state in (TrialState.WAITING, TrialState.RUNNING):
            pending.add(key)
    return done, pending


def stop_when_queue_empty(study: Study, trial: object) -> None:
    """After each trial of a table: stop once no row waits, so that a worker whose rows were
    taken by another worker stops instead of sampling rows that are not in the table."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        study.stop()
