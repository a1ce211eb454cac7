"""The saved view that MLflow's runs page opens a study in: its runs only, best first, the
objective and the searched parameters as table columns, and in Chart view the objective's and
the train/val curves before the single-value charts (``model``, ``summary``, ``test``, ``time``).

MLflow 3.17 sorts Chart view's sections by name (a metric's name up to its last ``/``), which
puts ``model`` and ``summary`` first; metric names are what users write in study files, so they
stay, and the order comes from a view instead. Its UI keeps a saved view ("Views" menu) as the
experiment tag ``mlflow.sharedViewState.<key>``: a JSON envelope whose ``state`` is the runs
page's state as a JSON string, opened by ``#/experiments/<id>/runs?viewStateShareKey=<key>``.
That is the UI's own format, not a documented API: ``hptune.tracking`` writes it and falls back
to the plain address when it cannot. Nothing here imports mlflow.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hptune import grid

if TYPE_CHECKING:
    from hptune.config import StudyConfig

TAG_PREFIX = "mlflow.sharedViewState."  # the UI's prefix of a saved view's experiment tag
MODEL_METRICS = "Model metrics"  # the UI's section of metrics without a "/" (``lr``)
SYSTEM_METRICS = "System metrics"  # the UI's section of ``system/*`` metrics
# hptune's own sections, in the order a user reads them after the objective's: the curves,
# then the single-value ones. Sections not listed (``weight_grad/<layer>``, a user's own, the
# UI's Model and System metrics) are appended by the UI after these.
KNOWN_SECTIONS = ("val", "train", "time", "model", "summary", "test")
SAFE_KEY = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # fits a tag key and an address as it is


@dataclass(frozen=True)
class RunsView:
    """A saved view of the runs page: its key (in the tag and the address), the name the Views
    menu shows, and the page's state."""

    key: str
    name: str
    state: dict[str, Any]

    @property
    def tag(self) -> str:
        """The experiment tag that holds the view."""
        return TAG_PREFIX + self.key

    def envelope(self, now_ms: int, stored: str | None = None) -> str:
        """The tag's value: the UI's envelope, with the state as a JSON string in it, updated
        at ``now_ms``; ``stored``: the value written before (a rerun), whose creation time it
        keeps."""
        created = _created_at(stored) or now_ms
        state = json.dumps(self.state, separators=(",", ":"))
        envelope = {"name": self.name, "createdAt": created, "updatedAt": now_ms}
        return json.dumps(envelope | {"state": state}, separators=(",", ":"))


def _created_at(envelope: str | None) -> int | None:
    """When a stored view (a tag's value) was first written, in ms; None: none, or unreadable."""
    try:
        created = json.loads(envelope or "null")["createdAt"]
    except (ValueError, TypeError, KeyError):
        return None
    return created if isinstance(created, int) else None


def view_key(study: str) -> str:
    """``hptune-<study>``; a name with other characters (or a long one) keeps its safe ones and
    a short hash of the whole name, so two studies never share a view."""
    if SAFE_KEY.fullmatch(study):
        return f"hptune-{study}"
    digest = hashlib.sha256(study.encode()).hexdigest()[:8]
    kept = re.sub(r"[^A-Za-z0-9_.-]+", "-", study).strip("-")[:60]
    return f"hptune-{kept}-{digest}" if kept else f"hptune-{digest}"


def study_filter(study: str) -> str:
    """The runs search that finds one study's runs: ``tags.`hptune.study` = 'quick'``. MLflow's
    search strings have no escapes: a name with a single quote is put in double quotes."""
    quote = '"' if "'" in study else "'"
    return f"tags.`hptune.study` = {quote}{study}{quote}"


def section(metric: str) -> str:
    """The Chart view section MLflow 3.17 draws ``metric`` in: its name up to the last ``/``."""
    if metric.startswith("system/"):
        return SYSTEM_METRICS
    return metric.rpartition("/")[0] or MODEL_METRICS


def sections(objectives: Sequence[str]) -> list[str]:
    """The objectives' sections, then hptune's others: the curves before the single values."""
    return list(dict.fromkeys([*map(section, objectives), *KNOWN_SECTIONS]))


def study_view(
    study: str, objectives: Sequence[tuple[str, bool]], searched: Sequence[str]
) -> RunsView:
    """The view of one study's runs.

    Args:
        study: the study's name (its runs' ``hptune.study`` tag).
        objectives: each objective's metric and whether it is maximized; the first orders the
            runs, best first.
        searched: the parameters the study searches (MLflow params of the same names).
    """
    metrics = [metric for metric, _ in objectives]
    metric, maximize = objectives[0]
    state: dict[str, Any] = {
        "searchFilter": study_filter(study),
        "orderByKey": f"metrics.`{metric}`",
        "orderByAsc": not maximize,
        "selectedColumns": [f"metrics.`{m}`" for m in metrics]
        + [f"params.`{p}`" for p in searched],
        "compareRunSections": [
            {"uuid": f"hptune-{n}", "name": name, "display": True, "isReordered": False}
            for n, name in enumerate(sections(metrics))
        ],
        "isAccordionReordered": True,  # the sections' order is the list's, not sorted
        "compareRunCharts": [],  # (required: the UI adds a chart per metric to it)
        "runsHiddenMode": "SHOW_ALL",  # every run's curves (the UI shows the first 10)
        "hideEmptyCharts": True,
    }
    return RunsView(view_key(study), f"hptune: {study} (curves first)", state)


def study_config_view(config: StudyConfig) -> RunsView:
    """The view of a study file's study: best first on its (first) objective, its objectives
    and searched parameters as columns."""
    objectives = [(o.metric, o.resolved_direction == "maximize") for o in config.objectives]
    return study_view(config.name, objectives, list(grid.full_space(config)))
