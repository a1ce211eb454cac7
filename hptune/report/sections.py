"""The report's seven sections, built from ``ReportData`` as tables, images and text.

Every section is always present; a part that cannot be computed says why in its place.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import matplotlib
from optuna.distributions import CategoricalDistribution

from hptune.metrics import FIT_RULE
from hptune.redact import redact
from hptune.report import figures
from hptune.report.collect import ReportData, TrialData

FIT_LABELS = ("under-fit", "good fit", "over-fit")


@dataclass
class Text:
    text: str


@dataclass
class Table:
    columns: list[str]
    rows: list[list[object]]
    csv_name: str | None = None  # also written as this CSV
    highlight: int | None = None  # index of the best row
    sortable: bool = False
    colours: list[list[str | None]] | None = None  # heat-map cell backgrounds


@dataclass
class Image:
    name: str  # file name beside the Markdown report
    png: bytes
    alt: str


@dataclass
class Section:
    title: str
    blocks: list[Text | Table | Image] = field(default_factory=list)


def build(data: ReportData) -> list[Section]:
    return [
        summary(data),
        results(data),
        comparison(data),
        grouped(data),
        best_trial(data),
        optuna_view(data),
        fit_section(data),
    ]


def _figure(name: str, alt: str, draw: Callable[[], bytes]) -> Image | Text:
    try:
        return Image(name, draw(), alt)
    except figures.Unavailable as reason:
        return Text(f"{alt}: not shown, {reason}.")


def _fmt(value: object) -> object:
    """Floats to 4 significant digits (a learning rate of 1e-5 stays 1e-05); None to blank."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    return "" if value is None else value


def summary(data: ReportData) -> Section:
    counts = data.counts()
    tags = data.parent.tags if data.parent else {}
    wall = data.wall_time_s()
    rows: list[list[object]] = [
        ["study", data.study.study_name],
        ["objective", f"{'maximize' if data.maximize else 'minimize'} {data.metric}"],
        [
            "sampler / pruner",
            f"{tags.get('hptune.sampler', '?')} / {tags.get('hptune.pruner', '?')}",
        ],
        [
            "trials",
            f"{len(data.trials)}: {counts['complete']} complete, {counts['pruned']} pruned, "
            f"{counts['failed']} failed"
            + (f", {counts['running']} running" if counts["running"] else "")
            + (f"; {data.queued} queued, not run yet" if data.queued else ""),
        ],
        ["validation", tags.get("hptune.validation", "unknown")],
        ["wall time", f"{wall / 60:.1f} min" if wall is not None else "no trial ran"],
        ["device", ", ".join(_devices(data)) or "unknown"],
        ["Optuna storage", redact(data.storage)],  # the report is shared: no passwords
        ["MLflow", f"experiment {data.experiment!r} in {redact(data.tracking_uri)}"],
        ["generated", datetime.now().isoformat(timespec="seconds")],
    ]
    if data.best is not None:
        best = data.best.trial
        rows.append([f"best ({data.metric})", f"trial {best.number}: {best.value:.4f}"])
        rows += [[f"best {k}", _fmt(v)] for k, v in best.params.items()]
        rows += [[k, _fmt(v)] for k, v in sorted(data.best.test_metrics.items())]
        if not data.best.test_metrics:
            rows.append(["test set", "not evaluated for this trial (the study was not finished)"])
    else:
        rows.append(["best", "no complete trial yet"])
    blocks: list[Text | Table | Image] = [Table(["item", "value"], rows, csv_name="summary.csv")]
    if counts["running"]:
        blocks.insert(0, Text("The study is still running: this report shows what exists so far."))
    elif data.queued:
        blocks.insert(
            0,
            Text(
                f"{data.queued} queued trial{'' if data.queued == 1 else 's'} (rows of the"
                " study's table, or stopped trials to run again) not run yet: running `hptune"
                " optimize` on the study file again runs them. This report shows what exists so"
                " far."
            ),
        )
    if tags.get("hptune.validation") == "test set":
        blocks.append(
            Text(
                "Validation is the test set, as the experiment this study reproduces did: every "
                "val/* number here is a test-set number, and the best trial was chosen on it."
            )
        )
    return Section("1. Summary", blocks)


def _devices(data: ReportData) -> list[str]:
    return sorted({t.device for t in data.trials if t.device})


