"""The report's figures, drawn with matplotlib's object API (``Figure`` + ``FigureCanvasAgg``:
no process-wide backend), each returned as PNG bytes.

A trial has one colour in every figure (``colours``): the best ``TOP_K`` complete trials by
rank (all of them when there are fewer), every other trial faint grey. A figure that cannot be
drawn raises ``Unavailable`` with the reason, which the report prints in place of the figure.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import matplotlib
import numpy as np
import optuna
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hptune.plots import confusion_matrix_png
from hptune.report.collect import BestData, ReportData, TrialData

TOP_K = 8  # curves drawn in colour; the rest are faint grey


class Unavailable(Exception):
    """A figure or table that cannot be computed for this study; the message says why."""


GREY = "0.78"
DOTS_SHOWN = 30  # trials in the final-value dot plot; the rest are named as left out


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)  # attaches itself: savefig draws with Agg, no global backend
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _label(trial: TrialData, limit: int = 64) -> str:
    """``#N k=v, k=v, ...``, cut at a parameter boundary so no value is shown half."""
    label = f"#{trial.number}"
    for key, value in trial.params.items():
        part = f" {key}={_short(value)}"
        if len(label) + len(part) > limit:
            return label + " …"
        label += part
    return label


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def colours(data: ReportData) -> dict[int, tuple[float, ...]]:
    """One colour per top trial, by rank, the same in every figure (others: ``GREY``)."""
    tab10 = matplotlib.colormaps["tab10"]
    # tab10 less its grey (index 7), which would read as one of the faint others.
    palette = [tab10(i) for i in range(10) if i != 7]
    return {t.number: palette[rank] for rank, t in enumerate(data.ranked()[:TOP_K])}


def final_values(axes: Axes, data: ReportData) -> None:
    """Each complete trial's final objective as a dot, best at the top (a dot plot: position,
    not bar length, carries the value, so the axis need not start at zero). With the
    validation noise (``ReportData.noise``), one standard error either side of each dot."""
    ranked = data.ranked()
    if not ranked:
        raise Unavailable("no complete trial yet")
    shown = ranked[:DOTS_SHOWN]
    palette = colours(data)
    positions = list(range(len(shown)))[::-1]
    values = [t.value or 0.0 for t in shown]
    noise = data.noise()
    for y, trial, value in zip(positions, shown, values, strict=True):
        colour = palette.get(trial.number, "0.45")
        error = data.standard_error(value)
        axes.errorbar(value, y, xerr=error, fmt="o", color=colour, ecolor=GREY, capsize=2)
    axes.set_yticks(positions, [f"#{t.number}" for t in shown], fontsize=8)
    left_out = len(ranked) - len(shown)
    title = f"Final {data.metric}, best at the top"
    if left_out:
        title += f"\n{len(shown)} best of {len(ranked)} complete trials; {left_out} not shown"
    if noise:
        title += f"\nbars: ±1 standard error on {data.val_size} validation images"
    axes.set_title(title)
    axes.set_xlabel(data.metric)
    axes.grid(axis="x", alpha=0.3)


def _curves(axes: Axes, data: ReportData, key: str, title: str) -> None:
    palette = colours(data)
    drawn = False
    # Faint trials first, then the top ones best first, so the legend reads by rank.
    order = [t for t in data.trials if t.number not in palette] + data.ranked()[:TOP_K]
    for trial in order:
        points = trial.curves.get(key)
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        if trial.number in palette:
            axes.plot(steps, values, marker=".", color=palette[trial.number], label=_label(trial))
        else:
            axes.plot(steps, values, color=GREY, linewidth=0.8, zorder=0)
        drawn = True
    if not drawn:
        raise Unavailable(f"no trial logged {key}")
    _zoom(axes, [v for t in data.ranked()[:TOP_K] for _, v in t.curves.get(key, [])])
    axes.set_title(title)
    _epochs(axes)
    axes.set_ylabel(key)
    axes.grid(alpha=0.3)


def _epochs(axes: Axes) -> None:
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _zoom(axes: Axes, values: list[float]) -> None:
    """Scale the y axis to the coloured curves; faint ones may run off it."""
    if values:
        low, high = min(values), max(values)
        margin = max(high - low, 1e-3) * 0.08
        axes.set_ylim(low - margin, high + margin)


