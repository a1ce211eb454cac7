"""The seed experiments' hand-written training loop, the benchmark's reference (``bench.py``).

A per-sample torchvision dataset (``ToTensor`` + ``Normalize``), a shuffling ``DataLoader`` and
a ``.item()`` per batch; as a study, Optuna's PyTorch example pattern with MLflow logging.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hptune import data
from hptune.config import DataConfig, ModelConfig
from hptune.models import build_model


def reference_loaders(
    train_subset: int | None, batch_size: int
) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """The seed experiments' input pipeline: PIL images transformed one sample at a time."""
    from torchvision import datasets, transforms

    root = str(data.locate(DataConfig()))
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
    train_set: torch.utils.data.Dataset = datasets.FashionMNIST(root, True, transform=transform)
    if train_subset:
        train_set = torch.utils.data.Subset(train_set, range(train_subset))
    test_set = datasets.FashionMNIST(root, False, transform=transform)
    return (
        torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True),
        torch.utils.data.DataLoader(test_set, batch_size=1000),
    )


def reference_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loaders: tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader],
    device: torch.device,
) -> float:
    """One epoch written by hand: ``.item()`` per batch, then test accuracy."""
    model.train()
    running = 0.0
    for images, labels in loaders[0]:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        running += loss.item()
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loaders[1]:
            predicted = model(images.to(device)).argmax(1)
            correct += (predicted == labels.to(device)).sum().item()
            total += len(labels)
    return correct / total


def reference_study(
    device: torch.device,
    epochs: int,
    train_subset: int | None,
    tracking_uri: str,
    learning_rates: Sequence[float],
    model_config: ModelConfig,
    batch_size: int,
) -> float:
    """Seconds for a grid of ``model_config``'s model (Adam) over ``learning_rates`` the way
    Optuna's PyTorch example runs it, logging params and each epoch's accuracy to MLflow
    (``tracking_uri``: an existing store)."""
    import mlflow
    import optuna

    mlflow.set_tracking_uri(tracking_uri)
    loaders = reference_loaders(train_subset, batch_size)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_categorical("lr", list(learning_rates))
        model = build_model(model_config, (1, 28, 28), 10).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        with mlflow.start_run():
            mlflow.log_params(trial.params)
            for epoch in range(epochs):
                accuracy = reference_epoch(model, optimizer, loaders, device)
                mlflow.log_metric("accuracy", accuracy, step=epoch)
                trial.report(accuracy, epoch)
        return accuracy

    sampler = optuna.samplers.GridSampler({"lr": list(learning_rates)})
    started = time.perf_counter()
    try:
        optuna.create_study(direction="maximize", sampler=sampler).optimize(
            objective, n_trials=len(learning_rates)
        )
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    return time.perf_counter() - started
