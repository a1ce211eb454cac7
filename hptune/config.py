"""The study file: parsed once, at the boundary, into typed, frozen objects.

Every error names the file, the key path and the rule, one problem per line, and every problem
found is reported, not only the first. Code past ``load_study_file`` never sees raw dicts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from hptune import registry
from hptune.errors import ConfigError


def _one_of(valid: Sequence[str], kind: str) -> Callable[[str], str]:
    def check(name: str) -> str:
        if name not in valid:
            raise ValueError(registry.unknown_name_message(kind, name, valid))
        return name

    return check


Activation = Annotated[str, AfterValidator(_one_of(registry.ACTIVATIONS, "activation"))]
Optimizer = Annotated[str, AfterValidator(_one_of(registry.OPTIMIZERS, "optimizer"))]
Scheduler = Annotated[str, AfterValidator(_one_of(registry.SCHEDULERS, "scheduler"))]
ModelFamily = Annotated[str, AfterValidator(_one_of(registry.MODELS, "model family"))]
Dataset = Annotated[str, AfterValidator(_one_of(registry.DATASETS, "dataset"))]
SamplerName = Annotated[str, AfterValidator(_one_of(registry.SAMPLERS, "sampler"))]
PrunerName = Annotated[str, AfterValidator(_one_of(registry.PRUNERS, "pruner"))]
Metric = Annotated[str, AfterValidator(_one_of(registry.METRICS, "metric"))]

# A search-space choice is what Optuna can store: a categorical of scalars.
Choice = bool | int | float | str


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ObjectiveConfig(_Section):
    """What the study optimizes: a metric logged every epoch, read at the last epoch."""

    metric: Metric = "val/accuracy"
    direction: Literal["maximize", "minimize"] | None = None

    @property
    def resolved_direction(self) -> str:
        """The direction, defaulting to minimize for losses and maximize for everything else."""
        if self.direction is not None:
            return self.direction
        return "minimize" if self.metric.endswith("loss") else "maximize"


class SamplerConfig(_Section):
    name: SamplerName = "tpe"
    seed: int | None = 0
    options: dict[str, Any] = Field(default_factory=dict)


class PrunerConfig(_Section):
    name: PrunerName = "median"
    options: dict[str, Any] = Field(default_factory=dict)


class DataConfig(_Section):
    dataset: Dataset = "fashion_mnist"
    data_dir: Path | None = None
    download: bool = False
    normalize: Literal["minus_one_one", "zero_one"] = "minus_one_one"
    validation: Literal["split", "test"] = "split"
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    train_subset: int | None = Field(None, ge=1)
    test_subset: int | None = Field(None, ge=1)
    seed: int = 42

    @model_validator(mode="after")
    def _split_needs_a_fraction(self) -> DataConfig:
        if self.validation == "split" and self.val_fraction == 0:
            raise ValueError(
                "validation='split' needs val_fraction > 0 (or validation: test), "
                f"but got val_fraction={self.val_fraction}"
            )
        return self


# Which model fields each family reads; setting another one is an error, not a silent no-op.
FAMILY_FIELDS: dict[str, frozenset[str]] = {
    "mlp": frozenset({"family", "activation", "width", "depth", "hidden_sizes", "dropout"}),
    "cnn": frozenset({"family", "activation"}),
}


class ModelConfig(_Section):
    family: ModelFamily = "mlp"
    activation: Activation = "relu"
    width: int = Field(128, ge=1)
    depth: int = Field(2, ge=1)
    hidden_sizes: list[Annotated[int, Field(ge=1)]] | None = Field(None, min_length=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _fields_fit_family(self) -> ModelConfig:
        unused = sorted(self.model_fields_set - FAMILY_FIELDS.get(self.family, frozenset()))
        if unused:
            raise ValueError(f"{', '.join(unused)} not used by model family {self.family!r}")
        if self.hidden_sizes is not None and {"width", "depth"} & self.model_fields_set:
            raise ValueError("hidden_sizes replaces width and depth; set one or the other")
        return self

    @property
    def layer_sizes(self) -> list[int]:
        """Hidden layer sizes of an MLP: ``hidden_sizes`` or ``depth`` layers of ``width``."""
        return list(self.hidden_sizes) if self.hidden_sizes else [self.width] * self.depth


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Optimizer = "adam"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float | None = Field(None, ge=0.0)  # None: the optimizer's own default
    scheduler: Scheduler = "none"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    seed_per_trial: bool = True


class CategoricalParam(_Section):
    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> CategoricalParam:
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"choices must be unique, but got {self.choices}")
        return self


class IntParam(_Section):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        _check_range(self.low, self.high, self.log, self.step != 1)
        return self


class FloatParam(_Section):
    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(None, gt=0.0)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        _check_range(self.low, self.high, self.log, self.step is not None)
        return self


def _check_range(low: float, high: float, log: bool, stepped: bool) -> None:
    if low > high:
        raise ValueError(f"low must not exceed high, but got low={low}, high={high}")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0, but got low={low}")
    if log and stepped:
        raise ValueError("step and log cannot be used together")


Param = Annotated[CategoricalParam | IntParam | FloatParam, Field(discriminator="type")]

# Search-space parameter name -> (section, field). Names are stable: users chart them in MLflow.
PARAMS: dict[str, tuple[str, str]] = {
    "family": ("model", "family"),
    "activation": ("model", "activation"),
    "width": ("model", "width"),
    "depth": ("model", "depth"),
    "dropout": ("model", "dropout"),
    "optimizer": ("train", "optimizer"),
    "lr": ("train", "lr"),
    "weight_decay": ("train", "weight_decay"),
    "batch_size": ("train", "batch_size"),
    "scheduler": ("train", "scheduler"),
    "epochs": ("train", "epochs"),
}
_INT_PARAMS = {"width", "depth", "batch_size", "epochs"}
_FLOAT_PARAMS = {"lr", "weight_decay", "dropout"}


class TrackingConfig(_Section):
    experiment: str | None = None
    uri: str | None = None
    registered_model: str | None = None


class StudyConfig(_Section):
    """A whole study file. ``source`` is the file it came from (None when built in code)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200)
    description: str = ""
    objective: ObjectiveConfig = ObjectiveConfig()
    n_trials: int | None = Field(20, ge=1)
    timeout: float | None = Field(None, gt=0)
    storage: str | None = None
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    search_space: dict[str, Param] = Field(default_factory=dict)
    tracking: TrackingConfig = TrackingConfig()

    _source: Path | None = PrivateAttr(None)

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    def with_params(self, params: Mapping[str, Choice | None]) -> StudyConfig:
        """This config with search-space values written into their sections, validated again."""
        raw = self.model_dump(exclude_unset=True)
        for name, value in params.items():
            section, field = PARAMS[name]
            raw.setdefault(section, {})[field] = value
        resolved = StudyConfig.model_validate(raw)
        resolved._source = self._source
        return resolved


