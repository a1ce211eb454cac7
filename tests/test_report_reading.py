"""The report as a data scientist reads it: noise, left-out trials, trust in importances,
readable pruning curves, ordered groups, heat-map counts, interrupted trials."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import optuna
import pytest
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from hptune.attrs import FAIL_REASON_ATTR, FINGERPRINT_ATTR
from hptune.report import figures, sections
from hptune.report.collect import BestData, ReportData, TrialData, collect
from hptune.tracking import RunRecord

LR = FloatDistribution(1e-4, 1e-1, log=True)
WIDTH = CategoricalDistribution([64, 128, 256])


def report_data(
    values: list[float],
    val_size: int = 1000,
    params: list[dict[str, Any]] | None = None,
    distributions: dict[str, BaseDistribution] | None = None,
) -> ReportData:
    """A maximized val/accuracy study with one complete trial per value (by default lr and
    width vary; else ``params[i]`` from ``distributions``), and a parent run that recorded
    ``val_size`` validation images."""
    study = optuna.create_study(direction="maximize")
    study.set_user_attr(FINGERPRINT_ATTR, json.dumps({"objective": "val/accuracy"}))
    distributions = distributions or {"lr": LR, "width": WIDTH}
    trials = []
    for number, value in enumerate(values):
        default = {"lr": 10 ** -(1 + number % 3), "width": [64, 128, 256][number % 3]}
        trial_params = params[number] if params else default
        reports = {1: value - 0.05, 2: value}
        study.add_trial(
            optuna.trial.create_trial(
                value=value,
                params=trial_params,
                distributions=distributions,
                intermediate_values=reports,
            )
        )
        trial = TrialData(number, "complete", value, trial_params, None)
        trial.distributions = distributions
        trials.append(trial)
    parent = RunRecord("p", "study", "FINISHED", {}, {"hptune.val_size": str(val_size)}, {})
    return ReportData(study, "sqlite://", "sqlite://", "e", parent, trials, best=None)


def texts(blocks: list) -> str:
    return " ".join(b.text for b in blocks if isinstance(b, sections.Text))


def test_a_best_within_the_validation_noise_of_the_runner_up_is_said_so() -> None:
    data = report_data([0.850, 0.845, 0.70])
    noise = math.sqrt(0.85 * 0.15 / 1000)  # one standard error: 0.0113
    assert data.noise() == noise
    # 0.005 apart on 1000 validation images: within the noise, and the summary says so.
    assert "does not tell them apart" in texts(sections.summary(data).blocks)
    # 0.05 apart: a real difference, no note.
    assert "tell them apart" not in texts(sections.summary(report_data([0.85, 0.80])).blocks)


def test_the_final_value_plot_says_how_many_trials_it_leaves_out() -> None:
    data = report_data([0.5 + i / 100 for i in range(40)])
    axes = Figure().add_subplot()
    figures.final_values(axes, data)
    # 30 dots, best first (at the top), and the title names the 10 not shown.
    names = [t.get_text() for t in axes.get_yticklabels()]
    labels = dict(zip(axes.get_yticks(), names, strict=True))
    assert len(labels) == figures.DOTS_SHOWN and labels[max(labels)] == "#39"
    assert "30 best of 40 complete trials; 10 not shown" in axes.get_title()


def test_importances_say_how_many_trials_they_rest_on_and_warn_when_few() -> None:
    few = texts(sections._importances(report_data([0.6, 0.7, 0.8, 0.75, 0.65])))
    assert "rest on 5 complete trials and 2 parameters" in few and "too few to trust" in few
    many = texts(sections._importances(report_data([0.5 + (i % 7) / 50 for i in range(25)])))
    assert "rest on 25 complete trials" in many and "too few" not in many


def test_a_diverged_trial_is_clipped_off_the_intermediate_plot() -> None:
    data = report_data([0.80 + i / 1000 for i in range(30)])
    data.study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL, intermediate_values={1: -1e6, 2: -1e9}
        )
    )
    low, high = figures._clip_range(
        data, {t.number: sorted(t.intermediate_values.items()) for t in data.study.trials}
    )
    # The axis spans the 30 trials' reports (0.75..0.829), not the diverged -1e9.
    assert 0.6 < low < 0.75 and 0.829 < high < 0.9
    assert figures.intermediate_values(data).startswith(b"\x89PNG")


def test_each_top_trial_has_one_colour_by_rank() -> None:
    data = report_data([0.7, 0.9, 0.8])
    palette = figures.colours(data)
    # Trial 1 is best: the first colour, whatever figure asks.
    assert palette[1] == figures.matplotlib.colormaps["tab10"](0)
    assert palette == figures.colours(data)


def test_grouped_levels_in_order_and_heat_map_cells_count_their_trials() -> None:
    data = report_data([0.80, 0.90, 0.70, 0.81, 0.91, 0.71])
    blocks = sections.grouped(data).blocks
    tables = [b for b in blocks if isinstance(b, sections.Table)]
    by_width = next(t for t in tables if t.columns[0] == "width")
    # Levels by value, not by score.
    assert [row[0] for row in by_width.rows] == [64, 128, 256]
    heat = tables[-1]
    # lr 0.1 with width 64 holds trials 0 and 3: a mean of 2.
    assert heat.rows[-1][1] == "0.8050 (n=2)"


def test_an_interrupted_trial_is_labelled_as_such(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="s", storage=storage)
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL, user_attrs={FAIL_REASON_ATTR: "interrupted"}
        )
    )
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(tracking).search_experiments()  # the (empty) tracking store a report reads
    data = collect("s", storage, tracking, "s")
    assert [t.state for t in data.trials] == ["interrupted", "failed"]
    assert "2: 0 complete, 0 pruned, 1 failed, 1 interrupted" in str(
        sections.summary(data).blocks[0].rows  # type: ignore[union-attr]
    )


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures the report draws, kept instead of turned into PNG bytes."""
    kept: list[Figure] = []

    def keep(figure: Figure) -> bytes:
        kept.append(figure)
        return b""

    monkeypatch.setattr(figures, "png", keep)
    return kept


