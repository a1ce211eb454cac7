"""The runs page's saved view of a study, as MLflow 3.17's UI reads it: the envelope and state
it parses, the sections in the order a user reads them, the columns, and a safe key."""

from __future__ import annotations

import json
import re

import pytest

from hptune import runs_view
from hptune.runs_view import study_view

SEARCHED = ["family", "lr", "batch_size"]


def section_names(view: runs_view.RunsView) -> list[str]:
    return [s["name"] for s in view.state["compareRunSections"]]


def test_the_objective_and_the_curves_come_before_the_single_values() -> None:
    view = study_view("quick", [("val/accuracy", True)], SEARCHED)
    # MLflow sorts sections by name (model, summary, test, time, train, val): the view lists
    # them in reading order, and says that its order is not to be sorted.
    assert section_names(view) == ["val", "train", "time", "model", "summary", "test"]
    assert view.state["isAccordionReordered"] is True
    # (The UI adds its charts to the list, and fails without one.)
    assert view.state["compareRunCharts"] == []


@pytest.mark.parametrize(
    ("objectives", "first"),
    [
        ([("train/loss", False)], ["train", "val", "time"]),
        ([("summary/stability", True)], ["summary", "val", "train"]),
        ([("score", True)], ["Model metrics", "val", "train"]),  # (no "/": MLflow's section)
        ([("val/accuracy", True), ("model/params", False)], ["val", "model", "train"]),
    ],
)
def test_the_objectives_sections_come_first(
    objectives: list[tuple[str, bool]], first: list[str]
) -> None:
    names = section_names(study_view("s", objectives, []))
    # Each section once, the objectives' first, in the objectives' order.
    assert names[: len(first)] == first
    assert len(names) == len(set(names))


def test_the_view_shows_one_study_best_first_with_its_objective_and_parameters() -> None:
    state = study_view("quick", [("val/loss", False), ("model/params", False)], SEARCHED).state
    # The study's runs only, flat, ordered on the first objective: a loss, smallest first.
    assert state["searchFilter"] == "tags.`hptune.study` = 'quick'"
    assert state["orderByKey"] == "metrics.`val/loss`" and state["orderByAsc"] is True
    # The table's columns: the objectives, then the searched parameters in the file's order.
    assert state["selectedColumns"] == [
        "metrics.`val/loss`",
        "metrics.`model/params`",
        "params.`family`",
        "params.`lr`",
        "params.`batch_size`",
    ]
    # Every run's curves in Chart view (MLflow's default shows the first 10 runs only).
    assert state["runsHiddenMode"] == "SHOW_ALL"
    maximized = study_view("quick", [("val/accuracy", True)], []).state
    assert maximized["orderByAsc"] is False


def test_the_envelope_is_what_mlflows_ui_parses() -> None:
    view = study_view("quick", [("val/accuracy", True)], SEARCHED)
    envelope = json.loads(view.envelope(1_000))
    # The UI's saved-view envelope: a string name, numeric times, the state as a JSON string.
    assert view.tag == "mlflow.sharedViewState.hptune-quick"
    assert envelope["name"] == "hptune: quick (curves first)"
    assert envelope["createdAt"] == envelope["updatedAt"] == 1_000
    assert json.loads(envelope["state"]) == view.state


def test_a_rewritten_view_keeps_its_creation_time() -> None:
    view = study_view("quick", [("val/accuracy", True)], SEARCHED)
    first = view.envelope(1_000)
    again = json.loads(view.envelope(2_000, first))
    # A rerun rewrites the view: created when first written, updated now.
    assert (again["createdAt"], again["updatedAt"]) == (1_000, 2_000)
    # A value that is not a view of ours (edited by hand) is replaced whole.
    for stored in ("", "not json", "[1]", '{"createdAt": "x"}'):
        assert json.loads(view.envelope(3_000, stored))["createdAt"] == 3_000


def test_a_study_name_of_safe_characters_is_its_view_key() -> None:
    assert runs_view.view_key("quick") == "hptune-quick"
    assert runs_view.view_key("fashion.v2_run-1") == "hptune-fashion.v2_run-1"


@pytest.mark.parametrize("study", ["my study/ü", "a" * 150])
def test_other_names_keep_their_safe_part_and_a_hash(study: str) -> None:
    key = runs_view.view_key(study)
    # Letters, digits and "_.-" only (a tag key and an address take them as they are).
    assert re.fullmatch(r"hptune-[A-Za-z0-9_.-]{1,60}-[0-9a-f]{8}", key), key
    assert len(runs_view.TAG_PREFIX + key) <= 250  # MLflow's longest tag key


def test_names_that_differ_only_in_unsafe_characters_get_different_keys() -> None:
    assert runs_view.view_key("a b") != runs_view.view_key("a/b")


def test_a_name_with_a_quote_is_searched_in_double_quotes() -> None:
    # MLflow's search strings have no escapes.
    assert runs_view.study_filter("it's") == 'tags.`hptune.study` = "it\'s"'
