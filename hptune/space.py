"""The search space: YAML entries mapped one-to-one onto Optuna's public ``trial.suggest_*``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from hptune.config import CategoricalParam, Choice, FloatParam, IntParam, Param, StudyConfig
from hptune.grid import full_space

if TYPE_CHECKING:
    import optuna


def suggest(trial: optuna.Trial, config: StudyConfig) -> dict[str, Choice | None]:
    """Ask the trial for every parameter, in file order, skipping those whose ``when`` fails.

    Listed configurations come first, as categoricals over their values; an enqueued trial
    (a grid point or a listed row) gets its fixed values back from these same calls.
    """
    params: dict[str, Choice | None] = {}
    for name, param in full_space(config).items():
        if not param.applies(params):
            continue
        if isinstance(param, CategoricalParam):
            params[name] = trial.suggest_categorical(name, param.choices)
        elif isinstance(param, IntParam):
            params[name] = trial.suggest_int(
                name, param.low, param.high, step=param.step, log=param.log
            )
        else:
            params[name] = trial.suggest_float(
                name, param.low, param.high, step=param.step, log=param.log
            )
    return params


def describe(param: Param) -> str:
    """One human line for a parameter: its kind and range or choices."""
    if isinstance(param, CategoricalParam):
        return f"categorical  {', '.join(map(str, param.choices))}"
    kind = "int" if isinstance(param, IntParam) else "float"
    text = f"{kind:<11}  [{param.low:g}, {param.high:g}]"
    if param.log:
        text += " log"
    if isinstance(param, IntParam) and param.step != 1:
        text += f" step {param.step}"
    if isinstance(param, FloatParam) and param.step is not None:
        text += f" step {param.step:g}"
    if param.when:
        text += "  when " + ", ".join(f"{k}={v}" for k, v in param.when.items())
    return text


def fingerprint(config: StudyConfig) -> str:
    """A stable text of what makes stored trials comparable: the space and the objective."""
    return json.dumps(
        {
            "search_space": {
                k: v.model_dump(exclude_none=True) for k, v in full_space(config).items()
            },
            "objective": config.objectives[0].metric,
            "direction": config.objectives[0].resolved_direction,
            # (Single-objective studies keep the fingerprint they were stored with.)
            **(
                {
                    "objectives": [o.metric for o in config.objectives],
                    "directions": [o.resolved_direction for o in config.objectives],
                }
                if len(config.objectives) > 1
                else {}
            ),
        },
        sort_keys=True,
    )
