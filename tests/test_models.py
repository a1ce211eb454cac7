"""Model families build for every registered activation and emit one logit per class."""

from __future__ import annotations

import pytest
import torch

from hptune import registry
from hptune.config import ModelConfig
from hptune.models import ACTIVATIONS, MODELS, build_model
from hptune.samplers import PRUNERS, SAMPLERS
from hptune.training import OPTIMIZERS, SCHEDULERS


@pytest.mark.parametrize(
    ("names", "built"),
    [
        (registry.ACTIVATIONS, ACTIVATIONS),
        (registry.MODELS, MODELS),
        (registry.OPTIMIZERS, OPTIMIZERS),
        (registry.SCHEDULERS, SCHEDULERS),
        (registry.SAMPLERS, SAMPLERS),
        (registry.PRUNERS, PRUNERS),
    ],
)
def test_validation_names_match_the_registries(names: tuple[str, ...], built: dict) -> None:
    # A name the study file accepts is a name something can be built from, and vice versa.
    assert tuple(built) == names


@pytest.mark.parametrize("family", registry.MODELS)
@pytest.mark.parametrize("activation", registry.ACTIVATIONS)
def test_every_family_and_activation_gives_class_logits(family: str, activation: str) -> None:
    model = build_model(ModelConfig(family=family, activation=activation), (1, 28, 28), 10)
    out = model(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10)


def test_seed_b_mlp_has_the_reported_parameter_count() -> None:
    model = build_model(ModelConfig(hidden_sizes=[256, 128]), (1, 28, 28), 10)
    # Experiment B's 784-256-128-10 MLP has 235,146 parameters.
    assert sum(p.numel() for p in model.parameters()) == 235_146


def test_seed_a_cnn_flattens_to_9216() -> None:
    model = build_model(ModelConfig(family="cnn"), (1, 28, 28), 10)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    # FlexibleCNN: 9216 -> 128 -> 10.
    assert [(m.in_features, m.out_features) for m in linears] == [(9216, 128), (128, 10)]


def test_leaky_relu_uses_slope_0_1() -> None:
    # The seed experiments used LeakyReLU(0.1), not torch's default 0.01.
    assert ACTIVATIONS["leaky_relu"]()(torch.tensor([-1.0])).item() == pytest.approx(-0.1)


def test_the_convnet_defaults_are_experiment_d_baseline() -> None:
    model = build_model(ModelConfig(family="convnet"), (1, 28, 28), 10)
    # conv 32 3x3 -> pool -> dense 100 -> 10: Keras' summary of D's baseline counts 542,230.
    assert sum(p.numel() for p in model.parameters()) == 542_230


@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_convnet_depths_fit_28x28_images(blocks: int) -> None:
    config = ModelConfig(family="convnet", conv_blocks=blocks, dense_layers=blocks, neurons=64)
    model = build_model(config, (1, 28, 28), 10)
    # Unpadded blocks shrink 28 -> 13 -> 5 -> 1 pixels; filters double each block.
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32 * 2**i for i in range(blocks)]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
