"""How the grouped tables and the heat map group complete trials by one parameter.

A parameter whose values are few and chosen (a categorical, an int or stepped range with at
most ``MAX_LEVELS`` values, a grid or table study, or values the trials repeat) gets one level
per value. A continuous one (every sampled value different) would give one trial per level,
headed by raw floats: it is cut into quantile bins instead, each holding about the same number
of complete trials and named by the lowest and highest value in it, so the mean per bin reads
as "low / middle / high" of the range the study searched.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hptune.report.collect import ReportData, TrialData

MAX_LEVELS = 12  # more distinct numeric values than this: binned
BINS = 3  # quantile bins of a continuous parameter (fewer with under 6 complete trials)
# ``hptune.sampler`` tags of studies whose values the user listed: each value is a level.
CHOSEN_VALUES = ("grid", "list", "list x grid", "one run")


@dataclass(frozen=True)
class Levels:
    """A parameter's levels in order, and the level of each value."""

    name: str
    order: list[object]
    level_of: Callable[[object], object]
    binned: bool


def readable(value: object) -> object:
    """A float without representation noise (0.30000000000000004 -> 0.3); others unchanged."""
    return float(f"{value:.10g}") if isinstance(value, float) else value


def order(value: object) -> tuple[int, object]:
    """Numbers by value, then everything else by its text."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return (0, value) if numeric else (1, str(value))


def levels(data: ReportData, name: str) -> Levels | None:
    """How complete trials group by ``name``; ``None`` when they hold fewer than 2 values."""
    values = [t.params[name] for t in data.ranked() if name in t.params]
    distinct = sorted(set(values), key=order)
    if len(distinct) < 2:
        return None
    if _per_value(data, name, values, distinct):
        return Levels(name, [readable(v) for v in distinct], readable, binned=False)
    return _quantile_bins(name, values)


def _per_value(data: ReportData, name: str, values: list, distinct: list) -> bool:
    dist = next((t.distributions[name] for t in data.trials if name in t.distributions), None)
    if isinstance(dist, CategoricalDistribution) or order(distinct[-1])[0] == 1:
        return True  # chosen from a list, or not a number: each value is a level
    if len(distinct) > MAX_LEVELS:
        return False
    stepped = isinstance(dist, IntDistribution) or (
        isinstance(dist, FloatDistribution) and dist.step is not None
    )
    tags = data.parent.tags if data.parent else {}
    repeated = len(values) >= 2 * len(distinct)  # each value holds two trials on average
    return stepped or repeated or tags.get("hptune.sampler") in CHOSEN_VALUES


def _quantile_bins(name: str, values: list) -> Levels:
    """Up to ``BINS`` bins of about equal counts; a value on an edge goes to the lower bin."""
    ordered = sorted(values)
    count = max(2, min(BINS, len(ordered) // 2))
    edges = [chunk[-1] for chunk in np.array_split(np.array(ordered), count)[:-1]]
    members: dict[int, list] = {}
    for value in ordered:
        members.setdefault(bisect_left(edges, value), []).append(value)
    labels = {index: _range(group[0], group[-1]) for index, group in members.items()}
    return Levels(
        name,
        [labels[index] for index in sorted(labels)],
        lambda value: labels[bisect_left(edges, value)],
        binned=True,
    )


def _range(low: object, high: object) -> str:
    """A bin's name: its lowest and highest value (floats to 3 significant digits)."""
    low_text, high_text = (f"{v:#.3g}" if isinstance(v, float) else str(v) for v in (low, high))
    return low_text if low == high else f"{low_text}–{high_text}"


def binned_note(data: ReportData, level: Levels) -> str:
    """One line saying a parameter's levels are bins, and why."""
    values = [t.params[level.name] for t in data.ranked() if level.name in t.params]
    return (
        f"{level.name} takes {len(set(values))} different values in {len(values)} complete "
        f"trials: its levels are {len(level.order)} bins holding about the same number of "
        "trials, each named by the lowest and highest value in it."
    )


def objective_by_level(
    complete: list[TrialData], axes: list[Levels]
) -> dict[tuple[object, ...], list[float]]:
    """The objective values of the complete trials in each combination of the axes' levels."""
    found: dict[tuple[object, ...], list[float]] = {}
    for trial in complete:
        if all(axis.name in trial.params for axis in axes):
            key = tuple(axis.level_of(trial.params[axis.name]) for axis in axes)
            found.setdefault(key, []).append(trial.value or 0.0)
    return found
