"""Optuna samplers and pruners by name, built from the study file's ``sampler``/``pruner``."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna

from hptune.config import Choice, StudyConfig
from hptune.errors import ConfigError
from hptune.grid import param_values
from hptune.registry import lookup


class TableGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler for a grid that hptune runs as a table (``hptune.grid``): every
    point is an enqueued trial, and the table's end stops the study (``grid.stop_when_queue_empty``,
    the batched loop's count of waiting rows). GridSampler's own stop rule after each trial counts
    only the trials it assigned a grid point itself, none here, and with one point left it reads
    that assignment from the trial: every trial of a one-point grid then ended in
    ``KeyError: 'grid_id'`` after it was stored, so the study stopped before logging its best."""

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "gp": optuna.samplers.GPSampler,
    "grid": TableGridSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "nsga3": optuna.samplers.NSGAIIISampler,
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
    """Every value of every searched parameter, for Optuna's GridSampler.

    Raises:
        ConfigError: a range without a finite grid.
    """
    try:
        return {name: param_values(name, p) for name, p in config.search_space.items()}
    except ConfigError as error:
        raise ConfigError(_where(config) + problem for problem in error.problems) from None


def build_sampler(
    config: StudyConfig, resumed_at: int = 0, worker: int = 0
) -> optuna.samplers.BaseSampler:
    """The configured sampler, its options checked by its own constructor.

    ``resumed_at`` is the number of trials the study already has. A resumed study's sampler
    gets a seed derived from it: reseeding with the file's seed would replay the random draws
    of the first invocation and repeat its trials. Worker processes started together
    (``worker`` 1, 2, ...) see the same count, so the worker's index joins the seed.
    """
    factory = lookup(SAMPLERS, config.sampler.name, "sampler")
    seed = config.sampler.seed
    if seed is not None and (resumed_at or worker):
        entropy = [seed, resumed_at, worker] if worker else [seed, resumed_at]
        seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
    options: dict[str, Any] = {**config.sampler.options, "seed": seed}
    if config.sampler.name == "grid":
        options["search_space"] = grid_points(config)
    return _construct(factory, options, f"{_where(config)}sampler.options")


def build_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    """The configured pruner, its options checked by its own constructor."""
    factory = lookup(PRUNERS, config.pruner.name, "pruner")
    return _construct(factory, dict(config.pruner.options), f"{_where(config)}pruner.options")


def _construct(factory: Callable[..., Any], options: dict[str, Any], where: str) -> Any:
    try:
        with warnings.catch_warnings():
            # Options such as TPE's group= are "experimental" in Optuna; the user chose them.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return factory(**options)
    except (TypeError, ValueError) as exc:
        name = getattr(factory, "__name__", str(factory))
        raise ConfigError(f"{where}: {name} rejected {options}: {exc}") from None


def _where(config: StudyConfig) -> str:
    return f"{config.source}: " if config.source else ""