def with_curves(trial: TrialData) -> TrialData:
    trial.curves = {"val/accuracy": [(1, 0.5), (2, trial.value or 0.5)]}
    return trial


def test_the_colour_note_counts_the_trials_it_colours(drawn: list[Figure]) -> None:
    data = report_data([0.80, 0.90, 0.70, 0.81, 0.91])
    data.trials = [with_curves(t) for t in data.trials]
    data.trials += [with_curves(TrialData(n, "pruned", None, {}, None)) for n in (5, 6)]
    note = sections._coloured(data)
    # 5 complete trials, fewer than TOP_K: all 5 are coloured, and the note says 5, not 8.
    assert note.startswith("All 5 complete trials are drawn in colour")
    assert "the 2 pruned trials faint grey" in note
    # The intermediate-values legend is titled by the count it shows.
    figures.intermediate_values(data)
    assert drawn[0].axes[0].get_legend().get_title().get_text() == "best 5"
    # 10 complete trials: the 8 best in colour, the other 2 grey.
    data = report_data([0.5 + i / 100 for i in range(10)])
    data.trials = [with_curves(t) for t in data.trials]
    note = sections._coloured(data)
    assert note.startswith(f"The {figures.TOP_K} best of 10 complete trials are drawn in colour")
    assert "the 2 complete trials faint grey" in note
    # Only the complete trial, and no others: no "others faint grey".
    one = report_data([0.9])
    one.trials = [with_curves(t) for t in one.trials]
    assert sections._coloured(one) == (
        "The one complete trial is drawn in colour, each in the same colour in every figure."
    )


DROPOUT = FloatDistribution(0.0, 0.5)  # continuous: every sampled value differs
CHANNELS = CategoricalDistribution([8, 16, 32])


def test_a_continuous_parameter_is_grouped_in_bins_not_a_level_per_value() -> None:
    rng = random.Random(0)
    dropouts = [rng.uniform(0.0, 0.5) for _ in range(9)]
    params = [{"channels": [8, 16, 32][i % 3], "dropout": d} for i, d in enumerate(dropouts)]
    distributions = {"channels": CHANNELS, "dropout": DROPOUT}
    data = report_data([0.9 + i / 1000 for i in range(9)], 1000, params, distributions)
    blocks = sections.grouped(data).blocks
    tables = {t.columns[0]: t for t in blocks if isinstance(t, sections.Table)}
    # 9 sampled values: 3 bins of 3 trials, each named by its lowest and highest value.
    low = sorted(dropouts)
    bins = [f"{low[i]:#.3g}–{low[i + 2]:#.3g}" for i in (0, 3, 6)]
    assert [row[0] for row in tables["dropout"].rows] == bins
    assert [row[1] for row in tables["dropout"].rows] == [3, 3, 3]
    # The heat map's columns are the same bins, and its cells hold every trial once.
    heat = tables["channels \\ dropout"]
    assert heat.columns[1:] == bins
    counts = [int(c.split("n=")[1][:-1]) for row in heat.rows for c in row[1:] if c != "–"]
    assert sum(counts) == 9 and max(counts) > 1
    assert "dropout takes 9 different values in 9 complete trials" in texts(blocks)


