"""Model families and hidden activations. Plain torch: no Optuna, no MLflow here."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hptune.config import ModelConfig
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
    """Experiment A's "FlexibleCNN": two 3x3 convs (32, 64), max-pool, dropouts 0.25 / 0.5."""
    channels, height, width = input_shape
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
    channels, height, width = input_shape
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


# The head emits logits; training applies cross-entropy: log-softmax + NLL as experiment A wrote
# it, and Keras' softmax output + categorical cross-entropy (C, D) up to Keras' clipping of
# probabilities. A hidden softmax or exponential activation therefore trains or diverges as in
# the reports; a non-finite loss ends the trial as a recorded failure (training.Diverged).
MODELS: dict[str, Callable[[ModelConfig, tuple[int, ...], int], nn.Module]] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "convnet": build_convnet,
}


def build_model(config: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """Build the configured family for inputs of ``input_shape`` (C, H, W)."""
    return lookup(MODELS, config.family, "model family")(config, input_shape, n_classes)


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
