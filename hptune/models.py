"""Model families, hidden activations, and the user's own model factory. Plain torch: no
Optuna, no MLflow here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hptune.config import MODEL_SETTINGS, ModelConfig
from hptune.errors import ConfigError
from hptune.imports import accepted_names, resolve, spec_text
from hptune.registry import lookup


class Exponential(nn.Module):
    """exp(x), Keras' "exponential" activation; expected to overflow in deep nets, as it did."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)


# Hidden-layer activations. leaky_relu uses slope 0.1 as the seed experiments did; hard_sigmoid
# is relu6(x + 3) / 6 (Keras 3 and torch agree); softmax normalizes over features / channels.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "softsign": nn.Softsign,
    "hard_sigmoid": nn.Hardsigmoid,
    "linear": nn.Identity,
    "exponential": Exponential,
    "softmax": lambda: nn.Softmax(dim=1),
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by registry name."""
    return lookup(ACTIVATIONS, name, "activation")()


def build_mlp(config: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Flatten, then ``Linear -> activation [-> Dropout]`` per hidden size, then a linear head."""
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = int(torch.Size(input_shape).numel())
    for width in config.layer_sizes:
        layers += [nn.Linear(width_in, width), make_activation(config.activation)]
        if config.dropout:
            layers.append(nn.Dropout(config.dropout))
        width_in = width
    layers.append(nn.Linear(width_in, n_classes))
    return nn.Sequential(*layers)


def build_cnn(config: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Experiment A's "FlexibleCNN": two 3x3 convs (32, 64), max-pool, dropouts 0.25 / 0.5;
    ``C`` input channels, any H x W of at least 6 x 6."""
    channels, height, width = _image_shape(input_shape, "cnn")
    if min(height, width) < 6:
        raise ConfigError(
            f"model.family: cnn needs images of at least 6x6 (two 3x3 convolutions and a 2x2 "
            f"pool), but the data's are {height}x{width}; use family mlp, convnet or a factory"
        )
    flat = 64 * ((height - 4) // 2) * ((width - 4) // 2)  # 9216 for 28x28
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3),
        make_activation(config.activation),
        nn.Conv2d(32, 64, 3),
        make_activation(config.activation),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(flat, 128),
        make_activation(config.activation),
        nn.Dropout(0.5),
        nn.Linear(128, n_classes),
    )


def build_convnet(config: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Experiment D's Keras CNN: ``conv_blocks`` x (3x3 conv, activation, 2x2 max-pool), filters
    doubling per block from ``filters``; then ``dense_layers`` x (``neurons``, activation).

    Convolutions are unpadded, as Keras' default: 28 -> 13 -> 5 -> 1 pixels after 1, 2, 3 blocks.
    With one block, 32 filters and one dense layer of 100 this is D's baseline.
    """
    channels, height, width = _image_shape(input_shape, "convnet")
    smallest = 3 * 2**config.conv_blocks - 2  # 4, 10, 22: 1x1 pixels after the last block
    if min(height, width) < smallest:
        raise ConfigError(
            f"model.conv_blocks: {config.conv_blocks} convnet blocks need images of at least "
            f"{smallest}x{smallest}, but the data's are {height}x{width}"
        )
    layers: list[nn.Module] = []
    for block in range(config.conv_blocks):
        filters = config.filters * 2**block
        layers += [
            nn.Conv2d(channels, filters, 3),
            make_activation(config.activation),
            nn.MaxPool2d(2),
        ]
        channels, height, width = filters, (height - 2) // 2, (width - 2) // 2
    layers.append(nn.Flatten())
    width_in = channels * height * width
    for _ in range(config.dense_layers):
        layers += [nn.Linear(width_in, config.neurons), make_activation(config.activation)]
        width_in = config.neurons
    layers.append(nn.Linear(width_in, n_classes))
    return nn.Sequential(*layers)


def _image_shape(input_shape: tuple[int, ...], family: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(
            f"model.family: {family} takes images (C, H, W), but the data's samples are "
            f"{tuple(input_shape)}; use family mlp or a factory"
        )
    channels, height, width = input_shape
    return channels, height, width


# The head emits logits; training applies cross-entropy: log-softmax + NLL as experiment A wrote
# it, and Keras' softmax output + categorical cross-entropy (C, D) up to Keras' clipping of
# probabilities. A hidden softmax or exponential activation therefore trains or diverges as in
# the reports; a non-finite loss ends the trial as a recorded failure (training.Diverged).
MODELS: dict[str, Callable[[ModelConfig, tuple[int, ...], int], nn.Module]] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "convnet": build_convnet,
}


class ModelRejected(Exception):
    """A trial's parameters give a model that cannot be built or does not fit the data (a
    factory rejecting a searched value, a ConvNet too deep for the images): a failed trial, not
    a crash. The study's start checks its first point the same way, as an error."""


def build_model(
    config: ModelConfig, input_shape: tuple[int, ...], n_classes: int, folder: Path | None = None
) -> nn.Module:
    """Build the configured family, or call the user's factory (looked up first in ``folder``),
    for inputs of ``input_shape`` (C, H, W) and ``n_classes`` logits.

    Raises:
        ConfigError: the factory cannot be found, raises, or returns no ``nn.Module``.
    """
    if config.factory is None:
        return lookup(MODELS, config.family, "model family")(config, input_shape, n_classes)
    factory = resolve(config.factory, folder, "model.factory")
    arguments = factory_arguments(config, factory, input_shape, n_classes)
    where = f"model.factory: {spec_text(config.factory)}({_call_text(arguments)})"
    try:
        model = factory(**arguments)
    except Exception as error:  # the user's code: any error is theirs to fix
        raise ConfigError(f"{where} raised {type(error).__name__}: {error}") from error
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"{where} returned {type(model).__name__} {model!r:.60}, not a torch.nn.Module"
        )
    return model


