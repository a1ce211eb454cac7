"""The study file's schema: typed, frozen sections with unknown keys forbidden.

``hptune.studyfile`` reads a file into a ``StudyConfig``; code past it never sees raw dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_serializer,
    field_validator,
    model_validator,
)

from hptune import registry
from hptune.imports import UserCallable, spec_text


@dataclass(frozen=True)
class OneOf:
    """A registry-name check; ``hptune.schema`` lists ``valid`` as the field's allowed names."""

    valid: Sequence[str]
    kind: str

    def __call__(self, name: str) -> str:
        if name not in self.valid:
            raise ValueError(registry.unknown_name_message(self.kind, name, self.valid))
        return name


def _one_of(valid: Sequence[str], kind: str) -> Callable[[str], str]:
    return OneOf(tuple(valid), kind)


Activation = Annotated[str, AfterValidator(_one_of(registry.ACTIVATIONS, "activation"))]
Optimizer = Annotated[str, AfterValidator(_one_of(registry.OPTIMIZERS, "optimizer"))]
Scheduler = Annotated[str, AfterValidator(_one_of(registry.SCHEDULERS, "scheduler"))]
ModelFamily = Annotated[str, AfterValidator(_one_of(registry.MODELS, "model family"))]
TORCHVISION_PREFIX = "torchvision:"


def _dataset_name(name: str) -> str:
    """A built-in name, or ``torchvision:NAME`` (any torchvision classification data set)."""
    if name in registry.DATASETS or (
        name.startswith(TORCHVISION_PREFIX) and name.removeprefix(TORCHVISION_PREFIX)
    ):
        return name
    valid = [*registry.DATASETS, f"{TORCHVISION_PREFIX}NAME"]
    raise ValueError(registry.unknown_name_message("dataset", name, valid))


Dataset = Annotated[str, AfterValidator(_dataset_name)]
SamplerName = Annotated[str, AfterValidator(_one_of(registry.SAMPLERS, "sampler"))]
PrunerName = Annotated[str, AfterValidator(_one_of(registry.PRUNERS, "pruner"))]
Metric = Annotated[
    str, AfterValidator(_one_of(registry.METRICS + registry.TRIAL_METRICS, "metric"))
]

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
        """The direction, defaulting to minimize for losses, size and latency (``model/``) and
        maximize for everything else."""
        if self.direction is not None:
            return self.direction
        lower_is_better = self.metric.endswith("loss") or self.metric in registry.TRIAL_METRICS
        return "minimize" if lower_is_better else "maximize"


