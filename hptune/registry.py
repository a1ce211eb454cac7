"""Names a study file may use, kept free of torch and optuna so validation answers instantly.

The registries that build things (``models.ACTIVATIONS``, ``training.OPTIMIZERS``,
``study.SAMPLERS``, ...) are plain dicts keyed by exactly these names; a test checks they agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from hptune.errors import HptuneError

ACTIVATIONS = (
    "relu",
    "leaky_relu",
    "elu",
    "gelu",
    "tanh",
    "sigmoid",
    "softplus",
    "softsign",
    "hard_sigmoid",
    "linear",
    "exponential",
    "softmax",
)
OPTIMIZERS = ("sgd", "sgd_momentum", "adam", "adamw", "nadam", "rmsprop", "adagrad", "adadelta")
SCHEDULERS = ("none", "step", "cosine", "exponential")
MODELS = ("mlp", "cnn", "convnet")
DATASETS = ("fashion_mnist", "mnist")
SAMPLERS = ("tpe", "random", "cmaes", "qmc", "gp", "grid", "nsga2", "nsga3")
# Samplers that cannot optimize several objectives at once (Optuna raises for them).
SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "threshold", "none")
# Per-epoch metric keys; stable, documented in the README, because users chart them.
METRICS = (
    "train/loss",
    "train/accuracy",
    "val/loss",
    "val/accuracy",
    "val/f1_macro",
    "val/precision_macro",
    "val/recall_macro",
)
# Per-trial metrics, measured once after training: usable as objectives, not for pruning.
TRIAL_METRICS = ("model/params", "model/latency_ms")

V = TypeVar("V")


def unknown_name_message(kind: str, name: object, valid: Iterable[str]) -> str:
    """The one wording for an unknown registry name: the value and every valid name."""
    return f"unknown {kind} {name!r}; valid names: {', '.join(valid)}"


def lookup(registry: Mapping[str, V], name: str, kind: str) -> V:
    """Return ``registry[name]`` or raise an error that lists the valid names."""
    try:
        return registry[name]
    except KeyError:
        raise HptuneError(unknown_name_message(kind, name, registry)) from None
