"""The training function: learns on real data, stops on divergence, reports every epoch."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hptune import data
from hptune.config import DataConfig, ModelConfig, TrainConfig
from hptune.device import compute_dtype, uses_channels_last
from hptune.models import build_model
from hptune.training import (
    EVAL_BATCH_SIZE,
    EVAL_CPU_BYTES,
    Diverged,
    EpochReport,
    eval_batch_size,
    evaluate,
    make_optimizer,
    seed_everything,
    train,
)

CPU = torch.device("cpu")
METRIC_KEYS = {
    "train/loss",
    "train/accuracy",
    "val/loss",
    "val/accuracy",
    "val/f1_macro",
    "val/precision_macro",
    "val/recall_macro",
    "lr",
    "time/epoch_s",
    *(
        f"grad/{layer}/{stat}"
        for layer in ("fc1", "fc2")
        for stat in ("mean_abs", "std", "zero_pct")
    ),
}


def small_splits(mnist_dir: Path) -> data.Splits:
    return data.load(DataConfig(dataset="mnist", val_fraction=0.2), CPU)


@pytest.fixture(params=["auto", "off"])
def fast_paths(request: pytest.FixtureRequest) -> str:
    """``train.fast_paths``: hptune's fast steps, and plain PyTorch (what users' own models
    take): every behaviour below holds for both."""
    return request.param


def test_loss_falls_on_real_fashion_mnist(fashion_mnist: Path, fast_paths: str) -> None:
    splits = data.load(DataConfig(train_subset=3000, test_subset=500), CPU)
    seed_everything(0)
    model = build_model(ModelConfig(hidden_sizes=[128], dropout=0.2), splits.input_shape, 10)
    config = TrainConfig(epochs=3, batch_size=64, fast_paths=fast_paths)  # type: ignore[arg-type]
    history = train(model, splits, config, seed=0).history
    losses = [r.metrics["train/loss"] for r in history]
    # Three epochs on 2,700 real images: the loss falls every epoch, accuracy is far above chance.
    assert losses[0] > losses[1] > losses[2]
    assert history[-1].metrics["val/accuracy"] > 0.7


def test_every_epoch_is_reported_with_the_stable_keys(mnist_dir: Path, fast_paths: str) -> None:
    splits = small_splits(mnist_dir)
    seen: list[EpochReport] = []
    model = build_model(ModelConfig(width=16, depth=1), splits.input_shape, 10)
    config = TrainConfig(epochs=2, scheduler="step", fast_paths=fast_paths)  # type: ignore[arg-type]
    history = train(model, splits, config, 0, seen.append).history
    assert [r.epoch for r in seen] == [1, 2] and seen == history
    assert set(seen[0].metrics) == METRIC_KEYS
    # StepLR with step_size = epochs // 3 = 1 (at least 1) and gamma 0.1 cuts lr after epoch 1.
    assert seen[1].metrics["lr"] == pytest.approx(seen[0].metrics["lr"] * 0.1)


def test_same_seed_same_result(mnist_dir: Path, fast_paths: str) -> None:
    splits = small_splits(mnist_dir)
    config = TrainConfig(epochs=2, fast_paths=fast_paths)  # type: ignore[arg-type]

    def run() -> float:
        seed_everything(3)
        model = build_model(ModelConfig(width=16, depth=1, dropout=0.3), splits.input_shape, 10)
        return train(model, splits, config, 3).history[-1].metrics["train/loss"]

    # Initialization and batch order both come from the trial seed.
    assert run() == run()


def test_nan_loss_stops_training_as_diverged(mnist_dir: Path, fast_paths: str) -> None:
    splits = small_splits(mnist_dir)
    poisoned = splits.train_x.clone()
    poisoned[0, 0, 0, 0] = float("nan")
    splits = replace(splits, train_x=poisoned)
    seen: list[EpochReport] = []
    model = build_model(ModelConfig(width=16, depth=1), splits.input_shape, 10)
    # The NaN ends training with the reason, before any epoch is reported as if it were fine.
    with pytest.raises(Diverged, match="loss is not finite at epoch 1"):
        train(model, splits, TrainConfig(epochs=3, fast_paths=fast_paths), 0, seen.append)  # type: ignore[arg-type]
    assert seen == []


def test_callback_exception_stops_training(mnist_dir: Path, fast_paths: str) -> None:
    splits = small_splits(mnist_dir)
    model = build_model(ModelConfig(width=16, depth=1), splits.input_shape, 10)

    class Stop(Exception):
        pass

    def stop_after_first(report: EpochReport) -> None:
        raise Stop

    # The driver prunes by raising from the callback; training must not swallow it.
    with pytest.raises(Stop):
        train(model, splits, TrainConfig(epochs=5, fast_paths=fast_paths), 0, stop_after_first)  # type: ignore[arg-type]


def test_an_interrupt_stops_training_and_leaves_a_usable_model(
    mnist_dir: Path, fast_paths: str
) -> None:
    splits = small_splits(mnist_dir)
    model = build_model(ModelConfig(width=16, depth=1), splits.input_shape, 10)
    config = TrainConfig(epochs=5, fast_paths=fast_paths)  # type: ignore[arg-type]
    seen: list[int] = []

    def interrupt(report: EpochReport) -> None:
        seen.append(report.epoch)
        raise KeyboardInterrupt  # Ctrl-C (hptune.interrupt raises it at an epoch's end)

    # An interrupt is not a trial's outcome: it goes through, after the first epoch.
    with pytest.raises(KeyboardInterrupt):
        train(model, splits, config, 0, interrupt)
    assert seen == [1]
    # The model owns its parameters again (no views of a training buffer) and still trains.
    params = list(model.parameters())
    assert len({p.untyped_storage().data_ptr() for p in params}) == len(params)
    assert train(model, splits, config.model_copy(update={"epochs": 1}), 0).history


def test_gradient_flow_matches_the_last_batch_gradients(mnist_dir: Path, fast_paths: str) -> None:
    splits = small_splits(mnist_dir)
    model = build_model(ModelConfig(width=16, depth=1), splits.input_shape, 10)
    config = TrainConfig(epochs=1, fast_paths=fast_paths)  # type: ignore[arg-type]
    report = train(model, splits, config, 0).history[0]
    first_layer = model[1].weight.grad  # Flatten, Linear (fc1), ...
    # The logged numbers are the statistics of the gradients the last step used.
    assert report.metrics["grad/fc1/mean_abs"] == pytest.approx(first_layer.abs().mean().item())
    assert report.metrics["grad/fc1/std"] == pytest.approx(first_layer.std().item())
    zero_pct = (first_layer == 0).float().mean().item() * 100
    assert report.metrics["grad/fc1/zero_pct"] == pytest.approx(zero_pct)


@pytest.mark.parametrize(
    ("model_config", "precision", "channels_last"),
    [
        (ModelConfig(family="cnn"), "bf16", True),  # oneDNN's bf16 convolutions work in NHWC
        (ModelConfig(family="convnet", conv_blocks=2), "bf16", True),
        (ModelConfig(family="cnn"), "fp32", False),  # CPU fp32: no gain, and other numbers
        (ModelConfig(), "bf16", False),  # an MLP: nothing to convolve
    ],
    ids=["cnn-bf16", "convnet-bf16", "cnn-fp32", "mlp-bf16"],
)
def test_cpu_trains_convolutions_channels_last_in_bf16(
    mnist_dir: Path, model_config: ModelConfig, precision: str, channels_last: bool
) -> None:
    splits = small_splits(mnist_dir)
    seed_everything(0)
    model = build_model(model_config, splits.input_shape, 10)
    config = TrainConfig(epochs=3, batch_size=16, precision=precision)  # type: ignore[arg-type]
    assert uses_channels_last(model, CPU, compute_dtype(config, CPU)) == channels_last
    history = train(model, splits, config, seed=0).history
    # (A 1-channel weight is laid out the same both ways: only the others tell.)
    weights = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert len(weights) > 0 or model_config.family == "mlp"
    # The trained model's convolution weights are (still) in the layout it trained in ...
    for weight in weights:
        assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert weight.is_contiguous() != channels_last
    # ... and it learned the bands, as every layout and precision does on this data.
    assert history[-1].metrics["val/accuracy"] > 0.6


def test_cpu_optimizers_use_their_fused_kernel() -> None:
    model = torch.nn.Linear(3, 2)
    fused = {
        name: make_optimizer(model.parameters(), TrainConfig(optimizer=name)).defaults.get("fused")
        for name in ("adam", "adamw", "adagrad", "sgd_momentum", "sgd", "rmsprop")
    }
    assert fused == {
        "adam": True,
        "adamw": True,
        "adagrad": True,
        "sgd_momentum": True,
        "sgd": None,
        "rmsprop": None,
    }


class MatmulDtypes(TorchDispatchMode):
    """Records the dtypes of every matrix product run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm):
            self.seen.add(args[-1].dtype)
        return func(*args, **(kwargs or {}))


