"""Optuna samplers and pruners by name, built from the study file's ``sampler``/``pruner``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from hptune.config import CategoricalParam, Choice, FloatParam, IntParam, StudyConfig
from hptune.errors import ConfigError
from hptune.registry import lookup

SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "gp": optuna.samplers.GPSampler,
    "grid": optuna.samplers.GridSampler,
}

PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}


def grid_points(config: StudyConfig) -> dict[str, list[Choice]]:
    """Every value of every searched parameter, for the grid sampler.

    Raises:
        ConfigError: a float range without a step has no finite grid.
    """
    grid: dict[str, list[Choice]] = {}
    problems = []
    for name, param in config.search_space.items():
        if isinstance(param, CategoricalParam):
            grid[name] = list(param.choices)
        elif isinstance(param, IntParam) and not param.log:
            grid[name] = list(range(param.low, param.high + 1, param.step))
        elif isinstance(param, FloatParam) and param.step is not None:
            count = round((param.high - param.low) / param.step) + 1
            grid[name] = [param.low + i * param.step for i in range(count)]
        else:
            problems.append(
                f"search_space.{name}: the grid sampler needs choices, an int range or a float "
                "step; this range has no finite grid"
            )
    if problems:
        raise ConfigError(_where(config) + p for p in problems)
    return grid


def grid_size(config: StudyConfig) -> int:
    """Number of grid points (the product of every parameter's number of values)."""
    size = 1
    for values in grid_points(config).values():
        size *= len(values)
    return size


def build_sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    """The configured sampler, its options checked by its own constructor."""
    factory = lookup(SAMPLERS, config.sampler.name, "sampler")
    options: dict[str, Any] = {**config.sampler.options, "seed": config.sampler.seed}
    if config.sampler.name == "grid":
        options["search_space"] = grid_points(config)
    return _construct(factory, options, f"{_where(config)}sampler.options")


def build_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    """The configured pruner, its options checked by its own constructor."""
    factory = lookup(PRUNERS, config.pruner.name, "pruner")
    return _construct(factory, dict(config.pruner.options), f"{_where(config)}pruner.options")


def _construct(factory: Callable[..., Any], options: dict[str, Any], where: str) -> Any:
    try:
        return factory(**options)
    except (TypeError, ValueError) as exc:
        name = getattr(factory, "__name__", str(factory))
        raise ConfigError(f"{where}: {name} rejected {options}: {exc}") from None


def _where(config: StudyConfig) -> str:
    return f"{config.source}: " if config.source else ""
