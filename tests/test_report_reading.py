"""The report as a data scientist reads it: noise, left-out trials, trust in importances,
readable pruning curves, ordered groups, heat-map counts, interrupted trials."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution

from hptune.attrs import FAIL_REASON_ATTR, FINGERPRINT_ATTR
from hptune.report import figures, sections
from hptune.report.collect import ReportData, TrialData, collect
from hptune.tracking import RunRecord

LR = FloatDistribution(1e-4, 1e-1, log=True)
WIDTH = CategoricalDistribution([64, 128, 256])


def report_data(values: list[float], val_size: int = 1000, curves: bool = False) -> ReportData:
    """A maximized val/accuracy study with one complete trial per value (lr and width vary),
    and a parent run that recorded ``val_size`` validation images."""
    study = optuna.create_study(direction="maximize")
    study.set_user_attr(FINGERPRINT_ATTR, json.dumps({"objective": "val/accuracy"}))
    trials = []
    for number, value in enumerate(values):
        params = {"lr": 10 ** -(1 + number % 3), "width": [64, 128, 256][number % 3]}
        reports = {1: value - 0.05, 2: value}
        study.add_trial(
            optuna.trial.create_trial(
                value=value,
                params=params,
                distributions={"lr": LR, "width": WIDTH},
                intermediate_values=reports,
            )
        )
        trial = TrialData(number, "complete", value, params, None)
        trial.distributions = {"lr": LR, "width": WIDTH}
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
    assert heat.rows[-1][1] == "0.805 (n=2)"


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
