"""Dropout masks of the eager steps: their law, their seed, and models that keep nn.Dropout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hptune.config import ModelConfig
from hptune.dropout import MaskDropout, dropout_mask, fast_dropout
from hptune.models import build_model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_masks_keep_each_value_with_probability_one_minus_p(
    p: float, dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    x = torch.empty(1000, 1001, dtype=dtype)  # an odd count: the last 64-bit draw half-used
    mask = dropout_mask(x, p)
    assert mask.shape == x.shape and mask.dtype == dtype
    scale = torch.tensor(1 / (1 - p), dtype=dtype)  # aten's dropout scales in x's dtype
    assert set(mask.unique().tolist()) == {0.0, scale.item()}
    kept = (mask > 0).double().mean().item()
    # 1,001,000 draws: the standard error of the kept fraction is below 0.0005.
    assert kept == pytest.approx(1 - p, abs=0.0025)
    # Values 0, 2, 4, ... come from the low halves of the 64-bit draws, 1, 3, ... from the
    # high halves: both keep 1 - p.
    flat = mask.flatten() > 0
    assert flat[0::2].double().mean().item() == pytest.approx(1 - p, abs=0.0035)
    assert flat[1::2].double().mean().item() == pytest.approx(1 - p, abs=0.0035)
    torch.manual_seed(0)
    assert torch.equal(dropout_mask(x, p), mask)  # the global seed decides it
    assert not torch.equal(dropout_mask(x, p), mask)


def test_fast_dropout_swaps_the_dropouts_of_a_copy_and_leaves_the_model_alone() -> None:
    model = build_model(ModelConfig(family="cnn"), (1, 28, 28), 10)
    fast = fast_dropout(model)
    assert [type(layer) for layer in model if "Dropout" in type(layer).__name__] == [
        nn.Dropout,
        nn.Dropout,
    ]
    assert [layer.p for layer in fast if isinstance(layer, MaskDropout)] == [0.25, 0.5]
    # Every other layer is shared: training the copy trains the model.
    assert all(a is b for a, b in zip(model, fast, strict=True) if not isinstance(b, MaskDropout))
    no_dropout = build_model(ModelConfig(hidden_sizes=[8]), (1, 4, 4), 2)
    assert fast_dropout(no_dropout) is no_dropout


def test_mask_dropout_is_the_identity_in_eval_mode() -> None:
    layer = MaskDropout(0.5)
    x = torch.ones(4, 8)
    assert not torch.equal(layer(x), x)
    layer.eval()
    assert layer(x) is x
