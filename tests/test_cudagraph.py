"""CUDA-graph training steps compute what the eager loop computes (GPU only; skipped without)."""

from __future__ import annotations

import pytest
import torch

from hptune.config import ModelConfig, TrainConfig
from hptune.cudagraph import WARMUP_STEPS, GraphedSteps
from hptune.data import Splits
from hptune.device import uses_cuda_graphs
from hptune.models import build_model
from hptune.training import make_optimizer, train, train_epoch

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def test_graphs_only_on_cuda_and_only_when_enabled() -> None:
    config = TrainConfig()
    assert not uses_cuda_graphs(config, torch.device("cpu"))
    assert uses_cuda_graphs(config, CUDA)
    assert not uses_cuda_graphs(config.model_copy(update={"cuda_graphs": False}), CUDA)
    # Adagrad keeps its step counter on the host: it cannot be captured, so it trains eagerly.
    assert not uses_cuda_graphs(TrainConfig(optimizer="adagrad"), CUDA)


def test_capturable_optimizers_keep_their_step_counter_on_the_device() -> None:
    model = torch.nn.Linear(3, 2)
    adam = make_optimizer(model.parameters(), TrainConfig(optimizer="adam"), capturable=True)
    assert adam.param_groups[0]["capturable"] is True
    assert adam.param_groups[0]["fused"] is True  # one kernel per group under the graph
    sgd = make_optimizer(model.parameters(), TrainConfig(optimizer="sgd_momentum"), capturable=True)
    assert "capturable" not in sgd.param_groups[0]  # no step counter to capture


def _random_splits(n: int, seed: int) -> Splits:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    return Splits(
        train_x=x.to(CUDA),
        train_y=y.to(CUDA),
        val_x=x[:200].to(CUDA),
        val_y=y[:200].to(CUDA),
        test_x=x[:200].to(CUDA),
        test_y=y[:200].to(CUDA),
        classes=[str(i) for i in range(10)],
        val_is_test=False,
    )


