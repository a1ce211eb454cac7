"""Exhaustive studies: configuration lists crossed with grids, as a table of trials."""

from __future__ import annotations

from pathlib import Path

import pytest

from hptune import grid
from hptune.attrs import FAIL_REASON_ATTR, INTERRUPTED, STALE
from hptune.errors import ConfigError
from hptune.studyfile import load_study_file
from tests.conftest import study_yaml


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    return load_study_file(study_yaml(tmp_path / "s.yaml", "name: demo\n" + text))


def test_a_grid_is_the_product_of_value_counts(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """sampler: {name: grid}
search_space:
  lr: {type: categorical, choices: [0.005, 0.001, 0.0005, 0.0001]}
  width: {type: categorical, choices: [64, 128, 256]}
""",
    )
    rows = grid.table(config)
    # Experiment E's 4 learning rates x 3 hidden sizes, first parameter slowest, in file order.
    assert len(rows) == 12
    assert rows[:2] == [{"lr": 0.005, "width": 64}, {"lr": 0.005, "width": 128}]


def test_a_list_runs_its_rows_as_written(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """configurations:
  - {activation: relu, optimizer: sgd}
  - {activation: sigmoid, optimizer: adam}
""",
    )
    # A list is not a product: exactly the two rows, and it needs no grid sampler.
    assert grid.is_exhaustive(config)
    assert grid.table(config) == [
        {"activation": "relu", "optimizer": "sgd"},
        {"activation": "sigmoid", "optimizer": "adam"},
    ]


def test_a_list_is_crossed_with_the_grid(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """model: {family: convnet}
configurations:
  - {conv_blocks: 1, dense_layers: 1}
  - {conv_blocks: 2, dense_layers: 2}
search_space:
  neurons: {type: categorical, choices: [64, 128, 256]}
""",
    )
    # Experiment D's (blocks, dense layers) pairs x neurons.
    rows = grid.table(config)
    assert len(rows) == 6
    assert rows[3] == {"conv_blocks": 2, "dense_layers": 2, "neurons": 64}


def test_a_conditional_grid_has_no_duplicates(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """sampler: {name: grid}
search_space:
  family: {type: categorical, choices: [mlp, cnn]}
  width: {type: categorical, choices: [64, 128], when: {family: mlp}}
""",
    )
    # width applies to the MLP only: 2 MLP points + 1 CNN point, not 2 x 2.
    assert grid.table(config) == [
        {"family": "mlp", "width": 64},
        {"family": "mlp", "width": 128},
        {"family": "cnn"},
    ]


def test_no_search_space_is_one_configuration(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    # A study of fixed settings is one run, not n_trials repeats of it.
    assert grid.is_exhaustive(config)
    assert grid.table(config) == [{}]


def test_a_sampled_space_is_not_exhaustive(tmp_path: Path) -> None:
    config = load(tmp_path, "search_space:\n  lr: {type: float, low: 0.001, high: 0.1}\n")
    assert not grid.is_exhaustive(config)


def test_a_log_range_has_no_grid(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "sampler: {name: grid}\nsearch_space:\n"
        "  lr: {type: float, low: 0.001, high: 0.1, log: true}\n",
    )
    with pytest.raises(ConfigError, match=r"s.yaml: search_space.lr: a grid needs"):
        grid.table(config)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "configurations:\n  - {activation: relu}\n  - {optimizer: adam}\n",
            r"configurations\[1\]: sets optimizer, but every configuration must set the same "
            r"parameters as the first \(activation\)",
        ),
        (
            "configurations:\n  - {activation: swish}\n",
            r"configurations\[0\].activation: unknown activation 'swish'",
        ),
        (
            "configurations:\n  - {colour: red}\n",
            r"configurations\[0\]: unknown parameter 'colour'",
        ),
        (
            "model: {activation: relu}\nconfigurations:\n  - {activation: tanh}\n",
            r"model.activation: is fixed here and also searched by configurations\[0\]",
        ),
        (
            "configurations:\n  - {lr: 0.1}\nsearch_space:\n"
            "  lr: {type: categorical, choices: [0.1]}\n",
            r"configurations\[0\].lr: is also in search_space",
        ),
        (
            "configurations:\n  - {hidden_sizes: 128-x}\n",
            r"configurations\[0\].hidden_sizes: hidden sizes are written like 512-256-128",
        ),
        (
            "configurations:\n  - {neurons: 64}\n",
            r"configurations\[0\].neurons: neurons not used by model family 'mlp'",
        ),
        (
            "search_space:\n  width: {type: int, low: 1, high: 4, when: {family: mlp}}\n",
            r"search_space.width.when.family: a condition names a parameter listed before",
        ),
    ],
)
def test_bad_tables_name_the_key_and_the_rule(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, text)