# --------------------------------------------------------------------------- loading


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
    config = _validate(raw, where=str(path), overridden=overridden)
    config._source = path
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such study file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the study file ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
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
                node[parts[-1]] = yaml.safe_load(value_text) if value_text.strip() else None
            except yaml.YAMLError:
                node[parts[-1]] = value_text
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


def _validate(raw: dict[str, Any], where: str, overridden: dict[str, str]) -> StudyConfig:
    try:
        config = StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_pydantic_problems(exc, where, overridden)) from None
    problems = [f"{where}: {p}" for p in _search_space_problems(config, overridden)]
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


def _search_space_problems(config: StudyConfig, overridden: dict[str, str]) -> list[str]:
    problems = []
    for name, param in config.search_space.items():
        where = f"search_space.{name}"
        if name not in PARAMS:
            problems.append(f"{where}: {registry.unknown_name_message('parameter', name, PARAMS)}")
            continue
        section, field = PARAMS[name]
        fixed = f"{section}.{field}"
        if field in getattr(config, section).model_fields_set:
            if fixed in overridden:
                problems.append(
                    f"{fixed}: is searched by {where}, so --set {overridden[fixed]} conflicts "
                    "with the search space; remove the override or the search-space entry"
                )
            else:
                problems.append(f"{fixed}: is fixed here and also searched by {where}; keep one")
        if isinstance(param, FloatParam) and name in _INT_PARAMS:
            problems.append(f"{where}: {name} takes whole numbers; use type: int")
        if isinstance(param, IntParam) and name in _FLOAT_PARAMS:
            problems.append(f"{where}: {name} is a real number; use type: float")
        candidates = (
            param.choices if isinstance(param, CategoricalParam) else [param.low, param.high]
        )
        keys = "choices" if isinstance(param, CategoricalParam) else None
        for index, value in enumerate(candidates):
            label = f"{where}.{keys}[{index}]" if keys else f"{where}.{('low', 'high')[index]}"
            problems.extend(f"{label}: {p}" for p in _value_problems(config, section, field, value))
    return problems


def _value_problems(config: StudyConfig, section: str, field: str, value: Choice) -> list[str]:
    """Check one candidate value as if it were written into its section."""
    section_model = type(getattr(config, section))
    raw = getattr(config, section).model_dump(exclude_unset=True)
    raw[field] = value
    try:
        section_model.model_validate(raw)
    except ValidationError as exc:
        return [
            error["msg"].removeprefix("Value error, ") + f" (got {value!r})"
            for error in exc.errors()
        ]
    return []