def factory_arguments(
    config: ModelConfig,
    factory: Callable[..., Any],
    input_shape: tuple[int, ...],
    n_classes: int,
) -> dict[str, Any]:
    """The factory's keyword arguments: ``model.params`` (fixed and searched), hptune's model
    settings the study sets where the signature names them, and ``input_shape`` and
    ``num_classes`` where it names them (``**kwargs`` takes everything)."""
    names, takes_any = accepted_names(factory)
    arguments = dict(config.params)
    for name in sorted(MODEL_SETTINGS & config.model_fields_set):
        if takes_any or name in names:
            value = getattr(config, name)
            arguments[name] = list(value) if isinstance(value, list) else value
    for name, value in (("input_shape", tuple(input_shape)), ("num_classes", n_classes)):
        if takes_any or name in names:
            arguments.setdefault(name, value)
    return arguments


@torch.no_grad()
def dry_run(
    config: ModelConfig, sample: torch.Tensor, n_classes: int, folder: Path | None, where: str
) -> None:
    """Build the model and pass ``sample`` (two images) through it, as a check before a study
    writes anything: the model must map (N, C, H, W) to (N, n_classes) logits.

    Raises:
        ConfigError: naming ``where`` (the study file) and the model's key.
    """
    try:
        model = build_model(config, tuple(sample.shape[1:]), n_classes, folder).to(sample.device)
        check_output(model, sample, n_classes, config)
    except ConfigError as error:
        raise ConfigError(f"{where}: {problem}" for problem in error.problems) from None


def check_output(
    model: nn.Module, sample: torch.Tensor, n_classes: int, config: ModelConfig
) -> None:
    """Pass ``sample`` through ``model`` in eval mode without gradients (its mode is put back):
    it must give (N, n_classes) logits.

    Raises:
        ConfigError: naming the model's key, the input and what came out (or was raised).
    """
    key = "model.factory" if config.factory is not None else "model.family"
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            output = model(sample)
    except Exception as error:  # the user's forward pass: any error is theirs to fix
        raise ConfigError(
            f"{key}: the model's forward pass on input {tuple(sample.shape)} raised "
            f"{type(error).__name__}: {error}"
        ) from error
    finally:
        model.train(training)
    expected = (len(sample), n_classes)
    found = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    if found != expected:
        raise ConfigError(
            f"{key}: the model maps input {tuple(sample.shape)} to {found}, but "
            f"hptune needs {expected} logits ({n_classes} classes)"
        )


def _call_text(arguments: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in arguments.items())


def swap_layers(model: nn.Module, replace: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """``model`` with ``replace(layer)`` for each layer: for an ``nn.Sequential``, a new one
    sharing every layer that ``replace`` returns as it is (so training it trains ``model``, and
    ``model`` itself is unchanged), or ``model`` when nothing changes; any other model as it is.
    The eager training steps use it to put faster stand-ins for some layers."""
    if type(model) is not nn.Sequential:
        return model
    layers = list(model)
    swapped = [replace(layer) for layer in layers]
    if all(a is b for a, b in zip(layers, swapped, strict=True)):
        return model
    return nn.Sequential(*swapped)