def test_few_valued_parameters_keep_one_level_per_value_printed_readably() -> None:
    # Float choices (0.1 + 0.2 is 0.30000000000000004), an int range and a stepped float, each
    # value met once or more: each value stays its own level.
    params = [
        {"dropout": [0.1, 0.1 + 0.2][i % 2], "depth": 1 + i, "decay": [0.0, 0.25, 0.5][i]}
        for i in range(3)
    ]
    distributions = {
        "dropout": CategoricalDistribution([0.1, 0.1 + 0.2]),
        "depth": IntDistribution(1, 4),
        "decay": FloatDistribution(0.0, 0.5, step=0.25),
    }
    data = report_data([0.8, 0.9, 0.7], 1000, params, distributions)
    blocks = sections.grouped(data).blocks
    tables = {t.columns[0]: t for t in blocks if isinstance(t, sections.Table)}
    assert [row[0] for row in tables["dropout"].rows] == [0.1, 0.3]
    assert [row[0] for row in tables["depth"].rows] == [1, 2, 3]
    assert [row[0] for row in tables["decay"].rows] == [0.0, 0.25, 0.5]
    assert tables["dropout \\ depth"].columns == ["dropout \\ depth", "1", "2", "3"]
    assert [row[0] for row in tables["dropout \\ depth"].rows] == [0.1, 0.3]
    assert "0.30000000000000004" not in str([t.rows for t in tables.values()])
    assert "bins" not in texts(blocks)
    # A grid study's continuous float: the user listed its values, so each is a level.
    params = [{"lr": lr, "width": 64} for lr in (1e-3, 3e-3, 1e-2)]
    grid = report_data([0.8, 0.9, 0.7], 1000, params, {"lr": LR, "width": WIDTH})
    grid.parent.tags["hptune.sampler"] = "grid"  # type: ignore[union-attr]
    by_lr = next(b for b in sections.grouped(grid).blocks if isinstance(b, sections.Table))
    assert [row[0] for row in by_lr.rows] == [1e-3, 3e-3, 1e-2]


def test_the_final_gradient_is_a_dot_per_layer_on_the_log_axis(drawn: list[Figure]) -> None:
    curves = {
        "weight_grad/conv1/mean_abs": [(1, 1e-2), (2, 1e-3)],
        "weight_grad/fc1/mean_abs": [(1, 1e-3), (2, 2e-5)],
        "weight_grad/fc1/zero_pct": [(1, 0.0), (2, 0.0)],
    }
    best = BestData(TrialData(0, "complete", 0.9, {}, None), None, {}, None, None, curves, [])
    figures.gradient_flow(best)
    over_time, final = drawn[0].axes
    # No bars: on a log axis a bar has no zero to start from, so its length means nothing.
    assert not final.patches and final.get_yscale() == "log"
    # One dot per layer at its last value, labelled, in the layer's colour on the left.
    dots = [(line.get_xdata()[0], line.get_ydata()[0]) for line in final.get_lines()]
    assert dots == [(0, 1e-3), (1, 2e-5)]
    assert [t.get_text() for t in final.texts] == ["0.001", "2e-05"]
    colours = [line.get_color() for line in over_time.get_lines()]
    assert [line.get_color() for line in final.get_lines()] == colours


def test_scores_print_to_four_decimals_so_a_column_lines_up() -> None:
    data = report_data([0.87, 0.8])
    test_metrics = {"test/accuracy": 0.861, "test/f1_macro": 1.0, "test/loss": 0.39}
    data.best = BestData(data.ranked()[0], None, test_metrics, None, None, {}, [])
    summary = dict(sections.summary(data).blocks[0].rows)  # type: ignore[union-attr]
    # 1.0 and 0.861 beside 0.8637 read as 1.0000 and 0.8610; a loss keeps 4 significant digits.
    assert summary["test/f1_macro"] == "1.0000" and summary["test/accuracy"] == "0.8610"
    assert summary["test/loss"] == 0.39
    (table,) = [b for b in sections.results(data).blocks if isinstance(b, sections.Table)]
    assert [row[table.columns.index("val/accuracy")] for row in table.rows] == ["0.8700", "0.8000"]