def _twins(seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    model = build_model(ModelConfig(hidden_sizes=[64, 32]), (1, 28, 28), 10).to(CUDA)
    twin = build_model(ModelConfig(hidden_sizes=[64, 32]), (1, 28, 28), 10).to(CUDA)
    twin.load_state_dict(model.state_dict())
    return model, twin


@needs_cuda
@pytest.mark.parametrize("optimizer", ["adam", "sgd_momentum", "rmsprop"])
def test_replayed_steps_match_eager_steps_on_the_same_batches(optimizer: str) -> None:
    # 10 full batches of 32 and a partial one of 20, three epochs: warm-up, capture, replay and
    # the eager partial batch all happen; losses, counts and weights match the eager loop.
    splits = _random_splits(340, seed=1)
    config = TrainConfig(optimizer=optimizer, lr=0.01, batch_size=32)
    eager, graphed = _twins(seed=2)
    eager_opt = make_optimizer(eager.parameters(), config)
    steps = GraphedSteps(
        graphed,
        make_optimizer(graphed.parameters(), config, capturable=True),
        splits.train_x,
        splits.train_y,
        config.batch_size,
    )
    generator = torch.Generator(device=CUDA).manual_seed(3)
    for _ in range(3):
        order = torch.randperm(340, device=CUDA, generator=generator)
        loss, correct = train_epoch(eager, eager_opt, splits.train_x, splits.train_y, 32, order)
        graph_loss, graph_correct = steps.epoch(order)
        assert graph_loss.item() == pytest.approx(loss.item(), rel=1e-5)
        assert graph_correct.item() == correct.item()
    assert steps.captured.captures == 1 and steps.captured.replays == 3 * 10 - WARMUP_STEPS
    for a, b in zip(eager.parameters(), graphed.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5)  # last, partial batch


@needs_cuda
def test_train_with_a_scheduler_recaptures_and_matches_eager_training() -> None:
    # The cosine schedule changes lr every epoch; a captured lr is a constant, so each epoch
    # must recapture, and the curves must still be the eager ones.
    splits = _random_splits(500, seed=4)
    config = TrainConfig(epochs=3, batch_size=64, lr=0.003, scheduler="cosine")
    eager, graphed = _twins(seed=5)
    eager_history = train(eager, splits, config.model_copy(update={"cuda_graphs": False}), 0)
    graph_history = train(graphed, splits, config, 0)
    for a, b in zip(eager_history.history, graph_history.history, strict=True):
        for key in ("train/loss", "val/loss", "lr"):
            assert b.metrics[key] == pytest.approx(a.metrics[key], rel=1e-5), key
        assert b.metrics["val/accuracy"] == a.metrics["val/accuracy"]


@needs_cuda
def test_the_cnn_with_dropout_trains_under_graphs() -> None:
    # Dropout draws its masks inside the replayed graph: training still learns (a separable
    # toy task), and stays finite.
    generator = torch.Generator().manual_seed(6)
    y = torch.randint(0, 10, (1024,), generator=generator)
    x = torch.randn(1024, 1, 28, 28, generator=generator) * 0.1
    x[torch.arange(1024), 0, y, y] += 3.0  # the class is a bright pixel on the diagonal
    splits = Splits(
        x.to(CUDA),
        y.to(CUDA),
        x.to(CUDA),
        y.to(CUDA),
        x.to(CUDA),
        y.to(CUDA),
        [str(i) for i in range(10)],
        val_is_test=False,
    )
    torch.manual_seed(7)
    model = build_model(ModelConfig(family="cnn"), (1, 28, 28), 10).to(CUDA)
    history = train(model, splits, TrainConfig(epochs=3, batch_size=64), 0).history
    assert history[-1].metrics["train/loss"] < history[0].metrics["train/loss"]
    assert history[-1].metrics["val/accuracy"] > 0.9


@needs_cuda
def test_batched_members_under_graphs_match_the_same_trials_alone() -> None:
    # Three members, one stopped after epoch 1 (the batch is captured again without it); the
    # others' curves are those of the same trials trained alone.
    from hptune.batched import train_batched
    from hptune.training import TrainResult

    splits = _random_splits(600, seed=8)
    shape = ModelConfig(hidden_sizes=[64, 32])
    configs = [
        TrainConfig(epochs=3, batch_size=64, lr=lr, scheduler="cosine") for lr in (3e-3, 1e-3, 3e-4)
    ]
    seeds = [11, 12, 13]

    def member(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return build_model(shape, (1, 28, 28), 10).to(CUDA)

    def on_epoch(k: int, report: object) -> None:
        if k == 1:
            raise RuntimeError("pruned")

    together = train_batched([member(s) for s in seeds], splits, configs, seeds, on_epoch)
    assert isinstance(together[1], RuntimeError)
    for k in (0, 2):
        alone = train(member(seeds[k]), splits, configs[k], seeds[k])
        result = together[k]
        assert isinstance(result, TrainResult)
        for mine, reference in zip(result.history, alone.history, strict=True):
            for key in ("train/loss", "val/loss"):
                assert mine.metrics[key] == pytest.approx(reference.metrics[key], rel=1e-4), key


class _SyncsWithTheHost(torch.nn.Module):
    """A user's model whose forward reads a value on the host: legal eagerly, not capturable."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x.flatten(1))
        if float(logits.abs().max()) > 1e6:  # a host sync: not allowed while capturing
            logits = logits / 1e6
        return logits


@needs_cuda
def test_a_step_that_cannot_be_captured_trains_eagerly_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from hptune import fastpaths

    fastpaths.start_trial()
    model = _SyncsWithTheHost().to(CUDA)
    config = TrainConfig(epochs=2, batch_size=64, lr=0.01)
    splits = _random_splits(512, seed=3)
    with caplog.at_level("WARNING", logger="hptune.cudagraph"):
        result = train(model, splits, config, seed=0)
    # The trial trains to its end, eagerly, and its run's tags say why it was not captured.
    assert len(result.history) == 2
    assert all(torch.isfinite(torch.tensor(r.metrics["train/loss"])) for r in result.history)
    assert fastpaths.trial_tags()[fastpaths.CUDA_GRAPHS_TAG].startswith("eager: ")
    assert sum("cannot be captured" in r.getMessage() for r in caplog.records) == 1


def test_why_a_trial_trained_eagerly_is_tagged_on_its_run_and_forgotten_by_the_next() -> None:
    from hptune import fastpaths

    fastpaths.start_trial()
    # A trial whose step was captured carries no such tag.
    assert fastpaths.CUDA_GRAPHS_TAG not in fastpaths.trial_tags()
    fastpaths.note_eager("RuntimeError: capture invalidated")
    fastpaths.note_eager("RuntimeError: capture invalidated")  # said once per trial
    tags = fastpaths.trial_tags()
    assert tags[fastpaths.CUDA_GRAPHS_TAG] == "eager: RuntimeError: capture invalidated"
    fastpaths.start_trial()
    assert fastpaths.CUDA_GRAPHS_TAG not in fastpaths.trial_tags()
