"""Reading a study file: YAML, ``--set`` overrides, validation with one line per problem.

Every error names the file, the key path and the rule, one problem per line, and every problem
found is reported, not only the first. Beyond the schema (``hptune.config``), the search space
and the configuration list are checked value by value against the sections they write into.
The YAML itself is read within limits of size, nesting and aliases (``hptune.safeyaml``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hptune import registry, safeyaml, space
from hptune.config import (
    FLOAT_PARAMS,
    INT_PARAMS,
    PARAMS,
    CategoricalParam,
    Choice,
    FloatParam,
    IntParam,
    StudyConfig,
)
from hptune.errors import ConfigError
from hptune.imports import resolve
from hptune.pareto import objective_problems


def load_study_file(
    path: str | Path, overrides: Iterable[str] = (), study_name: str | None = None
) -> StudyConfig:
    """Read, override and validate a study file.

    Args:
        path: the YAML study file.
        overrides: ``"a.b=value"`` strings (the CLI's ``--set``); values are parsed as YAML.
        study_name: run the file under this name instead of its own (another study).

    Raises:
        ConfigError: one line per problem, each naming the file and the key path.
    """
    path = Path(path)
    raw = _read_yaml(path)
    overrides = list(overrides)
    raw, overridden = apply_overrides(raw, overrides, where=str(path))
    if study_name is not None:
        raw["name"] = study_name
        overridden["name"] = f"--study-name {study_name}"
    config = _validate(raw, where=str(path), overridden=overridden, folder=path.parent)
    config._source = path
    config._overrides = tuple(overridden.values())
    return config


def effective_text(config: StudyConfig) -> str:
    """The study file as it runs: every key with its value after ``--set`` overrides and
    defaults, as YAML (what the study's parent run logs beside the file itself)."""
    origin = str(config.source) if config.source else "a study built in code"
    header = f"# {origin} as run"
    if config.overrides:
        header += ", with " + ", ".join(
            o if o.startswith("--") else f"--set {o}" for o in config.overrides
        )
    return header + "\n" + yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _read_yaml(path: Path) -> dict[str, Any]:
    raw = safeyaml.read_file(path)
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else f"a {type(raw).__name__}"
        raise ConfigError(f"{path}: a study file is a mapping of keys, but this one is {kind}")
    return raw


def apply_overrides(
    raw: dict[str, Any], overrides: Sequence[str], where: str = "<study>"
) -> tuple[dict[str, Any], dict[str, str]]:
    """Write ``a.b=value`` overrides into a copy of ``raw``; return it and key -> original text."""
    raw = _deep_copy(raw)
    problems = []
    overridden: dict[str, str] = {}
    for text in overrides:
        key, sep, value_text = text.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
            problems.append(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. train.epochs=2")
            continue
        if key == "name":
            problems.append(
                f"--set {text}: a study's identity is its name; "
                "use --study-name to run another study"
            )
            continue
        node = raw
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                problems.append(f"--set {text}: {prefix} is a value, not a section")
                break
            node = child
        else:
            try:
                value = safeyaml.parse(value_text, f"--set {key}") if value_text.strip() else None
            except ConfigError:  # not YAML (or beyond its limits): the text as written
                value = value_text
            node[parts[-1]] = value
            overridden[key] = text
    if problems:
        raise ConfigError(f"{where}: {p}" for p in problems)
    return raw, overridden


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {k: _deep_copy(v) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(v) for v in raw]
    return raw


def validate_config(raw: dict[str, Any], where: str = "<study>") -> StudyConfig:
    """Validate an already-parsed study mapping (the Python API's way in)."""
    return _validate(raw, where=where, overridden={})


def range_warnings(config: StudyConfig) -> list[str]:
    """One line per searched range whose ``step`` does not divide it: its ``high`` never runs
    (Optuna lowers it to the last step), which the file should say rather than leave silent."""
    where = str(config.source) if config.source else "<study>"
    lines = []
    for name, param in config.search_space.items():
        if isinstance(param, IntParam | FloatParam) and param.highest != param.high:
            lines.append(
                f"{where}: search_space.{name}: step {param.step:g} does not divide "
                f"[{param.low:g}, {param.high:g}], so {param.high:g} never runs: the highest "
                f"value is {param.highest:g} (write high: {param.highest:g} to say so)"
            )
    return lines


def _validate(
    raw: dict[str, Any], where: str, overridden: dict[str, str], folder: Path | None = None
) -> StudyConfig:
    try:
        config = StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_pydantic_problems(exc, where, overridden)) from None
    problems = [f"{where}: {p}" for p in _search_space_problems(config, overridden)]
    problems += [f"{where}: {p}" for p in _user_code_problems(config, folder)]
    problems += [f"{where}: {p}" for p in objective_problems(config)]
    if problems:
        raise ConfigError(problems)
    return config


def _pydantic_problems(exc: ValidationError, where: str, overridden: dict[str, str]) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = _key_path(error["loc"])
        if error["type"] == "extra_forbidden":
            rule = "unknown key"
        elif error["type"] == "missing":
            rule = "required key is missing"
        else:
            rule = error["msg"].removeprefix("Value error, ")
            if not isinstance(error.get("input"), dict | list):
                rule += f" (got {error['input']!r})"
        origin = next(
            (f" [from --set {t}]" for k, t in overridden.items() if loc.startswith(k)), ""
        )
        problems.append(f"{where}: {loc or '<top>'}: {rule}{origin}")
    return problems


def _key_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("categorical", "int", "float"):
            continue  # pydantic's discriminator tag, not a key the user wrote
        else:
            path += f".{part}" if path else str(part)
    return path


def _user_code_problems(config: StudyConfig, folder: Path | None) -> list[str]:
    """The model factory's and the data loader's import paths resolve, and the factory takes
    every name routed to it (``hptune.space``)."""
    problems = space.factory_problems(config, folder)
    if config.data.loader is not None:
        try:
            resolve(config.data.loader, folder, "data.loader")
        except ConfigError as error:
            problems += error.problems
    return problems


def _search_space_problems(config: StudyConfig, overridden: dict[str, str]) -> list[str]:
    problems = []
    earlier = list(config.configurations[0]) if config.configurations else []
    for name, param in config.search_space.items():
        where = f"search_space.{name}"
        if name not in PARAMS:
            if config.model.factory is None:  # (with one, space.factory_problems checks it)
                message = registry.unknown_name_message("parameter", name, PARAMS)
                problems.append(f"{where}: {message}")
            earlier.append(name)
            continue
        problems += _fixed_twice(config, name, where, overridden)
        if isinstance(param, FloatParam) and name in INT_PARAMS:
            problems.append(f"{where}: {name} takes whole numbers; use type: int")
        if isinstance(param, IntParam) and name in FLOAT_PARAMS:
            problems.append(f"{where}: {name} is a real number; use type: float")
        for key in param.when or {}:
            if key not in earlier:
                problems.append(
                    f"{where}.when.{key}: a condition names a parameter listed before this one "
                    f"(earlier: {', '.join(earlier) or 'none'})"
                )
        earlier.append(name)
        candidates = (
            param.choices if isinstance(param, CategoricalParam) else [param.low, param.high]
        )
        keys = "choices" if isinstance(param, CategoricalParam) else None
        for index, value in enumerate(candidates):
            label = f"{where}.{keys}[{index}]" if keys else f"{where}.{('low', 'high')[index]}"
            context = {k: v for k, v in (param.when or {}).items() if not isinstance(v, list)}
            problems.extend(f"{label}: {p}" for p in _value_problems(config, name, value, context))
    return problems + _configuration_problems(config, overridden)


def _fixed_twice(
    config: StudyConfig, name: str, where: str, overridden: dict[str, str]
) -> list[str]:
    """A parameter that is searched (or listed) must not also be fixed in its section."""
    section, field = PARAMS[name]
    fixed = f"{section}.{field}"
    if field not in getattr(config, section).model_fields_set:
        return []
    if fixed in overridden:
        return [
            f"{fixed}: is searched by {where}, so --set {overridden[fixed]} conflicts "
            "with the search space; remove the override or the search-space entry"
        ]
    return [f"{fixed}: is fixed here and also searched by {where}; keep one"]


def _configuration_problems(config: StudyConfig, overridden: dict[str, str]) -> list[str]:
    """Every listed configuration sets the same known parameters to values its section takes."""
    if not config.configurations:
        return []
    problems = []
    first = list(config.configurations[0])
    for index, row in enumerate(config.configurations):
        where = f"configurations[{index}]"
        unknown = [name for name in row if name not in PARAMS and config.model.factory is None]
        for name in unknown:
            problems.append(f"{where}: {registry.unknown_name_message('parameter', name, PARAMS)}")
        if unknown:
            continue
        if index == 0:
            for name in row:
                if name in config.search_space:
                    problems.append(f"{where}.{name}: is also in search_space; keep one")
                if name in PARAMS:
                    problems += _fixed_twice(config, name, where, overridden)
        elif set(row) != set(first):
            problems.append(
                f"{where}: sets {', '.join(row) or 'nothing'}, but every configuration must set "
                f"the same parameters as the first ({', '.join(first)})"
            )
            continue
        for name, value in row.items():
            if name not in PARAMS:
                continue  # the factory's: any value it takes
            context = {k: v for k, v in row.items() if k != name}
            problems.extend(
                f"{where}.{name}: {p}" for p in _value_problems(config, name, value, context)
            )
    return problems


def _value_problems(
    config: StudyConfig, name: str, value: Choice, context: Mapping[str, Any]
) -> list[str]:
    """Check one candidate value as if it were written into its section, beside ``context``
    (the values of other parameters it comes with, e.g. the family a convnet width needs)."""
    section, field = PARAMS[name]
    section_model = type(getattr(config, section))
    raw = getattr(config, section).model_dump(exclude_unset=True)
    for other, other_value in context.items():
        if other in PARAMS and PARAMS[other][0] == section:
            raw[PARAMS[other][1]] = other_value
    raw[field] = value
    try:
        section_model.model_validate(raw)
    except ValidationError as exc:
        return list(
            dict.fromkeys(
                error["msg"].removeprefix("Value error, ") + f" (got {value!r})"
                for error in exc.errors()
            )
        )
    return []