def comparison(data: ReportData) -> bytes:
    """Experiment A's 2x2: train loss, val accuracy, train accuracy, final objective bars."""
    figure = Figure(figsize=(13, 9.5), layout="constrained")
    grid = figure.subplots(2, 2)
    _curves(grid[0, 0], data, "train/loss", "Train loss")
    _curves(grid[0, 1], data, "val/accuracy", "Validation accuracy")
    _curves(grid[1, 0], data, "train/accuracy", "Train accuracy")
    final_values(grid[1, 1], data)
    handles, names = grid[0, 0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, names, loc="outside lower center", ncols=2, fontsize=8)
    return png(figure)


def train_vs_val(data: ReportData) -> bytes:
    """Experiment C: train dashed vs validation solid, loss and accuracy, top trials."""
    figure = Figure(figsize=(13, 5.5), layout="constrained")
    loss, accuracy = figure.subplots(1, 2)
    palette = colours(data)
    for trial in data.ranked()[:TOP_K]:
        colour = palette[trial.number]
        for axes, metric in ((loss, "loss"), (accuracy, "accuracy")):
            for split, style in (("train", "--"), ("val", "-")):
                points = trial.curves.get(f"{split}/{metric}")
                if points:
                    steps, values = zip(*points, strict=True)
                    label = f"{_label(trial)} ({split})" if metric == "loss" else None
                    axes.plot(steps, values, style, color=colour, label=label)
    if not loss.lines:
        raise Unavailable("no complete trial has curves")
    for axes, metric in ((loss, "loss"), (accuracy, "accuracy")):
        axes.set_title(f"{metric.capitalize()}: train dashed, validation solid")
        _epochs(axes)
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
    figure.legend(loc="outside lower center", ncols=2, fontsize=8)
    return png(figure)


def macro_f1(data: ReportData) -> bytes:
    """Experiment E: validation macro-F1 per epoch."""
    figure = Figure(figsize=(10, 6), layout="constrained")
    axes = figure.add_subplot()
    _curves(axes, data, "val/f1_macro", "Validation macro-F1")
    figure.legend(loc="outside lower center", ncols=2, fontsize=8)
    return png(figure)


def _per_layer(axes: Axes, best: BestData, stat: str) -> dict[str, list[tuple[int, float]]]:
    """Plot ``weight_grad/<layer>/<stat>`` of every weight layer over epochs; return the curves."""
    curves = {k.split("/")[1]: v for k, v in best.layer_curves.items() if k.endswith(f"/{stat}")}
    if not curves:
        raise Unavailable("the best trial logged no gradient statistics")
    for layer, points in curves.items():
        steps, values = zip(*points, strict=True)
        axes.plot(steps, values, marker=".", label=layer)
    _epochs(axes)
    axes.legend(fontsize=8)
    return curves


def gradient_flow(best: BestData) -> bytes:
    """Experiment B: mean |grad| per weight layer over epochs and at the final epoch, both on
    one log axis (layers differ by orders of magnitude).

    Note:
        The final epoch is a dot per layer, labelled with its value, in the layer's colour
        from the left panel: a bar on a log axis has no zero to start from, so its length
        would say nothing (a layer 10x smaller looked almost empty).
    """
    figure = Figure(figsize=(13, 4.8), layout="constrained")
    over_time, final = figure.subplots(1, 2, sharey=True)
    means = _per_layer(over_time, best, "mean_abs")
    over_time.set_yscale("log")
    over_time.set(title="Gradient flow: mean |grad| per layer", ylabel="mean |grad|")
    for x, (line, points) in enumerate(zip(over_time.get_lines(), means.values(), strict=True)):
        value = points[-1][1]
        final.plot(x, value, "o", markersize=9, color=line.get_color())
        final.annotate(
            f"{value:.2g}", (x, value), xytext=(8, 0), textcoords="offset points", va="center"
        )
    final.set_xticks(range(len(means)), list(means))
    final.set_xlim(-0.5, len(means) - 0.5)
    final.yaxis.set_tick_params(labelleft=True)
    final.grid(axis="y", which="both", alpha=0.3)
    final.set(title="Mean |grad| at the final epoch", xlabel="layer", ylabel="mean |grad|")
    return png(figure)


def dead_neurons(best: BestData) -> bytes:
    """Experiment B: % exactly-zero gradients per layer over epochs."""
    figure = Figure(figsize=(9, 4.8), layout="constrained")
    axes = figure.add_subplot()
    _per_layer(axes, best, "zero_pct")
    axes.set(title="Dead-neuron indicator: % zero gradients", ylabel="% zero")
    return png(figure)


