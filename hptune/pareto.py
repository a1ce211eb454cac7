"""Studies with several objectives: what a study file may combine, the Pareto front, and the
one trial a ``select`` rule makes the study's "best" (registered, evaluated on the test set).

Optuna keeps the front (``Study.best_trials``); the rules here choose from it. Imports of
Optuna stay inside the functions that need a study, so that validating a file stays instant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from hptune import registry

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from hptune.config import StudyConfig


def objective_problems(config: StudyConfig) -> list[str]:
    """What a study file's objectives do not allow, one ``key: problem`` line each."""
    objectives = config.objectives
    metrics = [objective.metric for objective in objectives]
    problems = []
    if len(set(metrics)) < len(metrics):
        problems.append(f"objective: each metric may appear once, but got {metrics}")
    per_trial = [m for m in metrics if m in registry.TRIAL_METRICS]
    if config.pruner.name != "none" and (len(objectives) > 1 or per_trial):
        reason = (
            f"Optuna cannot prune a study with {len(objectives)} objectives"
            if len(objectives) > 1
            else f"{per_trial[0]} is measured once after training, so it cannot prune"
        )
        problems.append(
            f"pruner.name: {reason}; set pruner: {{name: none}} (got {config.pruner.name!r})"
        )
    if len(objectives) > 1 and config.sampler.name in registry.SINGLE_OBJECTIVE_SAMPLERS:
        problems.append(
            f"sampler.name: {config.sampler.name} optimizes one objective; for several use "
            "nsga2, nsga3, tpe, gp, random or qmc"
        )
    if len(objectives) > 1 and config.batch_trials > 1:
        problems.append("batch_trials: stacked trials support one objective; set it to 1")
    problems += _select_problems(config, metrics)
    return problems


def _select_problems(config: StudyConfig, metrics: Sequence[str]) -> list[str]:
    select = config.select
    if select is None:
        return []
    if len(metrics) == 1:
        return ["select: chooses among a Pareto front, so it needs several objectives"]
    named = [*([select.metric] if select.metric else []), *select.budget]
    return [
        f"select: {name} is not an objective (objectives: {', '.join(metrics)})"
        for name in named
        if name not in metrics
    ]


def directions(config: StudyConfig) -> list[str]:
    """Each objective's direction, ``maximize`` or ``minimize``."""
    return [objective.resolved_direction for objective in config.objectives]


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The study's Pareto-optimal complete trials, in trial order."""
    return front_of(study.get_trials(deepcopy=False), [d.name for d in study.directions])


def front_of(trials: Sequence[FrozenTrial], directions: Sequence[str]) -> list[FrozenTrial]:
    """The complete trials among ``trials`` that no other complete trial dominates, in trial
    order (``directions``: ``maximize``/``minimize`` per objective, any case)."""
    from optuna.trial import TrialState

    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    scored = [(t, lower_is_better(t.values, directions)) for t in complete]
    kept = [t for t, mine in scored if not any(dominates(other, mine) for _, other in scored)]
    return sorted(kept, key=lambda trial: trial.number)


def lower_is_better(values: Sequence[float], directions: Sequence[str]) -> list[float]:
    """``values`` with each maximized objective negated, so that lower is better for all."""
    return [v if d.lower() == "minimize" else -v for v, d in zip(values, directions, strict=True)]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether ``a`` is no worse than ``b`` everywhere and better somewhere (lower: better)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def select(study: optuna.Study, config: StudyConfig) -> FrozenTrial | None:
    """The study's one "best" trial: for one objective Optuna's best, for several the
    ``select`` rule's choice from the front (None before any trial completed, or when no
    trial meets a budget)."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    if len(config.objectives) == 1:
        return study.best_trial
    return choose(front(study), config)


def choose(trials: Sequence[FrozenTrial], config: StudyConfig) -> FrozenTrial | None:
    """The ``select`` rule's trial among ``trials`` (a front)."""
    if not trials:
        return None
    metrics = [objective.metric for objective in config.objectives]
    signs = [1.0 if d == "minimize" else -1.0 for d in directions(config)]  # lower is better
    rule = config.select.rule if config.select else "first"
    if rule == "knee":
        return min(trials, key=lambda t: (_distance_to_ideal(t, trials, signs), t.number))
    index = 0
    if rule == "budget" and config.select is not None:
        index = metrics.index(config.select.metric or metrics[0])
        trials = [t for t in trials if _within(t, config.select.budget, metrics, signs)]
        if not trials:
            return None
    return min(trials, key=lambda t: (signs[index] * t.values[index], t.number))


def _within(
    trial: FrozenTrial, budget: dict[str, float], metrics: Sequence[str], signs: Sequence[float]
) -> bool:
    """Whether every budgeted objective is no worse than its limit."""
    return all(
        signs[metrics.index(name)] * trial.values[metrics.index(name)]
        <= signs[metrics.index(name)] * limit
        for name, limit in budget.items()
    )


def _distance_to_ideal(
    trial: FrozenTrial, trials: Sequence[FrozenTrial], signs: Sequence[float]
) -> float:
    """Euclidean distance to the front's ideal point, each objective scaled to [0, 1] over
    the front (0: the front's best value of that objective)."""
    total = 0.0
    for k, sign in enumerate(signs):
        values = [sign * t.values[k] for t in trials]
        low, high = min(values), max(values)
        scaled = (sign * trial.values[k] - low) / (high - low) if high > low else 0.0
        total += scaled**2
    return math.sqrt(total)


def rule_text(config: StudyConfig) -> str:
    """The ``select`` rule in words, for the report and the parent run."""
    first = config.objectives[0].metric
    select = config.select
    if select is None or select.rule == "first":
        return f"the front's best trial on the first objective ({first})"
    if select.rule == "knee":
        return (
            "the front's knee: the trial nearest the ideal point, each objective scaled to "
            "the front's range"
        )
    bounds = {
        o.metric: "<=" if o.resolved_direction == "minimize" else ">=" for o in config.objectives
    }
    limits = ", ".join(f"{name} {bounds[name]} {limit:g}" for name, limit in select.budget.items())
    return f"the best trial on {select.metric or first} with {limits}"
