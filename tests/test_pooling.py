"""CPU max-pooling in channels-last: nn.MaxPool2d's values, indices and gradients, bit for bit."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from hptune.config import ModelConfig
from hptune.models import build_model
from hptune.pooling import ChannelsLastMaxPool2d, fast_max_pool

WINDOWS: list[dict[str, Any]] = [
    {"kernel_size": 2},  # every CNN of hptune's
    {"kernel_size": 3, "stride": 2, "padding": 1},
    {"kernel_size": 2, "dilation": 2, "ceil_mode": True},
    {"kernel_size": (3, 2), "stride": 1},
]


@pytest.mark.parametrize(
    "layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels-last"]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "window", WINDOWS, ids=lambda w: ",".join(f"{k}={v}" for k, v in w.items())
)
@pytest.mark.parametrize("relu", [False, True], ids=["pool", "relu-pool"])
def test_channels_last_pooling_is_max_pool2d_bit_for_bit(
    relu: bool, window: dict[str, Any], dtype: torch.dtype, layout: torch.memory_format
) -> None:
    torch.manual_seed(0)
    # Small integers: most windows hold ties, so the gradient shows which maximum was taken
    # (the first, in both kernels); a NaN counts as the maximum in both. After a ReLU the
    # negatives are tied zeros, whose gradient ReLU's backward stops.
    x = torch.randint(-2, 3, (4, 6, 11, 13)).to(dtype)
    x[0, 0, 0, 0] = x[1, 2, 5, 7] = float("nan")
    x = x.contiguous(memory_format=layout)
    pool = ChannelsLastMaxPool2d(nn.MaxPool2d(**window), relu=relu)
    reference = nn.Sequential(*[nn.ReLU()] * relu, nn.MaxPool2d(**window))
    # An NCHW gradient, as Flatten hands back to a channels-last model's last pooling.
    grad = torch.randn(reference(x).shape).to(dtype)
    outputs, grads = [], []
    for layer in (reference, pool):
        leaf = x.clone().requires_grad_()
        out = layer(leaf)
        out.backward(grad)
        outputs.append(out)
        grads.append(leaf.grad)
        # The output and the input's gradient keep the input's layout.
        assert out.is_contiguous(memory_format=layout)
        assert leaf.grad.is_contiguous(memory_format=layout)
    assert torch.equal(outputs[0].isnan(), outputs[1].isnan()) and outputs[0].isnan().any()
    assert torch.equal(outputs[0].nan_to_num(), outputs[1].nan_to_num())
    assert torch.equal(grads[0], grads[1])
    with torch.no_grad():  # evaluation's path keeps no indices
        evaluated = pool(x)
        assert evaluated.is_contiguous(memory_format=layout)
        assert torch.equal(evaluated.nan_to_num(), outputs[0].nan_to_num())


def test_inputs_it_does_not_speed_up_go_to_max_pool2d_as_they_are() -> None:
    pool = ChannelsLastMaxPool2d(nn.MaxPool2d(2))
    batchless = torch.randn(4, 8, 8)  # 3-d input (C, H, W)
    assert torch.equal(pool(batchless), nn.MaxPool2d(2)(batchless))
    strided = torch.randn(2, 4, 8, 16)[..., ::2]  # neither layout is dense
    assert torch.equal(pool(strided), nn.MaxPool2d(2)(strided))


def test_fast_max_pool_swaps_the_pools_of_a_copy_and_leaves_the_model_alone() -> None:
    model = build_model(ModelConfig(family="convnet", conv_blocks=2), (1, 28, 28), 10)
    fast = fast_max_pool(model)
    assert [type(layer) for layer in model].count(nn.MaxPool2d) == 2
    # Each block's ReLU goes into its pooling.
    pools = [layer for layer in fast if isinstance(layer, ChannelsLastMaxPool2d)]
    assert [pool.relu for pool in pools] == [True, True]
    assert len(fast) == len(model) - 2
    # Every other layer is shared, in order: training the copy trains the model.
    pooled = [i for i, layer in enumerate(model) if type(layer) is nn.MaxPool2d]
    gone = set(pooled) | {i - 1 for i in pooled}  # each pooling and the ReLU before it
    kept = [layer for layer in fast if not isinstance(layer, ChannelsLastMaxPool2d)]
    others = [layer for i, layer in enumerate(model) if i not in gone]
    assert all(a is b for a, b in zip(kept, others, strict=True))
    # A's CNN: only the ReLU right before the pooling goes in.
    cnn = fast_max_pool(build_model(ModelConfig(family="cnn"), (1, 28, 28), 10))
    names = [type(layer).__name__ for layer in cnn]
    assert names[:4] == ["Conv2d", "ReLU", "Conv2d", "ChannelsLastMaxPool2d"]
    mlp = build_model(ModelConfig(hidden_sizes=[8]), (1, 4, 4), 2)
    assert fast_max_pool(mlp) is mlp
    with_indices = nn.Sequential(nn.MaxPool2d(2, return_indices=True))
    assert fast_max_pool(with_indices) is with_indices