def test_a_convnet_choice_is_checked_with_its_condition(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """search_space:
  family: {type: categorical, choices: [mlp, convnet]}
  neurons: {type: int, low: 32, high: 64, when: {family: convnet}}
""",
    )
    # neurons is valid because its condition puts it in a convnet.
    assert "neurons" in config.search_space


def test_enqueue_skips_rows_that_ran_and_requeues_rows_that_did_not() -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution

    study = optuna.create_study()
    lr = {"lr": CategoricalDistribution([0.1, 0.01, 0.001, 0.0001, 0.3, 0.03])}
    for value, state, attrs in (
        (0.1, optuna.trial.TrialState.COMPLETE, {}),
        (0.01, optuna.trial.TrialState.FAIL, {FAIL_REASON_ATTR: "loss is not finite"}),
        # interrupted, and already queued again
        (0.001, optuna.trial.TrialState.FAIL, {FAIL_REASON_ATTR: INTERRUPTED}),
        (0.0001, optuna.trial.TrialState.FAIL, {}),  # crashed, nothing queued
        (0.3, optuna.trial.TrialState.FAIL, {FAIL_REASON_ATTR: INTERRUPTED}),  # its retry lost
        (0.03, optuna.trial.TrialState.FAIL, {FAIL_REASON_ATTR: STALE}),  # retried too often
    ):
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": value},
                distributions=lr,
                value=0.5 if state == optuna.trial.TrialState.COMPLETE else None,
                state=state,
                user_attrs=attrs,
            )
        )
    study.enqueue_trial({"lr": 0.001})
    rows = [{"lr": value} for value in (0.1, 0.01, 0.001, 0.0001, 0.3, 0.03)]
    # A completed row and a recorded failure have run; the queued retry is not doubled;
    # the crashed row and the rows stopped before their end are queued again. Four trials wait.
    assert grid.enqueue_table(study, rows) == 4
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [
        {"lr": value} for value in (0.001, 0.0001, 0.3, 0.03)
    ]
    # Enqueueing again changes nothing.
    assert grid.enqueue_table(study, rows) == 4


def test_a_table_worker_stops_when_no_row_waits() -> None:
    import optuna

    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    ran = []

    def objective(trial: optuna.Trial) -> float:
        ran.append(trial.suggest_float("x", 0, 10))
        return 0.0

    # Asked for 5 trials, the worker runs the one queued row and stops rather than sampling.
    study.optimize(objective, n_trials=5, callbacks=[grid.stop_when_queue_empty])
    assert ran == [1.0]


def enqueue_at_once(url: str, commands: int = 4, rows: int = 30) -> int:
    """``commands`` threads, each with its own storage (its own connections, as separate
    processes have), enqueue the same table at the same instant; the trials waiting after."""
    import threading

    import optuna
    from optuna.trial import TrialState

    from hptune import storage

    optuna.create_study(study_name="race", storage=storage.open_storage(url))
    table = [{"x": float(k)} for k in range(rows)]
    ready = threading.Barrier(commands)
    failures: list[BaseException] = []

    def command() -> None:
        try:
            study = optuna.load_study(study_name="race", storage=storage.open_storage(url))
            ready.wait()
            with storage.enqueue_lock(url, "race"):
                grid.enqueue_table(study, table)
        except BaseException as error:  # reported by the test
            failures.append(error)

    threads = [threading.Thread(target=command) for _ in range(commands)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    study = optuna.load_study(study_name="race", storage=storage.open_storage(url))
    return len(study.get_trials(states=(TrialState.WAITING,)))


def test_commands_started_together_queue_each_row_once_on_sqlite(tmp_path: Path) -> None:
    # Four commands (a job array) enqueue one 30-row table at once: 30 rows wait, not 120.
    assert enqueue_at_once(f"sqlite:///{tmp_path / 'optuna.db'}") == 30
