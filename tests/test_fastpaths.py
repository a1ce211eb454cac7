"""Fast paths can never stop training: each private PyTorch symbol, removed or broken, leaves a
working plain path, one warning line, and the same accuracy."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient
from torch.optim import optimizer as optimizer_module

import hptune
from hptune import backprop, data, fastpaths, pooling
from hptune.attrs import RUN_ID_ATTR
from hptune.config import DataConfig, ModelConfig, TrainConfig
from hptune.errors import HptuneError
from hptune.models import build_model
from hptune.optstep import BINDERS, DirectStep
from hptune.studyfile import load_study_file
from hptune.training import seed_everything, train

CPU = torch.device("cpu")
aten = torch.ops.aten
FLAGSHIP = Path(__file__).resolve().parents[1] / "studies" / "fashion.yaml"


@pytest.fixture(autouse=True)
def fresh_fast_paths() -> Iterator[None]:
    """Every fast path on and unprobed, before and after (a failure lasts for the process)."""
    for state in (fastpaths._failed, fastpaths._probed, fastpaths._used):
        state.clear()
    yield
    for state in (fastpaths._failed, fastpaths._probed, fastpaths._used):
        state.clear()


def _raises(*args: Any, **kwargs: Any) -> Any:
    raise TypeError("changed signature (a test broke this symbol)")


class Unsized(OrderedDict):  # type: ignore[type-arg]
    """A hooks mapping that torch still iterates but whose size cannot be read (a changed type)."""

    def __len__(self) -> int:
        raise TypeError("hooks are no longer a dict")


def _break_instance_hooks(name: str) -> Callable[[pytest.MonkeyPatch], None]:
    def breaker(monkeypatch: pytest.MonkeyPatch) -> None:
        init = torch.optim.Optimizer.__init__

        def patched(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            setattr(self, name, Unsized(getattr(self, name)))

        monkeypatch.setattr(torch.optim.Optimizer, "__init__", patched)

    return breaker


def _delete(owner: Any, name: str) -> Callable[[pytest.MonkeyPatch], None]:
    return lambda monkeypatch: monkeypatch.delattr(owner, name)


def _make_raise(owner: Any, name: str) -> Callable[[pytest.MonkeyPatch], None]:
    return lambda monkeypatch: monkeypatch.setattr(owner, name, _raises)


class _Aten:
    """``torch.ops.aten`` as hptune's modules see it, with the kernels in ``broken`` gone (True)
    or raising (False): torch's own code (autograd, export) keeps the real kernels, as it would
    keep a renamed one."""

    def __init__(self, broken: dict[str, bool]) -> None:
        self.broken = broken

    def __getattr__(self, attr: str) -> Any:
        if attr not in self.broken:
            return getattr(aten, attr)
        if self.broken[attr]:
            raise AttributeError(f"'_OpNamespace' 'aten' object has no attribute {attr!r}")
        return _raises


def _aten(name: str, missing: bool = False) -> Callable[[pytest.MonkeyPatch], None]:
    def breaker(monkeypatch: pytest.MonkeyPatch) -> None:
        for module in (fastpaths, backprop, pooling):
            current = module.aten
            broken = dict(current.broken) if isinstance(current, _Aten) else {}
            monkeypatch.setattr(module, "aten", _Aten({**broken, name: missing}))

    return breaker


def _onednn(name: str) -> Callable[[pytest.MonkeyPatch], None]:
    def breaker(monkeypatch: pytest.MonkeyPatch) -> None:
        # Taken only where oneDNN multiplies bf16 natively: claimed here, so that it is used.
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
        monkeypatch.setattr(torch.ops.mkldnn, name, _raises)

    return breaker


MLP = ModelConfig(width=32, depth=1, dropout=0.2)
CONVNET = ModelConfig(family="convnet", filters=8, neurons=16)
# symbol -> (how it is broken, the model and training that use it, the path that must fall back)
BREAKS: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], ModelConfig, dict, str]] = {
    "torch._fused_adam_": (_delete(torch, "_fused_adam_"), MLP, {}, "direct_step"),
    "torch._fused_adamw_": (
        _delete(torch, "_fused_adamw_"), MLP, {"optimizer": "adamw"}, "direct_step"
    ),
    "torch._fused_adagrad_": (
        _delete(torch, "_fused_adagrad_"), MLP, {"optimizer": "adagrad"}, "direct_step"
    ),
    "torch._fused_sgd_": (
        _delete(torch, "_fused_sgd_"), MLP, {"optimizer": "sgd_momentum"}, "direct_step"
    ),
    "torch.optim.optimizer._global_optimizer_pre_hooks": (
        lambda m: m.setattr(optimizer_module, "_global_optimizer_pre_hooks", Unsized()),
        MLP, {}, "direct_step",
    ),
    "torch.optim.optimizer._global_optimizer_post_hooks": (
        lambda m: m.setattr(optimizer_module, "_global_optimizer_post_hooks", Unsized()),
        MLP, {}, "direct_step",
    ),
    "torch.optim.Optimizer._optimizer_step_pre_hooks": (
        _break_instance_hooks("_optimizer_step_pre_hooks"), MLP, {}, "direct_step"
    ),
    "torch.optim.Optimizer._optimizer_step_post_hooks": (
        _break_instance_hooks("_optimizer_step_post_hooks"), MLP, {}, "direct_step"
    ),
    **{
        f"torch.ops.aten.{kernel}": (
            _aten(kernel, missing=kernel.startswith("nll")),
            ModelConfig(width=32, depth=1, dropout=0.2, activation=activation),
            {},
            "manual_backprop",
        )
        for kernel, activation in (
            ("threshold_backward", "relu"),
            ("leaky_relu_backward", "leaky_relu"),
            ("elu_backward", "elu"),
            ("gelu_backward", "gelu"),
            ("tanh_backward", "tanh"),
            ("sigmoid_backward", "sigmoid"),
            ("softplus_backward", "softplus"),
            ("hardsigmoid_backward", "hard_sigmoid"),
            ("nll_loss_forward", "relu"),
            ("nll_loss_backward", "relu"),
            ("_log_softmax_backward_data", "relu"),
        )
    },
    "torch.ops.aten.max_pool2d_with_indices": (
        _aten("max_pool2d_with_indices", missing=True), CONVNET, {}, "channels_last_max_pool"
    ),
    "torch.ops.aten.max_pool2d_with_indices_backward": (
        _aten("max_pool2d_with_indices_backward"),
        CONVNET, {}, "channels_last_max_pool",
    ),
    "torch.ops.mkldnn._linear_pointwise": (
        _onednn("_linear_pointwise"), MLP, {"precision": "bf16"}, "onednn_linear"
    ),
    "torch.ops.mkldnn._is_mkldnn_bf16_supported": (
        lambda m: m.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", _raises),
        MLP, {"precision": "bf16"}, "onednn_linear",
    ),
    "torch.cpu._is_avx512_bf16_supported": (
        _delete(torch.cpu, "_is_avx512_bf16_supported"), MLP, {}, "cpu_bf16_detection"
    ),
    "torch.cpu._is_amx_tile_supported": (
        _make_raise(torch.cpu, "_is_amx_tile_supported"), MLP, {}, "cpu_bf16_detection"
    ),
}  # fmt: skip


def small_splits() -> data.Splits:
    return data.load(DataConfig(dataset="mnist", val_fraction=0.2), CPU)


def accuracy(splits: data.Splits, model_config: ModelConfig, options: dict) -> float:
    seed_everything(0)
    model = build_model(model_config, splits.input_shape, 10)
    config = TrainConfig(epochs=3, batch_size=16, lr=3e-3, **options)
    return train(model, splits, config, seed=0).history[-1].metrics["val/accuracy"]


INTACT: dict[str, float] = {}  # the accuracy with every fast path working


def test_every_listed_private_symbol_has_a_breaking_test() -> None:
    listed = {symbol for path in fastpaths.FAST_PATHS.values() for symbol in path.private}
    # The docs' list and this table are the same list: none may go untested.
    assert listed == set(BREAKS)


@pytest.mark.parametrize("symbol", sorted(BREAKS))
def test_a_broken_private_symbol_falls_back_with_one_warning(
    mnist_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    symbol: str,
) -> None:
    breaker, model_config, options, path = BREAKS[symbol]
    splits = small_splits()
    key = repr((model_config, options))
    if key not in INTACT:  # (deterministic: computed once per model and options)
        INTACT[key] = accuracy(splits, model_config, options)
        fastpaths._failed.clear(), fastpaths._probed.clear()
    intact = INTACT[key]
    breaker(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="hptune.fastpaths"):
        broken = accuracy(splits, model_config, options)
        accuracy(splits, model_config, options)  # a second trial: no second warning
    # Training completed on the plain path, and learned as much (same seed; other numbers
    # where the path drew other random numbers or rounded otherwise).
    assert broken == pytest.approx(intact, abs=0.1)
    assert broken > 0.5
    # One warning line names the path and why it is off, once per process.
    lines = [r.getMessage() for r in caplog.records if f"fast path {path} " in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert path in fastpaths.failed()
    assert fastpaths.FAST_PATHS[path].replaces in lines[0]


def test_a_failing_first_direct_update_is_undone_and_optimizer_step_takes_over(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_binder(optimizer: Any, group: Any, p: torch.Tensor, state: Any) -> Callable:
        def update() -> None:
            state["step"].add_(1)  # changed before the kernel raised: must be put back
            p.detach().add_(1.0)
            raise TypeError("unexpected keyword argument 'lr'")

        return update

    def run(direct: bool) -> torch.nn.Parameter:
        p = torch.nn.Parameter(torch.ones(50))
        optimizer = torch.optim.Adam([p], lr=0.01, fused=True)
        step = DirectStep(optimizer) if direct else optimizer.step
        for k in range(4):
            p.grad = torch.full_like(p, float(k + 1))
            step()
        return p

    expected = run(direct=False)
    monkeypatch.setitem(BINDERS, torch.optim.Adam, broken_binder)
    with caplog.at_level(logging.WARNING, logger="hptune.fastpaths"):
        got = run(direct=True)
    # optimizer.step() made every update, from state restored after the failed one.
    assert torch.equal(got, expected)
    assert list(fastpaths.failed()) == ["direct_step"]
    assert "unexpected keyword argument 'lr'" in caplog.text


@pytest.mark.parametrize(
    ("env", "setting", "on"),
    [("", "auto", True), ("", "off", False), ("off", "auto", False), ("auto", "off", False)],
)
def test_the_environment_switches_fast_paths_off_over_the_study_file(
    monkeypatch: pytest.MonkeyPatch, env: str, setting: str, on: bool
) -> None:
    monkeypatch.setenv(fastpaths.ENV, env)
    # HPTUNE_FAST_PATHS=off (an operator's switch) wins; auto leaves the study file's setting.
    assert fastpaths.enabled(setting) == on


def test_a_bad_environment_value_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fastpaths.ENV, "fast")
    with pytest.raises(HptuneError, match=r"HPTUNE_FAST_PATHS must be auto or off.*'fast'"):
        fastpaths.enabled("auto")


def break_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    for breaker, *_ in BREAKS.values():
        breaker(monkeypatch)


def test_with_every_private_symbol_broken_the_flagship_study_runs_to_the_end(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    break_everything(monkeypatch)
    trials = []
    # The flagship study file on small data, 1 epoch per trial: MLP trials and a CNN trial.
    for family, n_trials in (("mlp", 3), ("cnn", 1)):
        config = load_study_file(
            FLAGSHIP,
            ["data.dataset=mnist", f"n_trials={n_trials}", "train.epochs=1", "timeout=null",
             "train.device=cpu", "search_space.batch_size.choices=[32]",
             f"search_space.family.choices=[{family}]"],
            study_name=f"fashion_{family}",
        )  # fmt: skip
        with caplog.at_level(logging.WARNING, logger="hptune.fastpaths"):
            result = hptune.optimize(config)
        # Every trial completed (none failed on a broken symbol), and the study ended: its
        # best model logged and evaluated on the test set.
        assert [t.state.name for t in result.study.get_trials()] == ["COMPLETE"] * n_trials
        client = MlflowClient(result.tracking_uri)
        trials += [client.get_run(t.user_attrs[RUN_ID_ATTR]) for t in result.study.trials]
    # Each fast path that calls a broken symbol said so, once.
    used = {"direct_step", "manual_backprop", "channels_last_max_pool", "cpu_bf16_detection"}
    assert used <= set(fastpaths.failed())
    for path in used:
        assert caplog.text.count(f"fast path {path} ") == 1
    # The trials' runs list the fast paths they used: public-API ones only.
    for run in trials:
        used_here = set(run.data.tags[fastpaths.TAG].split(","))
        assert used_here <= {"flat_steps", "fused_optimizer", "mask_dropout", "none"}


def test_off_trains_plain_pytorch_and_auto_tags_what_it_used(mnist_dir: Path) -> None:
    splits = small_splits()
    for setting, expected in (
        ("off", "none"),
        (
            "auto",
            "cpu_bf16_detection,direct_step,flat_steps,fused_optimizer,manual_backprop,"
            "mask_dropout",
        ),
    ):
        fastpaths.start_trial()
        seed_everything(0)
        model = build_model(MLP, splits.input_shape, 10)
        train(model, splits, TrainConfig(epochs=1, fast_paths=setting), 0)  # type: ignore[arg-type]
        # off: model(x), loss.backward(), optimizer.step() and nn.Dropout, nothing of hptune's.
        assert fastpaths.trial_tags() == {fastpaths.TAG: expected}
