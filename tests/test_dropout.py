"""Dropout masks of the eager steps: their law, their seed, and models that keep nn.Dropout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hptune.config import ModelConfig
from hptune.dropout import MaskDropout, dropout_mask, fast_dropout
from hptune.models import build_model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_dropout_masks_keep_each_value_with_probability_one_minus_p(
    p: float, dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    x = torch.empty(1000, 1001, dtype=dtype)  # an odd count: the last 64-bit draw part-used
    mask = dropout_mask(x, p)
    assert mask.shape == x.shape and mask.dtype == dtype
    scale = torch.tensor(1 / (1 - p), dtype=dtype)  # aten's dropout scales in x's dtype
    assert set(mask.unique().tolist()) == {0.0, scale.item()}
    kept = (mask > 0).double().mean().item()
    # 1,001,000 draws: the standard error of the kept fraction is below 0.0005.
    assert kept == pytest.approx(1 - p, abs=0.0025)
    # Each 64-bit draw gives 8 values (one byte each) where 1 - p is a multiple of 1/256
    # (0.25, 0.5), else 2 (32 bits each): every position within a draw keeps 1 - p.
    per_draw = 8 if p in (0.25, 0.5) else 2
    flat = mask.flatten() > 0
    for position in range(per_draw):
        there = flat[position::per_draw]
        standard_error = (p * (1 - p) / there.numel()) ** 0.5
        assert there.double().mean().item() == pytest.approx(1 - p, abs=5 * standard_error)
    torch.manual_seed(0)
    assert torch.equal(dropout_mask(x, p), mask)  # the global seed decides it
    assert not torch.equal(dropout_mask(x, p), mask)


def test_dropout_masks_take_one_byte_per_value_only_where_a_byte_is_exact() -> None:
    x = torch.empty(64)
    # How many 64-bit draws a mask took shows in the generator's next number.
    for p, draws in ((0.25, 8), (0.5, 8), (0.1, 32), (0.3, 32)):
        torch.manual_seed(0)
        dropout_mask(x, p)
        after = torch.randint(2**62, ()).item()
        torch.manual_seed(0)
        torch.empty(draws, dtype=torch.int64).random_(-(2**63), None)
        # The rule: 64 values take 8 draws where a byte decides exactly, else 32.
        assert torch.randint(2**62, ()).item() == after


def test_fast_dropout_swaps_the_dropouts_of_a_copy_and_leaves_the_model_alone() -> None:
    model = build_model(ModelConfig(family="cnn"), (1, 28, 28), 10)
    fast = fast_dropout(model)
    assert [type(layer) for layer in model if "Dropout" in type(layer).__name__] == [
        nn.Dropout,
        nn.Dropout,
    ]
    assert [layer.p for layer in fast if isinstance(layer, MaskDropout)] == [0.25, 0.5]
    # Every other layer is shared, in order: training the copy trains the model.
    kept = [layer for layer in fast if not isinstance(layer, MaskDropout)]
    others = [layer for layer in model if type(layer) is not nn.Dropout]
    assert all(a is b for a, b in zip(kept, others, strict=True))
    no_dropout = build_model(ModelConfig(hidden_sizes=[8]), (1, 4, 4), 2)
    assert fast_dropout(no_dropout) is no_dropout


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_a_dropout_before_flatten_moves_after_it_with_the_same_numbers(
    layout: torch.memory_format,
) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="cnn"), (1, 28, 28), 10).to(memory_format=layout)
    fast = fast_dropout(model)
    names = [type(layer).__name__ for layer in fast]
    # A's CNN: pool, dropout 0.25, flatten -> pool, flatten, dropout 0.25.
    assert names[4:7] == ["MaxPool2d", "Flatten", "MaskDropout"]
    in_place = nn.Sequential(
        *[MaskDropout(layer.p) if type(layer) is nn.Dropout else layer for layer in model]
    )
    x = torch.randn(8, 1, 28, 28).to(memory_format=layout)
    results = []
    for net in (in_place, fast):
        torch.manual_seed(1)  # the same draws for both
        out = net(x)
        grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
        results.append((out, grads))
    # The same masks on the same values: equal outputs and gradients, bit for bit.
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1], strict=True))


def test_mask_dropout_is_the_identity_in_eval_mode() -> None:
    layer = MaskDropout(0.5)
    x = torch.ones(4, 8)
    assert not torch.equal(layer(x), x)
    layer.eval()
    assert layer(x) is x