class SelectConfig(_Section):
    """Which trial of a multi-objective study's Pareto front is its one "best" model
    (``hptune.pareto.select``): ``first``, the front's best on the first objective; ``knee``,
    the front's trial nearest the ideal point (objectives scaled to the front's range);
    ``budget``, the best on ``metric`` among trials within every ``budget`` limit (an upper
    limit for a minimized objective, a lower one for a maximized objective)."""

    rule: Literal["first", "knee", "budget"] = "first"
    metric: Metric | None = None
    budget: dict[Metric, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _budget_needs_limits(self) -> SelectConfig:
        if self.rule == "budget" and not self.budget:
            raise ValueError("rule 'budget' needs limits, e.g. budget: {model/params: 100000}")
        if self.rule != "budget" and (self.budget or self.metric):
            raise ValueError(f"metric and budget belong to rule 'budget', not {self.rule!r}")
        return self


class SamplerConfig(_Section):
    name: SamplerName = "tpe"
    seed: int | None = 0
    options: dict[str, Any] = Field(default_factory=dict)


class PrunerConfig(_Section):
    name: PrunerName = "median"
    options: dict[str, Any] = Field(default_factory=dict)


class DataConfig(_Section):
    dataset: Dataset = "fashion_mnist"
    # The user's own data: "module:callable" (or a callable, from Python) returning train/test
    # (``hptune.userdata``); ``params`` are its keyword arguments, or a torchvision set's.
    loader: UserCallable | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    data_dir: Path | None = None
    # Check the files against the known data set's published digests (hptune/datacache.py);
    # false: the study trains on a modified copy on purpose (its runs are tagged so).
    verify: bool = True
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
        if self.loader is not None and "dataset" in self.model_fields_set:
            raise ValueError("loader and dataset both name the data; set one")
        if self.params and self.loader is None and not self.is_torchvision:
            raise ValueError(f"params are for a loader or a torchvision set, not {self.dataset}")
        return self

    @field_serializer("loader", when_used="json")
    def _loader_text(self, loader: UserCallable | None) -> str | None:
        return None if loader is None else spec_text(loader)

    @property
    def is_torchvision(self) -> bool:
        return self.loader is None and self.dataset.startswith(TORCHVISION_PREFIX)

    @property
    def source_name(self) -> str:
        """What the data is, for params and reports: a dataset name or the loader's path."""
        return self.dataset if self.loader is None else spec_text(self.loader)

    @property
    def scales_floats(self) -> bool:
        """Whether float images are normalized too: only when the file sets ``normalize``."""
        return "normalize" in self.model_fields_set


# Which model fields each family reads; setting another one is an error, not a silent no-op.
FAMILY_FIELDS: dict[str, frozenset[str]] = {
    "mlp": frozenset({"family", "activation", "width", "depth", "hidden_sizes", "dropout"}),
    "cnn": frozenset({"family", "activation"}),
    "convnet": frozenset(
        {"family", "activation", "conv_blocks", "filters", "dense_layers", "neurons"}
    ),
}
# hptune's own model settings; a user's factory gets those the study sets where its signature
# names them (``hptune.models.factory_arguments``).
MODEL_SETTINGS = frozenset().union(*FAMILY_FIELDS.values()) - {"family"}


class ModelConfig(_Section):
    family: ModelFamily = "mlp"
    # The user's own model: "module:callable" (or a callable, from Python) returning an
    # nn.Module; ``params`` are fixed keyword arguments (searched ones are written here too).
    factory: UserCallable | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    activation: Activation = "relu"
    # mlp: ``depth`` layers of ``width``, or any list of sizes (also written "512-256-128").
    width: int = Field(128, ge=1)
    depth: int = Field(2, ge=1)
    hidden_sizes: list[Annotated[int, Field(ge=1)]] | None = Field(None, min_length=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # convnet (experiment D): blocks of 3x3 conv + 2x2 max-pool, filters doubling per block;
    # at most 3 blocks, since unpadded 28x28 images shrink to 1x1 after three.
    conv_blocks: int = Field(1, ge=1, le=3)
    filters: int = Field(32, ge=1)
    dense_layers: int = Field(1, ge=1)
    neurons: int = Field(100, ge=1)

    @field_validator(
        "hidden_sizes", mode="before", json_schema_input_type=list[int] | str | int | None
    )
    @classmethod
    def _sizes_from_text(cls, value: Any) -> Any:
        """``"512-256-128"`` or ``32`` -> a list, so a search-space choice can name a shape."""
        if isinstance(value, str):
            parts = value.split("-")
            if all(part.strip().isdigit() for part in parts):
                return [int(part) for part in parts]
            raise ValueError(f"hidden sizes are written like 512-256-128, but got {value!r}")
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        return value

    @field_serializer("factory", when_used="json")
    def _factory_text(self, factory: UserCallable | None) -> str | None:
        return None if factory is None else spec_text(factory)

    @model_validator(mode="after")
    def _fields_fit_family(self) -> ModelConfig:
        if self.factory is not None:  # the factory's signature is checked on loading
            if "family" in self.model_fields_set:
                raise ValueError("family and factory both name the model; set one")
            return self
        if self.params:
            raise ValueError(f"params are a factory's arguments; family {self.family!r} has none")
        unused = sorted(
            self.model_fields_set - FAMILY_FIELDS.get(self.family, frozenset()) - {"params"}
        )
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
    # On CUDA, capture each training step in a CUDA graph and replay it (hptune/cudagraph.py).
    cuda_graphs: bool = True
    # auto: hptune's fast CPU training paths; off: plain PyTorch (docs/fast-paths.md).
    fast_paths: Literal["auto", "off"] = "auto"
    # Training precision: auto = bf16 on CPUs that multiply bf16 in hardware (AVX512-BF16, AMX),
    # fp32 elsewhere (on CUDA the graphed fp32 step); bf16 on CUDA trains eagerly. bf16 means a
    # bf16 compute copy of the model with fp32 master weights and optimizer (hptune/flat.py;
    # autocast for models with buffers). Validation computes under autocast to the same dtype
    # (10,000 images through B's MLP: 32 -> 10 ms; 7 of the 10,000 predictions differ from fp32);
    # the best model's one test-set evaluation is fp32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 0
    seed_per_trial: bool = True


class _ParamBase(_Section):
    # Suggest this parameter only when earlier ones have these values, e.g. {family: mlp}.
    when: dict[str, Choice | list[Choice]] | None = None

    def applies(self, params: Mapping[str, Any]) -> bool:
        """Whether the ``when`` condition holds for the parameters chosen so far."""
        for name, wanted in (self.when or {}).items():
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if name not in params or params[name] not in allowed:
                return False
        return True


class CategoricalParam(_ParamBase):
    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> CategoricalParam:
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"choices must be unique, but got {self.choices}")
        return self


class IntParam(_ParamBase):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        _check_range(self.low, self.high, self.log, self.step != 1)
        return self

    @property
    def highest(self) -> int:
        """The highest value a trial can get: ``high`` lowered to the last step, as Optuna's
        ``IntDistribution`` lowers it when ``step`` does not divide the range."""
        return self.low + (self.high - self.low) // self.step * self.step


class FloatParam(_ParamBase):
    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(None, gt=0.0)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        _check_range(self.low, self.high, self.log, self.step is not None)
        return self

    @property
    def highest(self) -> float:
        """The highest value a trial can get: ``high`` lowered to the last step, computed in
        decimal as Optuna's ``FloatDistribution`` does when ``step`` does not divide the range."""
        if self.step is None:
            return self.high
        span = Decimal(str(self.high)) - Decimal(str(self.low))
        step = Decimal(str(self.step))
        if span % step == 0:
            return self.high
        return float(span // step * step + Decimal(str(self.low)))


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
    "hidden_sizes": ("model", "hidden_sizes"),
    "dropout": ("model", "dropout"),
    "conv_blocks": ("model", "conv_blocks"),
    "filters": ("model", "filters"),
    "dense_layers": ("model", "dense_layers"),
    "neurons": ("model", "neurons"),
    "optimizer": ("train", "optimizer"),
    "lr": ("train", "lr"),
    "weight_decay": ("train", "weight_decay"),
    "batch_size": ("train", "batch_size"),
    "scheduler": ("train", "scheduler"),
    "epochs": ("train", "epochs"),
}
INT_PARAMS = {
    "width",
    "depth",
    "batch_size",
    "epochs",
    "conv_blocks",
    "filters",
    "dense_layers",
    "neurons",
}
FLOAT_PARAMS = {"lr", "weight_decay", "dropout"}


class TrackingConfig(_Section):
    experiment: str | None = None
    uri: str | None = None
    registered_model: str | None = None


class StudyConfig(_Section):
    """A whole study file. ``source`` is the file it came from (None when built in code)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200)
    description: str = ""
    # One objective, or several (a list) for a Pareto front; ``objectives`` reads either.
    objective: ObjectiveConfig | Annotated[list[ObjectiveConfig], Field(min_length=1)] = (
        ObjectiveConfig()
    )
    select: SelectConfig | None = None
    n_trials: int | None = Field(20, ge=1)
    timeout: float | None = Field(None, gt=0)
    # Trials asked at a time; those sharing an architecture train as one stacked model.
    batch_trials: int = Field(1, ge=1)
    # Worker processes sharing the study (hptune/workers.py); CPU threads are split among them.
    workers: int = Field(1, ge=1)
    # GPUs the workers are spread over, round-robin (None: every visible one).
    gpus: list[Annotated[int, Field(ge=0)]] | None = Field(None, min_length=1)
    storage: str | None = None
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    search_space: dict[str, Param] = Field(default_factory=dict)
    # Named rows of an experiment table (each a mapping of parameter -> value), run once each,
    # crossed with the search space's grid when there is one.
    configurations: list[dict[str, Choice]] | None = Field(None, min_length=1)
    tracking: TrackingConfig = TrackingConfig()

    _source: Path | None = PrivateAttr(None)
    # The ``--set`` overrides (and CLI flags written as such) this config was read with.
    _overrides: tuple[str, ...] = PrivateAttr(())

    @property
    def objectives(self) -> list[ObjectiveConfig]:
        """The study's objectives, in order (one for a single-objective study)."""
        return self.objective if isinstance(self.objective, list) else [self.objective]

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def folder(self) -> Path | None:
        """Where the study file's ``module:callable`` paths are looked up first."""
        return self._source.parent if self._source is not None else None

    @property
    def overrides(self) -> tuple[str, ...]:
        return self._overrides

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    def with_params(self, params: Mapping[str, Choice | None]) -> StudyConfig:
        """This config with search-space values written into their sections, validated again;
        a name that is not hptune's own (``PARAMS``) goes to the model factory's ``params``."""
        raw = self.model_dump(exclude_unset=True)
        for name, value in params.items():
            if name not in PARAMS:
                raw.setdefault("model", {}).setdefault("params", {})[name] = value
                continue
            section, field = PARAMS[name]
            raw.setdefault(section, {})[field] = value
        resolved = StudyConfig.model_validate(raw)
        resolved._source, resolved._overrides = self._source, self._overrides
        return resolved