def test_bf16_trains_in_bf16_and_keeps_fp32_accuracy(fashion_mnist: Path) -> None:
    splits = data.load(DataConfig(train_subset=6000, test_subset=2000), CPU)
    accuracy, matmul_dtypes = {}, {}
    for precision in ("fp32", "bf16"):
        seed_everything(0)
        model = build_model(ModelConfig(hidden_sizes=[256, 128]), splits.input_shape, 10)
        config = TrainConfig(epochs=3, batch_size=128, precision=precision)  # type: ignore[arg-type]
        with MatmulDtypes() as recorder:
            history = train(model, splits, config, seed=0).history
        accuracy[precision] = history[-1].metrics["val/accuracy"]
        matmul_dtypes[precision] = recorder.seen
    # bf16 trains and validates in bf16; fp32 never touches bf16.
    assert matmul_dtypes == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}
    # Same seed, data and epochs: bf16's accuracy is fp32's within seed noise (~0.01 here).
    assert accuracy["bf16"] == pytest.approx(accuracy["fp32"], abs=0.015)
    assert accuracy["fp32"] > 0.8


def test_cpu_evaluation_batches_keep_each_layer_output_small(mnist_dir: Path) -> None:
    splits = data.load(DataConfig(dataset="mnist", val_fraction=0.2), CPU)
    cnn = build_model(ModelConfig(family="cnn"), splits.input_shape, 10)
    mlp = build_model(ModelConfig(hidden_sizes=[256, 128]), splits.input_shape, 10)
    # The CNN's largest output: 64 channels of 24 x 24 per image, 4 bytes each in fp32.
    assert eval_batch_size(cnn, splits.val_x) == EVAL_CPU_BYTES // (64 * 24 * 24 * 4) == 227
    assert eval_batch_size(cnn, splits.val_x, members=4) == 227 // 4  # stacked: one bound
    assert eval_batch_size(mlp, splits.val_x) == EVAL_BATCH_SIZE
    # The probe changes nothing: the model's mode, and no dropout mask is drawn.
    assert cnn.training
    state = torch.get_rng_state()
    eval_batch_size(cnn, splits.val_x)
    assert cnn.training and torch.equal(torch.get_rng_state(), state)
    # The batch size changes nothing but the speed: the same predictions, the same loss up to
    # the order of summation.
    x, y = splits.train_x.repeat(2, 1, 1, 1), splits.train_y.repeat(2)  # 320: two batches
    loss, predictions = evaluate(cnn, x, y)
    loss_whole, predictions_whole = evaluate(cnn, x, y, batch_size=len(x))
    assert torch.equal(predictions, predictions_whole)
    assert loss.item() == pytest.approx(loss_whole.item(), rel=1e-5)
    assert not cnn.training
