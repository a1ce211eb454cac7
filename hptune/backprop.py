"""The forward and backward pass of a plain MLP, written out, for the eager training step.

A small MLP's eager step on a CPU spends as much time in autograd's bookkeeping (recording the
graph, walking it, accumulating each gradient into its ``.grad``) as in the matrix products.
``ManualBackprop`` runs the same operations without autograd: the forward keeps what each
backward needs, and the backward calls the very ATen kernels autograd's formulas call
(``threshold_backward``, ``nll_loss_backward``, ...), writing each weight and bias gradient
straight into its ``.grad`` (``out=``), so nothing is accumulated or zeroed. The gradients are
autograd's bit for bit (``tests/test_backprop.py``, for every activation it takes, with
dropout, in fp32 and bf16) given the same dropout masks, which come from
``hptune.dropout.dropout_mask`` as in every eager step of hptune's. In bf16 on a CPU the forward
products add their bias inside oneDNN's kernel (``onednn_bias``): the same numbers, less work.

Every ATen kernel named here is private (``hptune.fastpaths`` lists them): ``FlatSteps`` runs
this as the ``manual_backprop`` fast path, and falls back to autograd if a kernel is gone or
raises.

It takes ``Flatten -> (Linear -> activation [-> Dropout]) * n -> Linear`` built by
``hptune.models.build_mlp`` with the activations in ``BACKWARD``; anything else (softsign,
softmax, convolutions, ...) keeps autograd (``ManualBackprop.supports``).

Measured on 2 CPU cores (AMD EPYC Zen 5, real Fashion-MNIST, ``python examples/cpu_probes.py
--rounds 6``, one process alternating epochs): B's MLP with flat steps 0.419 -> 0.328 s/epoch in
bf16 and 0.617 -> 0.537 s in fp32, the same validation accuracy to the last digit.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn

from hptune import fastpaths
from hptune.dropout import dropout_mask, plain_dropout

aten = torch.ops.aten
MEAN = 1  # the ``reduction`` argument of the nll_loss kernels


def onednn_bias(weight: torch.Tensor) -> bool:
    """Whether a linear layer's forward may run as oneDNN's matmul with its bias
    (``mkldnn._linear_pointwise``, what inductor calls on CPUs) instead of ``addmm``: bf16 on a
    CPU whose bf16 ``addmm`` is oneDNN's too, and the ``onednn_linear`` fast path on
    (``hptune.fastpaths``: both calls are private). The same kernel then adds the bias before it
    rounds the fp32 sums, where ``addmm`` first copies the broadcast bias into the output and
    adds it as a post-op: the same numbers (NaN and infinities included), one copy fewer. B's
    MLP's first layer 72 -> 57 us per step on 2 Intel Xeon cores. (ReLU is left out of the fused
    kernel: oneDNN's maps NaN to 0, and a NaN must reach the loss to mark a trial diverged.)"""
    return (
        weight.dtype == torch.bfloat16
        and weight.device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and bool(torch.backends.mkldnn.enabled)
        and fastpaths.usable("onednn_linear")
        and fastpaths.call(
            "onednn_linear", lambda: bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), _no
        )
    )


def _no() -> bool:
    return False


def _onednn_linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "none", [], "")


def _addmm_linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    return torch.addmm(layer.bias, x, layer.weight.t())


# grad_input of an activation from (grad_output, its input, its output, the module), as
# autograd's formula for it computes it (torch/csrc/autograd/FunctionsManual, derivatives.yaml).
Backward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, nn.Module], torch.Tensor]
BACKWARD: dict[type[nn.Module], Backward] = {
    nn.ReLU: lambda g, x, y, m: aten.threshold_backward(g, y, 0),
    nn.LeakyReLU: lambda g, x, y, m: aten.leaky_relu_backward(g, x, m.negative_slope, False),
    nn.ELU: lambda g, x, y, m: aten.elu_backward(g, m.alpha, 1, 1, False, x),
    nn.GELU: lambda g, x, y, m: aten.gelu_backward(g, x, approximate=m.approximate),
    nn.Tanh: lambda g, x, y, m: aten.tanh_backward(g, y),
    nn.Sigmoid: lambda g, x, y, m: aten.sigmoid_backward(g, y),
    nn.Softplus: lambda g, x, y, m: aten.softplus_backward(g, x, m.beta, m.threshold),
    nn.Hardsigmoid: lambda g, x, y, m: aten.hardsigmoid_backward(g, x),
    nn.Identity: lambda g, x, y, m: g,
}


