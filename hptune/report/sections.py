"""The report's seven sections, built from ``ReportData`` as tables, images and text.

Every section is always present; a part that cannot be computed says why in its place.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import matplotlib

from hptune.metrics import FIT_RULE
from hptune.redact import redact
from hptune.report import figures
from hptune.report.collect import ReportData, TrialData
from hptune.report.levels import MAX_LEVELS, Levels, binned_note, levels, objective_by_level

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


SCORES = ("accuracy", "f1", "precision", "recall")  # metrics bounded in [0, 1]


def _metric(key: str, value: float | None) -> object:
    """A score to 4 decimals, so 1.0 and 0.95 line up as 1.0000 and 0.9500 beside 0.9744;
    any other metric as ``_fmt``."""
    if value is not None and any(word in key for word in SCORES):
        return f"{value:.4f}"
    return _fmt(value)


IMPORTANCE_TRIALS_PER_PARAM = 10  # fewer complete trials per parameter: too few to trust


def summary(data: ReportData) -> Section:
    counts = data.counts()
    tags = data.parent.tags if data.parent else {}
    wall = data.wall_time_s()
    noise = data.noise()
    rows: list[list[object]] = [
        ["study", data.study.study_name],
        ["objective", f"{'maximize' if data.maximize else 'minimize'} {data.metric}"],
        [
            "sampler / pruner",
            f"{tags.get('hptune.sampler', '?')} / {tags.get('hptune.pruner', '?')}",
        ],
        ["trials", _trial_counts(data, counts)],
        ["validation", tags.get("hptune.validation", "not recorded")],
        ["data (images)", _sizes(tags)],
        ["epochs per trial", ", ".join(_epochs(data)) or "not recorded"],
        ["overrides (--set, flags)", tags.get("hptune.overrides", "not recorded")],
        [
            "wall time (first trial's start to last trial's end)",
            f"{wall / 60:.1f} min" if wall is not None else "no trial ran",
        ],
        ["device", ", ".join(_devices(data)) or "not recorded"],
        ["hptune version", tags.get("hptune.version", "not recorded")],
        ["Optuna storage", redact(data.storage)],  # the report is shared: no passwords
        ["MLflow", f"experiment {data.experiment!r} in {redact(data.tracking_uri)}"],
        ["generated", datetime.now().isoformat(timespec="seconds")],
    ]
    if noise is not None:
        rows.append(
            ["validation noise", f"±{noise:.4f} (one standard error on {data.val_size} images)"]
        )
    if data.best is not None:
        best = data.best.trial
        rows.append([f"best ({data.metric})", f"trial {best.number}: {best.value:.4f}"])
        rows += [[f"best {k}", _fmt(v)] for k, v in best.params.items()]
        rows += [[k, _metric(k, v)] for k, v in sorted(data.best.test_metrics.items())]
        if not data.best.test_metrics:
            rows.append(["test set", "not evaluated for this trial (the study was not finished)"])
    else:
        rows.append(["best", "no complete trial yet"])
    blocks: list[Text | Table | Image] = [Table(["item", "value"], rows, csv_name="summary.csv")]
    blocks += _too_close(data, noise)
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


def _trial_counts(data: ReportData, counts: dict[str, int]) -> str:
    text = f"{len(data.trials)}: " + ", ".join(
        f"{counts[state]} {state}"
        for state in ("complete", "pruned", "failed", "interrupted", "running")
        if counts[state] or state in ("complete", "pruned", "failed")
    )
    return text + (f"; {data.queued} queued, not run yet" if data.queued else "")


def _sizes(tags: dict[str, str]) -> str:
    sizes = [tags.get(f"hptune.{split}_size") for split in ("train", "val", "test")]
    if not all(sizes):
        return "not recorded"
    train, val, test = (f"{int(size):,}" for size in sizes if size)
    return f"train {train}, validation {val}, test {test}"


def _epochs(data: ReportData) -> list[str]:
    return sorted({t.epochs for t in data.trials if t.epochs}, key=int)


def _too_close(data: ReportData, noise: float | None) -> list[Text | Table | Image]:
    """A note when the best and the runner-up differ by less than the validation noise."""
    ranked = data.ranked()
    if noise is None or len(ranked) < 2:
        return []
    best, second = ranked[0], ranked[1]
    gap = abs((best.value or 0.0) - (second.value or 0.0))
    if gap >= noise:
        return []
    return [
        Text(
            f"The best trial ({best.number}: {best.value:.4f}) and the runner-up "
            f"({second.number}: {second.value:.4f}) differ by {gap:.4f}, less than the "
            f"validation set's noise (one standard error, ±{noise:.4f} on {data.val_size} "
            "images): this study does not tell them apart."
        )
    ]


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
                _metric(data.metric, trial.value),
                *[_metric(key, trial.final(key)) for _, key in metrics],
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
        f"{_coloured(data)} Final values are dots (best at the top), so the axis need not "
        "start at zero."
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


def _coloured(data: ReportData) -> str:
    """Which trials the figures colour and which they draw grey, as counted in this study."""
    coloured = figures.colours(data)
    others: dict[str, int] = {}
    for trial in data.trials:
        if trial.number not in coloured and trial.curves:
            others[trial.state] = others.get(trial.state, 0) + 1
    if not coloured:
        text = "No trial is complete, so none is drawn in colour"
    elif len(coloured) == len(data.ranked()):
        text = (
            "The one complete trial is drawn in colour"
            if len(coloured) == 1
            else f"All {len(coloured)} complete trials are drawn in colour"
        )
    else:
        text = (
            f"The {len(coloured)} best of {len(data.ranked())} complete trials are drawn in colour"
        )
    text += ", each in the same colour in every figure" if coloured else ""
    if others:
        grey = sum(others.values())
        states = ", ".join(f"{n} {state}" for state, n in others.items())
        plural = "" if grey == 1 else "s"
        if len(others) == 1:  # "the 3 pruned trials", not "the other 3 trials (3 pruned)"
            text += f"; the {states} trial{plural} faint grey"
        else:
            text += f"; the other {grey} trial{plural} ({states}) faint grey"
    return text + "."


def grouped(data: ReportData) -> Section:
    """A table per parameter (its levels: ``levels.levels``), then the heat map of two."""
    complete = data.ranked()
    found = [found for name in _param_names(data) if (found := levels(data, name))]
    blocks: list[Text | Table | Image] = []
    if not complete:
        blocks.append(Text("No complete trial yet: nothing to group."))
    elif not found:
        blocks.append(Text("No parameter takes two values among the complete trials: no groups."))
    for level in found:
        cells = objective_by_level(complete, [level])
        rows = [
            [value, len(v), *[_metric(data.metric, f(v)) for f in (statistics.fmean, min, max)]]
            for value in level.order
            if (v := cells.get((value,)))
        ]
        text = f"{data.metric} grouped by {level.name} (complete trials; levels in order)"
        blocks.append(Text(text + (f". {binned_note(data, level)}" if level.binned else ":")))
        blocks.append(
            Table([level.name, "trials", "mean", "min", "max"], rows, f"grouped_{level.name}.csv")
        )
    blocks += _heat_map(data, found)
    return Section("4. Grouped analysis", blocks)


def _heat_map(data: ReportData, found: list[Levels]) -> list[Text | Table | Image]:
    # Parameters with chosen values first: a binned one is the axis of last resort.
    axes = sorted((f for f in found if len(f.order) <= MAX_LEVELS), key=lambda f: f.binned)[:2]
    if len(axes) < 2:
        return [
            Text(
                "Heat map: not shown, it needs two parameters with 2 to 12 levels each "
                "among complete trials."
            )
        ]
    first, second = axes
    cells = objective_by_level(data.ranked(), axes)
    means = {key: statistics.fmean(v) for key, v in cells.items()}
    low, high = min(means.values()), max(means.values())
    colour_map = matplotlib.colormaps["RdYlGn" if data.maximize else "RdYlGn_r"]
    rows, colours = [], []
    for r in first.order:
        row: list[object] = [r]
        colour_row: list[str | None] = [None]
        for c in second.order:
            mean = means.get((r, c))
            row.append(
                f"{_metric(data.metric, mean)} (n={len(cells[(r, c)])})"
                if mean is not None
                else "–"
            )
            if mean is None:
                colour_row.append(None)
            else:
                share = 0.5 if high == low else (mean - low) / (high - low)
                colour_row.append(matplotlib.colors.to_hex(colour_map(0.15 + 0.7 * share)))
        rows.append(row)
        colours.append(colour_row)
    columns = [f"{first.name} \\ {second.name}", *map(str, second.order)]
    text = (
        f"Heat map: mean {data.metric} by {first.name} (rows) and {second.name} (columns); n: "
        "how many complete trials each cell averages."
    )
    text += "".join(f" {binned_note(data, axis)}" for axis in axes if axis.binned)
    return [
        Text(text),
        Table(columns, rows, f"heatmap_{first.name}_{second.name}.csv", colours=colours),
    ]


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
            [name, *[_metric(key, s[key]) for key in ("precision", "recall", "f1")], s["support"]]
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
            *_importances(data),
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


def _importances(data: ReportData) -> list[Text | Table | Image]:
    """The importances figure, with how many complete trials it rests on and a warning when
    they are too few to trust (fewer than ``IMPORTANCE_TRIALS_PER_PARAM`` per parameter)."""
    try:
        drawn, found = figures.importances(data)
    except figures.Unavailable as reason:
        return [Text(f"Parameter importances: not shown, {reason}.")]
    complete = len(data.ranked())
    text = (
        f"Parameter importances (Optuna's PED-ANOVA) rest on {complete} complete trials and "
        f"{len(found)} parameter{'' if len(found) == 1 else 's'}."
    )
    if complete < IMPORTANCE_TRIALS_PER_PARAM * len(found):
        text += (
            f" That is fewer than {IMPORTANCE_TRIALS_PER_PARAM} per parameter: too few to trust;"
            " compare the grouped tables (section 4), which show each level's trials."
        )
    return [Text(text), Image("optuna_importances.png", drawn, "Parameter importances")]


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