def lr_schedule(best: BestData) -> bytes:
    values = [v for _, v in best.lr]
    if not values or np.allclose(values, values[0]):
        raise Unavailable("the best trial's learning rate was constant (no scheduler)")
    figure = Figure(figsize=(9, 4.2), layout="constrained")
    axes = figure.add_subplot()
    steps, lrs = zip(*best.lr, strict=True)
    axes.plot(steps, lrs, marker=".")
    axes.set(title="Learning-rate schedule (best trial)", ylabel="lr")
    _epochs(axes)
    return png(figure)


def confusion(details: dict, title: str) -> bytes:
    return confusion_matrix_png(details["matrix"], details["classes"], title)


def optimization_history(data: ReportData) -> bytes:
    """Each complete trial's value by trial number, and the best so far."""
    ranked = data.ranked()
    if not ranked:
        raise Unavailable("no complete trial yet")
    figure = Figure(figsize=(10, 5), layout="constrained")
    axes = figure.add_subplot()
    palette = colours(data)
    by_number = sorted(ranked, key=lambda t: t.number)
    numbers = [t.number for t in by_number]
    values = [t.value or 0.0 for t in by_number]
    axes.scatter(numbers, values, c=[palette.get(n, GREY) for n in numbers], zorder=2)
    best = np.maximum.accumulate(values) if data.maximize else np.minimum.accumulate(values)
    axes.step(numbers, best, where="post", color="tab:red", label="best so far")
    axes.set(title="Optimization history", xlabel="trial", ylabel=data.metric)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend()
    axes.grid(alpha=0.3)
    return png(figure)


def importances(data: ReportData) -> tuple[bytes, dict[str, float]]:
    """Optuna's parameter importances (PED-ANOVA) as horizontal bars; and the numbers."""
    varied = {name for t in data.ranked() for name in t.params}
    if len(data.ranked()) < 2 or not varied:
        raise Unavailable("parameter importances need at least 2 complete trials with parameters")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning
        try:
            found = optuna.importance.get_param_importances(data.study)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            raise Unavailable(f"Optuna could not compute them: {error}") from None
    if not found:
        raise Unavailable("no parameter varied among the complete trials")
    names = list(found)[::-1]
    figure = Figure(figsize=(9, 1.2 + 0.45 * len(names)), layout="constrained")
    axes = figure.add_subplot()
    drawn = axes.barh(names, [found[n] for n in names], color="tab:blue")
    axes.bar_label(drawn, fmt="%.2f", padding=3, fontsize=8)
    axes.set_xlim(0, 1.1)
    axes.set(title=f"Parameter importances for {data.metric}", xlabel="importance (sum 1)")
    return png(figure), {k: float(v) for k, v in found.items()}


def parallel_coordinates(data: ReportData) -> bytes:
    """One line per complete trial across its parameters (each axis scaled to its range, log
    where the distribution is), coloured by the objective."""
    ranked = data.ranked()
    names = list(dict.fromkeys(n for t in ranked for n in t.params))
    if not ranked or not names:
        raise Unavailable("no complete trial with parameters yet")
    figure = Figure(figsize=(14, 6), layout="constrained")
    axes = figure.add_subplot()
    values = [t.value or 0.0 for t in ranked]
    norm = matplotlib.colors.Normalize(min(values), max(values))
    cmap = matplotlib.colormaps["viridis" if data.maximize else "viridis_r"]
    scales = {name: _axis_scale(data, name) for name in names}
    # The objective is the last axis, as in Optuna's own plot.
    scales[data.metric] = (norm, [(0.0, f"{norm.vmin:.4g}"), (1.0, f"{norm.vmax:.4g}")])
    axes_names = [*names, data.metric]
    for trial in ranked[::-1]:  # the best drawn last, on top
        ys = [scales[n][0](trial.params[n]) if n in trial.params else np.nan for n in names]
        ys.append(float(norm(trial.value or 0.0)))
        colour = cmap(norm(trial.value or 0.0))
        axes.plot(range(len(axes_names)), ys, color=colour, alpha=0.8, marker="o", markersize=3)
    for x, name in enumerate(axes_names):
        axes.axvline(x, color="0.3", linewidth=0.8)
        for y, label in scales[name][1]:
            axes.text(x + 0.02, y, label, fontsize=8, va="center", in_layout=False)
    axes.set_xticks(range(len(axes_names)), axes_names)
    axes.set_yticks([])
    axes.set_ylim(-0.05, 1.05)
    axes.set_xlim(-0.2, len(axes_names) - 0.6)
    figure.colorbar(matplotlib.cm.ScalarMappable(norm, cmap), ax=axes, label=data.metric)
    axes.set_title("Parallel coordinates (complete trials)")
    return png(figure)


