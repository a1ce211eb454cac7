"""The study file's JSON Schema, for editors that check YAML while it is typed.

Generated from the pydantic models (``hptune.config.StudyConfig``): the types, bounds and
defaults come from them, registry names (activations, samplers, metrics, ...) become ``enum``
lists, and each field's description comes from ``DESCRIPTIONS`` here, keyed by its dotted
path, so the models stay free of prose. ``hptune schema`` prints it; the repository keeps it
as ``schema/study.schema.json``, which every study file names on its first line for the YAML
language server (VS Code's YAML extension and others).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from hptune import registry
from hptune.config import PARAMS, OneOf, StudyConfig

SCHEMA_FILE = "schema/study.schema.json"  # relative to the repository root
DIALECT = "https://json-schema.org/draft/2020-12/schema"

DESCRIPTIONS: dict[str, str] = {
    "name": "The study's identity: its Optuna study name and its MLflow parent run's name.",
    "description": "One line saying what the study compares (shown by `hptune validate`).",
    "objective": "What the study optimizes: one {metric, direction}, or a list of them.",
    "objective.metric": "A per-epoch metric (its last epoch's value), model/params or "
    "model/latency_ms.",
    "objective.direction": "maximize or minimize; default: minimize for losses, else maximize.",
    "select": "Several objectives: the rule choosing the one best model from the Pareto front.",
    "select.rule": "first: best on the first objective; knee: nearest the ideal; budget.",
    "select.metric": "budget: the objective to optimize within the limits (default: first).",
    "select.budget": "budget: objective -> limit (at most if minimized, at least if maximized).",
    "n_trials": "Trials per invocation (null: until the timeout); a table runs each row once.",
    "timeout": "Seconds after which no new trial starts (the running ones finish).",
    "batch_trials": "Trials asked at a time; those sharing an architecture train stacked.",
    "workers": "Worker processes training trials side by side (--workers).",
    "gpus": "GPU indices the workers are spread over, round-robin (null: all visible).",
    "storage": "Optuna storage URL; default: sqlite:///mlruns/optuna.db.",
    "sampler": "Optuna's sampler, by name, with its constructor's options.",
    "sampler.name": "The sampler; grid runs the search space's grid as a table.",
    "sampler.seed": "The sampler's seed (null: unseeded); resumed studies derive a new one.",
    "sampler.options": "Keyword arguments of the Optuna sampler's constructor.",
    "pruner": "Optuna's pruner, by name, with its constructor's options.",
    "pruner.name": "The pruner that stops unpromising trials early; none never prunes.",
    "pruner.options": "Keyword arguments of the Optuna pruner's constructor.",
    "data": "The data set, its validation split and subsets.",
    "data.dataset": "The image data set: fashion_mnist, mnist, or torchvision:NAME (any"
    " torchvision classification set, e.g. torchvision:CIFAR10).",
    "data.loader": 'Your own data: "module:callable" returning train/test (see'
    " docs/own-model-and-data.md).",
    "data.params": "Keyword arguments of the loader, or of the torchvision data set's class.",
    "data.verify": "false: the data is a modified copy on purpose (no checksum check; tagged).",
    "data.data_dir": "A folder looked at first for the data set's files.",
    "data.download": "Allow torchvision to download the data when no local copy exists.",
    "data.normalize": "Pixel scaling: minus_one_one ((x - 0.5) / 0.5) or zero_one.",
    "data.validation": "split: a seeded part of the training set; test: the test set.",
    "data.val_fraction": "The training set's fraction held out for validation (split).",
    "data.train_subset": "Keep the first N training images (null: all).",
    "data.test_subset": "Keep the first N test images (null: all).",
    "data.seed": "The validation split's seed.",
    "model": "The model, unless searched: family and that family's fields.",
    "model.family": "mlp, cnn (experiment A's CNN) or convnet (experiment D's blocks).",
    "model.factory": 'Your own model: "module:callable" returning an nn.Module (see'
    " docs/own-model-and-data.md).",
    "model.params": "Fixed keyword arguments of the factory.",
    "model.activation": "The hidden layers' activation.",
    "model.width": "mlp: units of each hidden layer.",
    "model.depth": "mlp: number of hidden layers.",
    "model.hidden_sizes": 'mlp: explicit hidden sizes, e.g. [256, 128] or "256-128".',
    "model.dropout": "mlp: dropout probability after each hidden layer.",
    "model.conv_blocks": "convnet: blocks of 3x3 conv + 2x2 max-pool (1-3).",
    "model.filters": "convnet: the first block's filters, doubling per block.",
    "model.dense_layers": "convnet: dense layers after the blocks.",
    "model.neurons": "convnet: units of each dense layer.",
    "train": "Training settings, unless searched.",
    "train.epochs": "Epochs per trial.",
    "train.batch_size": "Training batch size.",
    "train.optimizer": "The optimizer.",
    "train.lr": "Learning rate.",
    "train.weight_decay": "Weight decay (null: the optimizer's own default).",
    "train.scheduler": "Learning-rate schedule: step, cosine, exponential or none.",
    "train.device": "auto (CUDA when present), cpu or cuda.",
    "train.cuda_graphs": "On CUDA, replay each training step from a CUDA graph.",
    "train.precision": "auto: bf16 on CPUs with native bf16, else fp32; or fp32, bf16.",
    "train.fast_paths": "auto: hptune's fast paths (probed private torch calls); off: plain "
    "PyTorch (HPTUNE_FAST_PATHS=off wins).",
    "train.seed": "The study's training seed.",
    "train.seed_per_trial": "Derive each trial's seed from (seed, trial number).",
    "search_space": "Parameters Optuna searches, by name, each a distribution.",
    "search_space.*.when": "Suggest only when earlier parameters have these values.",
    "search_space.*.type": "The distribution: categorical, int or float.",
    "search_space.*.choices": "The values of a categorical parameter.",
    "search_space.*.low": "The range's lower bound (included).",
    "search_space.*.high": "The range's upper bound (included).",
    "search_space.*.step": "The grid step within the range (not with log).",
    "search_space.*.log": "Sample the range on a log scale.",
    "configurations": "Rows of an experiment table, parameter -> value, each run once.",
    "tracking": "Where the MLflow runs go.",
    "tracking.experiment": "The MLflow experiment (default: the study's name).",
    "tracking.uri": "Tracking URI, used when MLFLOW_TRACKING_URI is unset.",
    "tracking.registered_model": "Registered model name of the best model (default: the study's).",
}


class _NamesAsEnums(GenerateJsonSchema):
    """Pydantic's generator, with each registry-name check's valid names as an ``enum``."""

    def function_after_schema(
        self, schema: core_schema.AfterValidatorFunctionSchema
    ) -> JsonSchemaValue:
        generated = super().function_after_schema(schema)
        check = schema["function"].get("function")
        if isinstance(check, OneOf):
            generated = {**generated, "enum": list(check.valid)}
        return generated


def study_schema() -> dict[str, Any]:
    """The study file's JSON Schema, each property described from ``DESCRIPTIONS``."""
    schema = StudyConfig.model_json_schema(schema_generator=_NamesAsEnums)
    for path, node in properties(schema):
        if path in DESCRIPTIONS:
            node["description"] = DESCRIPTIONS[path]
    dataset = schema["$defs"]["DataConfig"]["properties"]["dataset"]
    dataset["anyOf"] = [{"enum": list(registry.DATASETS)}, {"pattern": "^torchvision:.+"}]
    # Editors complete the search space's keys from hptune's parameter names; with a model
    # factory, any name (the factory's own parameters) is allowed.
    names = {"properties": {"search_space": {"propertyNames": {"enum": list(PARAMS)}}}}
    factory = {"properties": {"model": {"required": ["factory"]}}, "required": ["model"]}
    schema["if"], schema["else"] = factory, names
    return {
        "$schema": DIALECT,
        **schema,
        "title": "hptune study file",
        "description": "A study hptune runs: its objective, search space, data, model, training.",
    }


def schema_text() -> str:
    """The schema as ``hptune schema`` prints it and the repository keeps it."""
    return json.dumps(study_schema(), indent=2) + "\n"


def properties(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property of the schema with its dotted path (``search_space.*.low`` for the
    parameters of any search-space entry), each definition followed from its first use."""
    defs = schema.get("$defs", {})
    seen: set[str] = set()

    def walk(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                yield from walk(defs[name], path)
        for name, child in node.get("properties", {}).items():
            child_path = f"{path}.{name}" if path else name
            yield child_path, child
            yield from walk(child, child_path)
        for key in ("anyOf", "oneOf", "allOf"):
            for option in node.get(key, []):
                yield from walk(option, path)
        yield from walk(node.get("items"), path)
        yield from walk(node.get("additionalProperties"), f"{path}.*")

    yield from walk(schema, "")
