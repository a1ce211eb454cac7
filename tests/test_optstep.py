"""DirectStep: the optimizer's own update, bit for bit, without ``Optimizer.step``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hptune.config import TrainConfig
from hptune.optstep import DirectStep
from hptune.training import OPTIMIZERS, make_optimizer

DIRECT = {"adam", "adamw", "adagrad", "sgd_momentum", "sgd"}  # the rest keep step()
STEPS = 6


def flat_parameter() -> nn.Parameter:
    p = nn.Parameter(torch.randn(1000, generator=torch.Generator().manual_seed(0)))
    p.grad = torch.zeros_like(p)
    return p


def run(
    make: type[torch.optim.Optimizer] | None,
    config: TrainConfig,
    direct: bool,
    **options: object,
) -> tuple[nn.Parameter, torch.optim.Optimizer, DirectStep]:
    """STEPS updates from the same gradients, the learning rate halved after every second step
    (as a scheduler would), through ``optimizer.step()`` or ``DirectStep``."""
    p = flat_parameter()
    optimizer = (
        make([p], lr=config.lr, **options) if make else make_optimizer([p], config)  # type: ignore[arg-type]
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    update = DirectStep(optimizer)
    grads = torch.Generator().manual_seed(1)
    for step in range(STEPS):
        p.grad.copy_(torch.randn(p.shape, generator=grads))  # type: ignore[union-attr]
        if step == 3:
            p.grad[:10] = 0  # type: ignore[index]
        update() if direct else optimizer.step()
        if step % 2:
            scheduler.step()
    return p, optimizer, update


def assert_same(
    a: tuple[nn.Parameter, torch.optim.Optimizer, DirectStep],
    b: tuple[nn.Parameter, torch.optim.Optimizer, DirectStep],
) -> None:
    (pa, oa, _), (pb, ob, _) = a, b
    assert torch.equal(pa, pb)
    state_a, state_b = oa.state[pa], ob.state[pb]
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(torch.as_tensor(state_a[key]), torch.as_tensor(state_b[key])), key


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("weight_decay", [None, 0.05])
def test_every_optimizer_updates_as_its_step_does(name: str, weight_decay: float | None) -> None:
    config = TrainConfig(optimizer=name, lr=0.01, weight_decay=weight_decay)
    reference = run(None, config, direct=False)
    direct = run(None, config, direct=True)
    assert_same(reference, direct)
    optimizer, update = direct[1], direct[2]
    # The direct kernel call is what ran, not a fallback to step() (which would pass trivially).
    assert (update.update != optimizer.step) is (name in DIRECT)
    assert reference[1].param_groups[0]["lr"] == direct[1].param_groups[0]["lr"] == 0.01 / 8


@pytest.mark.parametrize(
    ("make", "options"),
    [
        (torch.optim.Adam, {"fused": True, "amsgrad": True, "maximize": True}),
        (torch.optim.AdamW, {"fused": True, "betas": (0.8, 0.99), "eps": 1e-6}),
        (torch.optim.Adagrad, {"fused": True, "lr_decay": 0.1, "maximize": True}),
        (torch.optim.SGD, {"fused": True, "momentum": 0.9, "nesterov": True}),
        (torch.optim.SGD, {"fused": True, "momentum": 0.5, "dampening": 0.3}),
        (torch.optim.SGD, {"maximize": True, "weight_decay": 0.1}),
    ],
)
def test_options_hptune_does_not_set_update_the_same(
    make: type[torch.optim.Optimizer], options: dict[str, object]
) -> None:
    config = TrainConfig(lr=0.01)
    reference = run(make, config, direct=False, **options)
    direct = run(make, config, direct=True, **options)
    assert_same(reference, direct)
    assert direct[2].update != direct[1].step


def test_hooks_and_several_tensors_keep_the_optimizers_step() -> None:
    p = flat_parameter()
    hooked = torch.optim.Adam([p], fused=True)
    calls: list[int] = []
    hooked.register_step_post_hook(lambda *_: calls.append(1))
    update = DirectStep(hooked)
    update()
    update()
    assert calls == [1, 1]

    two = torch.optim.Adam([flat_parameter(), flat_parameter()], fused=True)
    update = DirectStep(two)
    update()
    assert update.update == two.step
