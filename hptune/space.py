"""The search space: YAML entries mapped one-to-one onto Optuna's public ``trial.suggest_*``,
and where each name goes: hptune's own names (``config.PARAMS``) to their sections, any other
name to the user's model factory (``model.factory``), whose signature must take it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from hptune.config import (
    MODEL_SETTINGS,
    PARAMS,
    CategoricalParam,
    Choice,
    FloatParam,
    IntParam,
    Param,
    StudyConfig,
)
from hptune.errors import ConfigError
from hptune.grid import full_space
from hptune.imports import accepted_names, resolve, signature_text, spec_text

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


def first_point(config: StudyConfig) -> dict[str, Choice | None]:
    """One point of the space (first choices, low ends): the model a study's start-up check
    builds (``hptune.models.dry_run``)."""
    params: dict[str, Choice | None] = {}
    for name, param in full_space(config).items():
        if param.applies(params):
            params[name] = param.choices[0] if isinstance(param, CategoricalParam) else param.low
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


def user_names(config: StudyConfig) -> list[str]:
    """Searched or listed parameter names that are not hptune's own: the factory's."""
    listed = [name for row in config.configurations or [] for name in row]
    return list(dict.fromkeys(n for n in [*config.search_space, *listed] if n not in PARAMS))


def factory_problems(config: StudyConfig, folder: Path | None) -> list[str]:
    """What a user's model factory cannot take, as ``key: problem`` lines (none without one):
    an import path that does not resolve, a name neither hptune nor its signature knows, an
    hptune model setting it does not name, a parameter both fixed and searched."""
    model = config.model
    if model.factory is None:
        return []
    try:
        factory = resolve(model.factory, folder, "model.factory")
    except ConfigError as error:
        return error.problems
    names, takes_any = accepted_names(factory)
    described = f"the factory {spec_text(model.factory)} is {signature_text(factory)}"
    problems = []
    for name in user_names(config):
        if name in model.params:
            problems.append(f"model.params.{name}: is fixed here and also searched; keep one")
        elif not takes_any and name not in names:
            problems.append(
                f"search_space.{name}: neither an hptune parameter ({', '.join(PARAMS)}) nor a "
                f"parameter of the factory: {described}"
            )
    for name in model.params:
        if not takes_any and name not in names:
            problems.append(f"model.params.{name}: not a parameter of the factory: {described}")
    searched = set(full_space(config))
    for name in sorted(MODEL_SETTINGS & (model.model_fields_set | searched)):
        if not takes_any and name not in names:
            key = f"search_space.{name}" if name in searched else f"model.{name}"
            problems.append(f"{key}: hptune passes {name} to the factory, but {described}")
    return problems