def _param_names(data: ReportData) -> list[str]:
    return list(dict.fromkeys(name for t in data.trials for name in t.params))


RESULT_METRICS = (
    ("train acc", "train/accuracy"),
    ("val acc", "val/accuracy"),
    ("train loss", "train/loss"),
    ("val loss", "val/loss"),
    ("val macro-F1", "val/f1_macro"),
)


def results(data: ReportData) -> Section:
    names = _param_names(data)
    # The objective's own column comes first; a metric column would repeat it.
    metrics = [(column, key) for column, key in RESULT_METRICS if key != data.metric]
    columns = ["trial", "state", *names, data.metric, *[c for c, _ in metrics]]
    columns += ["best epoch", "fit", "note"]
    rows, highlight = [], None
    best = data.best.trial.number if data.best else None
    for index, trial in enumerate(data.trials):
        if trial.number == best:
            highlight = index
        rows.append(
            [
                trial.number,
                trial.state,
                *[_fmt(trial.params.get(name)) for name in names],
                _fmt(trial.value),
                *[_fmt(trial.final(key)) for _, key in metrics],
                _fmt(trial.best_epoch),
                _fmt(trial.fit),
                _fmt(trial.fail_reason),
            ]
        )
    if not rows:
        return Section("2. Results", [Text("No trial has run yet.")])
    text = Text(
        "One row per trial; metrics at its last logged epoch; the best trial is highlighted. "
        "Click a column heading to sort."
    )
    table = Table(columns, rows, csv_name="trials.csv", highlight=highlight, sortable=True)
    return Section("2. Results", [text, table])


def comparison(data: ReportData) -> Section:
    note = Text(
        f"The {figures.TOP_K} best complete trials are drawn in colour, the others faint grey."
    )
    return Section(
        "3. Comparison plots",
        [
            note,
            _figure("comparison.png", "Curves and final values", lambda: figures.comparison(data)),
            _figure("train_vs_val.png", "Train vs validation", lambda: figures.train_vs_val(data)),
            _figure("macro_f1.png", "Validation macro-F1", lambda: figures.macro_f1(data)),
        ],
    )


def grouped(data: ReportData) -> Section:
    complete = data.ranked()
    blocks: list[Text | Table | Image] = []
    categorical = [
        name
        for name in _param_names(data)
        if any(isinstance(t.distributions.get(name), CategoricalDistribution) for t in data.trials)
    ]
    if not complete:
        blocks.append(Text("No complete trial yet: nothing to group."))
    elif not categorical:
        blocks.append(Text("The study has no categorical parameter to group by."))
    for name in categorical if complete else []:
        groups: dict[object, list[float]] = {}
        for trial in complete:
            if name in trial.params:
                groups.setdefault(trial.params[name], []).append(trial.value or 0.0)
        rows = [
            [value, len(v), _fmt(statistics.fmean(v)), _fmt(min(v)), _fmt(max(v))]
            for value, v in groups.items()
        ]
        rows.sort(key=lambda row: row[2], reverse=data.maximize)  # type: ignore[arg-type, return-value]
        blocks.append(Text(f"{data.metric} grouped by {name} (complete trials):"))
        blocks.append(Table([name, "trials", "mean", "min", "max"], rows, f"grouped_{name}.csv"))
    blocks += _heat_map(data)
    return Section("4. Grouped analysis", blocks)


