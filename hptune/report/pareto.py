"""The report's Pareto section, for studies with several objectives: the Pareto front's
plot, the front as a table (``pareto.csv``), the trade-off along it in words, and the rule that
chose the study's one "best" trial (the parent run's ``hptune.select`` tag)."""

from __future__ import annotations

import json

import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial

from hptune import pareto
from hptune.attrs import FINGERPRINT_ATTR
from hptune.report import figures
from hptune.report.collect import ReportData
from hptune.report.sections import Image, Section, Table, Text


def sections(data: ReportData) -> list[Section]:
    """The Pareto section of a multi-objective study's report (none for one objective)."""
    if len(data.study.directions) < 2:
        return []
    names = objective_names(data.study)
    front = pareto.front(data.study)
    chosen = _chosen(data, front)
    blocks: list[Text | Table | Image] = []
    rule = data.parent.tags.get("hptune.select") if data.parent else None
    if rule:
        picked = f"trial {chosen.number}" if chosen else "no trial (none within its budget)"
        blocks.append(
            Text(f"The study's best model (registered, test-evaluated): {rule}: {picked}.")
        )
    if not front:
        return [Section("Pareto front", [*blocks, Text("No complete trial yet.")])]
    blocks.append(Text(tradeoff(front, names, data.study.directions)))
    blocks.append(_figure(data, names))
    params = sorted({name for trial in front for name in trial.params})
    rows = [
        [
            trial.number,
            *(_number(value, 6) for value in trial.values),
            *(_number(trial.params.get(name, ""), 4) for name in params),
            "yes" if chosen is not None and trial.number == chosen.number else "",
        ]
        for trial in front
    ]
    blocks.append(Table(["trial", *names, *params, "selected"], rows, csv_name="pareto.csv"))
    return [Section("Pareto front", blocks)]


def _figure(data: ReportData, names: list[str]) -> Image | Text:
    """The complete trials on the first two objectives, the front's trials joined and ringed."""
    complete = data.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(names) < 2 or not complete:
        return Text("Pareto front: not shown, it needs two objectives and a complete trial.")
    front = sorted(pareto.front(data.study), key=lambda trial: trial.values[0])
    figure = Figure(figsize=(6.4, 4.4))
    axes = figure.add_subplot()
    axes.scatter(
        [t.values[0] for t in complete],
        [t.values[1] for t in complete],
        s=18,
        color=figures.GREY,
        label="complete trials",
    )
    axes.plot(
        [t.values[0] for t in front],
        [t.values[1] for t in front],
        "o-",
        color="tab:blue",
        label="Pareto front",
    )
    for trial in front:
        axes.annotate(
            str(trial.number),
            (trial.values[0], trial.values[1]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    axes.set_xlabel(names[0])
    axes.set_ylabel(names[1])
    if len(names) > 2:
        axes.set_title(f"first two of {len(names)} objectives", fontsize=9)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return Image("pareto_front.png", figures.png(figure), "Pareto front")


def objective_names(study: optuna.Study) -> list[str]:
    """The objectives' metric names, as the study's fingerprint recorded them."""
    fingerprint = study.user_attrs.get(FINGERPRINT_ATTR)
    names = json.loads(fingerprint).get("objectives") if fingerprint else None
    return list(names) if names else [f"objective {k}" for k in range(len(study.directions))]


def _chosen(data: ReportData, front: list[FrozenTrial]) -> FrozenTrial | None:
    run_id = data.parent.tags.get("best_trial_run_id") if data.parent else None
    return next((t for t in front if t.user_attrs.get("hptune.mlflow_run_id") == run_id), None)


def tradeoff(
    front: list[FrozenTrial], names: list[str], directions: list[optuna.study.StudyDirection]
) -> str:
    """The front's ends on the first two objectives, and what moving between them costs."""
    maximize = [d == optuna.study.StudyDirection.MAXIMIZE for d in directions]
    best_first = (max if maximize[0] else min)(front, key=lambda t: t.values[0])
    best_second = (max if maximize[1] else min)(front, key=lambda t: t.values[1])
    text = f"{len(front)} trial{'s' if len(front) != 1 else ''} on the Pareto front."
    if best_first.number == best_second.number:
        return text + f" Trial {best_first.number} is best on both {names[0]} and {names[1]}."
    first_gap = abs(best_first.values[0] - best_second.values[0])
    ratio = best_first.values[1] / best_second.values[1] if best_second.values[1] else None
    return text + (
        f" The best on {names[0]}, trial {best_first.number} ({names[0]} "
        f"{best_first.values[0]:.4g}, {names[1]} {best_first.values[1]:.4g}), against the best "
        f"on {names[1]}, trial {best_second.number} ({names[0]} {best_second.values[0]:.4g}, "
        f"{names[1]} {best_second.values[1]:.4g}): {first_gap:.4g} of {names[0]} for "
        + (f"{ratio:.3g}x the {names[1]}." if ratio is not None else f"{names[1]}.")
    )


def _number(value: object, digits: int) -> object:
    """Whole numbers as integers (parameter counts), other floats to ``digits`` digits."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else float(f"{value:.{digits}g}")
    return value