def _kind(layer: nn.Module) -> str:
    """L (linear with bias), A (activation), D (dropout), or ? (not taken). In-place modules
    are not taken: the formulas above assume each input survives the forward."""
    if type(layer) is nn.Linear and layer.bias is not None:
        return "L"
    if type(layer) in BACKWARD and not getattr(layer, "inplace", False):
        return "A"
    if plain_dropout(layer):
        return "D"
    return "?"


class ManualBackprop:
    """Loss and gradients of one ``nn.Sequential`` MLP (see the module docstring).

    Every parameter must already have a ``.grad`` of its own shape, contiguous (``FlatSteps``
    makes them views of one buffer); each step overwrites them.
    """

    @staticmethod
    def supports(model: nn.Module) -> bool:
        """Whether ``model`` is ``Flatten -> (Linear -> activation [-> Dropout]) * n -> Linear``
        with activations in ``BACKWARD``, biases, and no in-place modules (exact types: a
        subclass may compute something else)."""
        if type(model) is not nn.Sequential or len(model) < 2:
            return False
        first, *rest = list(model)
        if not (type(first) is nn.Flatten and (first.start_dim, first.end_dim) == (1, -1)):
            return False
        return re.fullmatch(r"(LAD?)*L", "".join(map(_kind, rest))) is not None

    def __init__(self, model: nn.Module) -> None:
        assert self.supports(model), "ManualBackprop takes Flatten, Linear, activation, Dropout"
        # out= into a missing gradient would compute it and drop it.
        assert all(p.grad is not None for p in model.parameters()), "every .grad must exist"
        # Dropout with p=0 is the identity (aten's draws no random numbers for it either).
        self.layers = [
            layer
            for layer in list(model.children())[1:]
            if not (isinstance(layer, nn.Dropout) and layer.p == 0)
        ]
        self.onednn_bias = onednn_bias(next(model.parameters()))
        self.one = torch.ones((), device=next(model.parameters()).device)  # d loss / d loss

    @torch.no_grad()
    def step(
        self, inputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, mean cross-entropy (in fp32, as ``F.cross_entropy(logits.float(), ...)``)
        and backward; the gradients land in the parameters' ``.grad``. Returns (loss, logits).
        """
        x = inputs.reshape(len(inputs), -1)
        saved: list[tuple[torch.Tensor, torch.Tensor]] = []  # what each layer's backward needs
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                if self.onednn_bias:
                    y = fastpaths.call("onednn_linear", _onednn_linear, _addmm_linear, x, layer)
                else:
                    y = _addmm_linear(x, layer)
                saved.append((x, y))
            elif isinstance(layer, nn.Dropout):
                noise = dropout_mask(x, layer.p)
                y = x * noise
                saved.append((noise, y))
            else:
                y = layer(x)
                saved.append((x, y))
            x = y
        logits = x
        log_probs = torch.log_softmax(logits, 1, dtype=torch.float32)  # (casts, then the same)
        loss, total_weight = aten.nll_loss_forward(log_probs, targets, None, MEAN, -100)
        grad = aten.nll_loss_backward(self.one, log_probs, targets, None, MEAN, -100, total_weight)
        grad = aten._log_softmax_backward_data(grad, log_probs, 1, torch.float32)
        grad = grad.to(logits.dtype)
        for index in range(len(self.layers) - 1, -1, -1):
            layer, (x, y) = self.layers[index], saved[index]
            if isinstance(layer, nn.Linear):
                torch.mm(grad.t(), x, out=layer.weight.grad)
                torch.sum(grad, 0, out=layer.bias.grad)
                if index:  # the first layer's input (the images) needs no gradient
                    grad = torch.mm(grad, layer.weight)
            elif isinstance(layer, nn.Dropout):
                grad = grad * x  # x: the scaled mask
            else:
                grad = BACKWARD[type(layer)](grad, x, y, layer)
        return loss, logits
