"""The text MLflow's UI shows of a study: values as written, run names, descriptions, the
runs page's address."""

from __future__ import annotations

import urllib.parse

import pytest

from hptune import notes


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.1 + 0.2, "0.3"),  # a float step's binary noise is not what anyone wrote
        (0.00114232541556084, "0.001142"),  # a sampled lr: 4 significant digits
        (0.0005, "0.0005"),  # a value as written in a study file stays as it is
        (0.123456, "0.123456"),
        (1000.0, "1000"),
        (1e-05, "1e-05"),
        (1e30, "1e+30"),
        (128, "128"),
        ("relu", "relu"),
        (True, "True"),
    ],
)
def test_values_are_shown_as_written(value: object, shown: str) -> None:
    assert notes.format_value(value) == shown


def test_pruned_and_failed_trials_are_named_apart() -> None:
    # MLflow draws one red mark for KILLED and FAILED runs: the name says which.
    assert notes.trial_run_name(7, "complete") == "trial-7"
    assert notes.trial_run_name(7, "pruned") == "trial-7 (pruned)"
    assert notes.trial_run_name(7, "failed") == "trial-7 (failed)"
    assert notes.trial_run_name(7, "interrupted") == "trial-7 (interrupted)"


def test_a_trial_note_gives_parameters_and_outcome_on_one_line() -> None:
    tags = {"hptune.state": "pruned", "hptune.pruned_at_epoch": "3"}
    outcome = notes.trial_outcome(tags, "val/accuracy", {"val/accuracy": 0.71234}, 3)
    note = notes.trial_note(4, {"activation": "relu", "lr": 0.0027394856}, outcome)
    assert (
        note == "Trial 4: activation=relu, lr=0.002739 → pruned after epoch 3: val/accuracy 0.7123"
    )
    assert "\n" not in note


def test_the_runs_page_shows_one_study_best_first() -> None:
    page = notes.runs_page("3", "quick", "val/loss", maximize=False)
    path, _, query = page.partition("?")
    assert path == "#/experiments/3/runs"
    fields = dict(urllib.parse.parse_qsl(query))
    # Only this study's runs, flat and sorted by the objective (a loss: smallest first), in
    # MLflow's model-training mode.
    assert fields == {
        "searchFilter": "tags.`hptune.study` = 'quick'",
        "orderByKey": "metrics.`val/loss`",
        "orderByAsc": "true",
        "workflowType": "machine_learning",
    }


def test_the_runs_page_opens_the_studys_saved_view_when_there_is_one() -> None:
    page = notes.runs_page("3", "quick", "val/loss", maximize=False, view="hptune-quick")
    path, _, query = page.partition("?")
    assert path == "#/experiments/3/runs"
    # The view holds the search and the order: MLflow's UI ignores a view opened with either
    # in the address.
    assert dict(urllib.parse.parse_qsl(query)) == {
        "viewStateShareKey": "hptune-quick",
        "workflowType": "machine_learning",
    }
