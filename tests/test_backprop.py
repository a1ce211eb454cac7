"""ManualBackprop: the same loss and gradients as autograd, bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hptune.backprop import BACKWARD, ManualBackprop, onednn_bias
from hptune.config import ModelConfig
from hptune.dropout import fast_dropout
from hptune.models import ACTIVATIONS, build_model

SHAPE = (1, 8, 8)

# Every registered activation whose module ManualBackprop takes.
TAKEN = [name for name, make in ACTIVATIONS.items() if type(make()) in BACKWARD]


def mlp(activation: str, dropout: float, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(activation=activation, hidden_sizes=[32, 16], dropout=dropout)
    model = build_model(config, SHAPE, 10).to(dtype)
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)  # stale values: a step must overwrite them
    return model


def batch(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(24, *SHAPE, generator=generator).to(dtype)
    return x, torch.randint(0, 10, (24,), generator=generator)


class LoggedLinear(nn.Linear):
    """A subclass may compute something else in its forward: not taken."""


def test_takes_every_activation_but_the_composite_ones() -> None:
    assert set(ACTIVATIONS) - set(TAKEN) == {"softsign", "exponential", "softmax"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("activation", TAKEN)
def test_gradients_equal_autograd(activation: str, dropout: float, dtype: torch.dtype) -> None:
    x, y = batch(dtype)
    reference = fast_dropout(mlp(activation, dropout, dtype))
    manual = mlp(activation, dropout, dtype)
    torch.manual_seed(5)  # the same dropout masks both ways
    logits = reference(x)
    loss = F.cross_entropy(logits.float(), y)
    for p in reference.parameters():
        p.grad = None
    loss.backward()
    torch.manual_seed(5)
    manual_loss, manual_logits = ManualBackprop(manual).step(x, y)
    assert torch.equal(manual_loss, loss.detach())
    assert torch.equal(manual_logits, logits.detach())
    for (name, p), q in zip(reference.named_parameters(), manual.parameters(), strict=True):
        assert torch.equal(q.grad, p.grad), name
    if dropout:  # the masks matter: another draw gives other gradients
        manual_loss_again = ManualBackprop(manual).step(x, y)[0]
        assert not torch.equal(manual_loss_again, loss.detach())


@pytest.mark.parametrize(
    "model",
    [
        build_model(ModelConfig(activation="softsign"), SHAPE, 10),
        build_model(ModelConfig(family="cnn"), (1, 28, 28), 10),
        nn.Sequential(nn.Flatten(), nn.Linear(64, 10, bias=False)),
        nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(inplace=True), nn.Linear(8, 2)),
        nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.ReLU(), nn.Linear(8, 2)),
        nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU()),
        nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 2)),
        nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Dropout(1.0), nn.Linear(8, 2)),
        nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Dropout(0.1), nn.Linear(8, 2)),
        nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), LoggedLinear(8, 2)),
    ],
    ids=[
        "softsign",
        "cnn",
        "no-bias",
        "in-place",
        "two-activations",
        "ends-in-relu",
        "no-flatten",
        "dropout-1",
        "no-activation",
        "linear-subclass",
    ],
)
def test_refuses_what_it_cannot_differentiate(model: nn.Module) -> None:
    assert not ManualBackprop.supports(model)


def test_dropout_zero_is_the_identity_and_draws_nothing() -> None:
    torch.manual_seed(0)
    reference = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.0), nn.Linear(16, 10)
    )
    manual = copy.deepcopy(reference)
    for p in manual.parameters():
        p.grad = torch.full_like(p, 7.0)
    x, y = batch(torch.float32)
    F.cross_entropy(reference(x), y).backward()
    state = torch.get_rng_state()
    ManualBackprop(manual).step(x, y)
    assert torch.equal(torch.get_rng_state(), state)
    for (name, p), q in zip(reference.named_parameters(), manual.parameters(), strict=True):
        assert torch.equal(q.grad, p.grad), name


@pytest.mark.skipif(
    not onednn_bias(torch.zeros(1, dtype=torch.bfloat16)), reason="needs oneDNN's bf16 matmul"
)
@pytest.mark.parametrize("poisoned", [False, True], ids=["finite", "nan-and-infinities"])
def test_onednn_bias_gives_autograds_numbers(poisoned: bool) -> None:
    # B's MLP's shapes, where oneDNN may pick other kernels than for the small model above.
    torch.manual_seed(0)
    reference = build_model(ModelConfig(hidden_sizes=[256, 128]), (1, 28, 28), 10)
    reference = reference.to(torch.bfloat16)
    if poisoned:  # a diverging unit: its NaN must reach the loss, as under autograd
        with torch.no_grad():
            reference[1].weight[3, 5] = float("nan")
            reference[1].bias[7] = float("inf")
            reference[3].weight[2, 9] = float("-inf")
    manual = copy.deepcopy(reference)
    for p in manual.parameters():
        p.grad = torch.zeros_like(p)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(128, 1, 28, 28, generator=generator).to(torch.bfloat16)
    y = torch.randint(0, 10, (128,), generator=generator)
    logits = reference(x)
    loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    backprop = ManualBackprop(manual)
    assert backprop.onednn_bias  # the fused bias is what runs here
    manual_loss, manual_logits = backprop.step(x, y)
    assert bool(manual_loss.isnan()) is poisoned

    def exactly(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
        # Equal values, with NaN and infinities in the same places.
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True, msg=name)

    exactly(manual_loss, loss.detach(), "loss")
    exactly(manual_logits, logits.detach(), "logits")
    for (name, p), q in zip(reference.named_parameters(), manual.parameters(), strict=True):
        exactly(q.grad, p.grad, name)


def test_takes_an_mlp_without_hidden_layers() -> None:
    assert ManualBackprop.supports(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
def test_gradients_match_autograd_on_cuda(activation: str, dtype: torch.dtype) -> None:
    # (Eager CUDA steps: bf16, Adagrad, cuda_graphs off.) cuBLAS may pick other kernels for the
    # transposed products, so: equal up to rounding.
    cuda = torch.device("cuda")
    x, y = (t.to(cuda) for t in batch(dtype))
    reference = fast_dropout(mlp(activation, 0.3, dtype)).to(cuda)
    manual = mlp(activation, 0.3, dtype).to(cuda)
    for model in (reference, manual):
        for p in model.parameters():
            p.grad = torch.full_like(p, 7.0)
    torch.manual_seed(5)  # the same dropout masks both ways
    loss = F.cross_entropy(reference(x).float(), y)
    for p in reference.parameters():
        p.grad = None
    loss.backward()
    torch.manual_seed(5)
    manual_loss, _ = ManualBackprop(manual).step(x, y)
    tolerance = {"rtol": 1e-2, "atol": 1e-3} if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(manual_loss, loss.detach(), **tolerance)
    for (name, p), q in zip(reference.named_parameters(), manual.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, **tolerance, msg=name)