def _axis_scale(data: ReportData, name: str) -> tuple[Any, list[tuple[float, str]]]:
    """A parameter's value -> [0, 1] and its axis labels."""
    dist = next((t.distributions[name] for t in data.trials if name in t.distributions), None)
    seen = sorted({t.params[name] for t in data.ranked() if name in t.params}, key=_sortable)
    if isinstance(dist, CategoricalDistribution) or not seen or not _numeric(seen):
        choices = list(dist.choices) if isinstance(dist, CategoricalDistribution) else seen
        if _numeric(choices):
            choices = sorted(choices, key=_sortable)
        step = 1 / max(len(choices) - 1, 1)
        index = {repr(c): i * step for i, c in enumerate(choices)}
        return (lambda v: index.get(repr(v), np.nan)), [
            (i * step, _short(c)) for i, c in enumerate(choices)
        ]
    numeric = isinstance(dist, FloatDistribution | IntDistribution)
    log = numeric and dist.log  # type: ignore[union-attr]
    low, high = (dist.low, dist.high) if numeric else (seen[0], seen[-1])  # type: ignore[union-attr]
    f = math.log if log else float

    def scale(value: Any) -> float:
        return 0.5 if high == low else (f(value) - f(low)) / (f(high) - f(low))

    return scale, [(scale(v), _short(v)) for v in (low, high)]


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, value) if _numeric([value]) else (1, str(value))


def intermediate_values(data: ReportData) -> bytes:
    """The objective each trial reported per epoch (what the pruner saw): the top trials in
    their colours, the rest grey; the axis clipped to the range of the top half of the
    trials' reports, so a diverged trial does not flatten the rest (its clipped points are
    drawn on the edge, as triangles)."""
    reported = {t.number: sorted(t.intermediate_values.items()) for t in data.study.trials}
    reported = {n: points for n, points in reported.items() if points}
    if not reported:
        raise Unavailable("no trial reported intermediate values")
    figure = Figure(figsize=(10, 5.5), layout="constrained")
    axes = figure.add_subplot()
    palette = colours(data)
    low, high = _clip_range(data, reported)
    clipped = 0
    order = sorted(reported, key=lambda n: n in palette)  # top trials drawn last
    for number in order:
        steps, values = zip(*reported[number], strict=True)
        array = np.clip(np.array(values, dtype=float), low, high)
        outside = (array != np.array(values)) | ~np.isfinite(values)
        clipped += bool(outside.any())
        colour = palette.get(number, GREY)
        label = f"#{number}" if number in palette else None
        width = 1.6 if number in palette else 0.8
        axes.plot(
            steps, array, color=colour, linewidth=width, label=label, zorder=2 if label else 1
        )
        if outside.any():
            axes.scatter(np.array(steps)[outside], array[outside], marker="^", color=colour)
    title = "Intermediate values (what the pruner compared)"
    if clipped:
        title += f"\n{clipped} trial{'s' if clipped > 1 else ''} with values off the axis"
        title += " (diverged or far behind): clipped to its edge"
    axes.set(title=title, ylabel=data.metric)
    _epochs(axes)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, title=f"best {len(palette)}", ncols=2)
    return png(figure)


def _clip_range(
    data: ReportData, reported: dict[int, list[tuple[int, float]]]
) -> tuple[float, float]:
    """The y range: all finite reports, less the tail beyond the worse quartile's spread."""
    values = np.array([v for points in reported.values() for _, v in points], dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return -1.0, 1.0
    q1, q3 = np.percentile(values, [25, 75])
    spread = max(q3 - q1, 1e-6)
    low = max(values.min(), q1 - 3 * spread) if data.maximize else values.min()
    high = values.max() if data.maximize else min(values.max(), q3 + 3 * spread)
    margin = max(high - low, 1e-6) * 0.05
    return low - margin, high + margin
