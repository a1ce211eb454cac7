"""The report's figures: matplotlib on the Agg backend, each returned as PNG bytes.

A figure that cannot be drawn raises ``Unavailable`` with the reason, which the report prints
in place of the figure.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")

import optuna
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hptune.plots import confusion_matrix_png
from hptune.report.collect import BestData, ReportData, TrialData

TOP_K = 8  # curves drawn in colour; the rest are faint grey


class Unavailable(Exception):
    """A figure or table that cannot be computed for this study; the message says why."""


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
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


def _colours(data: ReportData) -> dict[int, tuple[float, ...]]:
    """One colour per top trial, by rank, the same in every figure."""
    palette = matplotlib.colormaps["tab10"]
    return {t.number: palette(rank) for rank, t in enumerate(data.ranked()[:TOP_K])}


def _curves(axes: Axes, data: ReportData, key: str, title: str) -> None:
    colours = _colours(data)
    drawn = False
    # Faint trials first, then the top ones best first, so the legend reads by rank.
    order = [t for t in data.trials if t.number not in colours] + data.ranked()[:TOP_K]
    for trial in order:
        points = trial.curves.get(key)
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        if trial.number in colours:
            axes.plot(steps, values, marker=".", color=colours[trial.number], label=_label(trial))
        else:
            axes.plot(steps, values, color="0.8", linewidth=0.8, zorder=0)
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
    ranked = data.ranked()[: max(TOP_K, 12)]
    bars = grid[1, 1]
    labels = [f"#{t.number}" for t in ranked]
    values = [t.value or 0.0 for t in ranked]
    drawn = bars.bar(labels, values, color="tab:blue")
    bars.bar_label(drawn, fmt="%.4f", fontsize=8, rotation=90, padding=2)
    if values:
        low, high = min(values), max(values)
        margin = max(high - low, 0.01)
        bars.set_ylim(low - margin, high + margin)
    bars.set_title(f"Final {data.metric} (best first)")
    bars.set_xlabel("trial")
    bars.set_ylabel(data.metric)
    handles, names = grid[0, 0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, names, loc="outside lower center", ncols=2, fontsize=8)
    return png(figure)


def train_vs_val(data: ReportData) -> bytes:
    """Experiment C: train dashed vs validation solid, loss and accuracy, top trials."""
    figure = Figure(figsize=(13, 5.5), layout="constrained")
    loss, accuracy = figure.subplots(1, 2)
    colours = _colours(data)
    for trial in data.ranked()[:TOP_K]:
        colour = colours[trial.number]
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
    """Experiment B: mean |grad| per weight layer over epochs (log) and at the final epoch."""
    figure = Figure(figsize=(13, 4.8), layout="constrained")
    over_time, final = figure.subplots(1, 2)
    means = _per_layer(over_time, best, "mean_abs")
    over_time.set_yscale("log")
    over_time.set(title="Gradient flow: mean |grad| per layer", ylabel="mean |grad|")
    final.bar(list(means), [points[-1][1] for points in means.values()], color="tab:orange")
    final.set_yscale("log")
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


def _optuna(
    plot: Callable[..., Any], data: ReportData, size: tuple[float, float] = (10, 5.5)
) -> bytes:
    # Optuna's plots switch the process's style to ggplot (plt.style.use): kept to them here,
    # it would otherwise restyle every figure drawn after them (report figures, trial PNGs).
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore")  # ExperimentalWarning on every matplotlib plot
        try:
            result = plot(data.study)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            raise Unavailable(f"Optuna could not draw it: {error}") from None
        axes = result.flat[0] if isinstance(result, np.ndarray) else result
        figure = axes.get_figure()
        figure.set_size_inches(*size)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return buffer.getvalue()


def optimization_history(data: ReportData) -> bytes:
    if not data.ranked():
        raise Unavailable("no complete trial yet")
    return _optuna(optuna.visualization.matplotlib.plot_optimization_history, data)


def importances(data: ReportData) -> bytes:
    varied = {name for t in data.ranked() for name in t.params}
    if len(data.ranked()) < 2 or not varied:
        raise Unavailable("parameter importances need at least 2 complete trials with parameters")
    return _optuna(optuna.visualization.matplotlib.plot_param_importances, data)


def parallel_coordinates(data: ReportData) -> bytes:
    if not data.ranked():
        raise Unavailable("no complete trial yet")
    return _optuna(optuna.visualization.matplotlib.plot_parallel_coordinate, data, (14, 6.5))


def intermediate_values(data: ReportData) -> bytes:
    if not any(t.intermediate_values for t in data.study.get_trials(deepcopy=False)):
        raise Unavailable("no trial reported intermediate values")
    return _optuna(optuna.visualization.matplotlib.plot_intermediate_values, data)