def _heat_map(data: ReportData) -> list[Text | Table | Image]:
    complete = data.ranked()
    axes = [
        name
        for name in _param_names(data)
        if 2 <= len({t.params.get(name) for t in complete if name in t.params}) <= 12
    ][:2]
    if len(axes) < 2:
        return [
            Text(
                "Heat map: not shown, it needs two parameters with 2 to 12 values each "
                "among complete trials."
            )
        ]
    first, second = axes
    rows_values = list(dict.fromkeys(t.params[first] for t in complete if first in t.params))
    column_values = list(dict.fromkeys(t.params[second] for t in complete if second in t.params))
    rows_values.sort(key=_order)
    column_values.sort(key=_order)
    cells: dict[tuple[object, object], list[float]] = {}
    for trial in complete:
        if first in trial.params and second in trial.params:
            key = (trial.params[first], trial.params[second])
            cells.setdefault(key, []).append(trial.value or 0.0)
    means = {key: statistics.fmean(v) for key, v in cells.items()}
    low, high = min(means.values()), max(means.values())
    colour_map = matplotlib.colormaps["RdYlGn" if data.maximize else "RdYlGn_r"]
    rows, colours = [], []
    for r in rows_values:
        row: list[object] = [r]
        colour_row: list[str | None] = [None]
        for c in column_values:
            mean = means.get((r, c))
            row.append(_fmt(mean) if mean is not None else "–")
            if mean is None:
                colour_row.append(None)
            else:
                share = 0.5 if high == low else (mean - low) / (high - low)
                colour_row.append(matplotlib.colors.to_hex(colour_map(0.15 + 0.7 * share)))
        rows.append(row)
        colours.append(colour_row)
    columns = [f"{first} \\ {second}", *map(str, column_values)]
    return [
        Text(f"Heat map: mean {data.metric} by {first} (rows) and {second} (columns)."),
        Table(columns, rows, f"heatmap_{first}_{second}.csv", colours=colours),
    ]


def _order(value: object) -> tuple[int, object]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def best_trial(data: ReportData) -> Section:
    best = data.best
    if best is None:
        return Section("5. Best trial", [Text("No complete trial yet.")])
    trial = best.trial
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
    blocks: list[Text | Table | Image] = [
        Text(
            f"Trial {trial.number}: {data.metric} {trial.value:.4f} "
            f"with {params or 'fixed settings'}."
        )
    ]
    details = best.test if best.test else best.validation
    which = "test set" if best.test else "validation set (the test set was not evaluated)"
    if details:
        blocks.append(
            _figure(
                "confusion_matrix.png",
                f"Confusion matrix ({which})",
                lambda: figures.confusion(details, f"Confusion matrix ({which})"),
            )
        )
        per_class = details.get("per_class") or {}
        rows = [
            [name, _fmt(s["precision"]), _fmt(s["recall"]), _fmt(s["f1"]), s["support"]]
            for name, s in per_class.items()
        ]
        if rows:
            blocks.append(Text(f"Per-class scores ({which}):"))
            blocks.append(
                Table(["class", "precision", "recall", "F1", "support"], rows, "per_class.csv")
            )
    else:
        blocks.append(Text("Confusion matrix: not shown, the best trial's run has none."))
    if best.gallery_png:
        blocks.append(Image("gallery.png", best.gallery_png, "Test images: true vs predicted"))
    else:
        blocks.append(Text("Test-image gallery: not shown, the best model was not test-evaluated."))
    blocks.append(
        _figure("gradient_flow.png", "Gradient flow", lambda: figures.gradient_flow(best))
    )
    blocks.append(_figure("dead_neurons.png", "Dead neurons", lambda: figures.dead_neurons(best)))
    blocks.append(
        _figure("lr_schedule.png", "Learning-rate schedule", lambda: figures.lr_schedule(best))
    )
    return Section("5. Best trial", blocks)


def optuna_view(data: ReportData) -> Section:
    return Section(
        "6. Optuna's view",
        [
            _figure(
                "optuna_history.png",
                "Optimization history",
                lambda: figures.optimization_history(data),
            ),
            _figure(
                "optuna_importances.png", "Parameter importances", lambda: figures.importances(data)
            ),
            _figure(
                "optuna_parallel.png",
                "Parallel coordinates",
                lambda: figures.parallel_coordinates(data),
            ),
            _figure(
                "optuna_intermediate.png",
                "Intermediate values (pruning)",
                lambda: figures.intermediate_values(data),
            ),
        ],
    )


def fit_section(data: ReportData) -> Section:
    blocks: list[Text | Table | Image] = [Text(f"Rule: {FIT_RULE}.")]
    labelled: dict[str, list[TrialData]] = {label: [] for label in FIT_LABELS}
    for trial in data.trials:
        if trial.fit in labelled:
            labelled[trial.fit].append(trial)
    if not any(labelled.values()):
        blocks.append(Text("No complete trial has a fit diagnosis yet."))
        return Section("7. Fit diagnosis", blocks)
    rows = [
        [label, len(trials), ", ".join(f"#{t.number}" for t in trials)]
        for label, trials in labelled.items()
    ]
    blocks.append(Table(["diagnosis", "trials", "which"], rows, "fit_diagnosis.csv"))
    return Section("7. Fit diagnosis", blocks)
