"""Run a small version of the flagship study from Python and print the best trial.

    python examples/quickstart.py

Uses the public API: load a study file with overrides, optimize, read the Optuna study back.
"""

from __future__ import annotations

from pathlib import Path

import hptune

STUDY = Path(__file__).parents[1] / "studies" / "fashion.yaml"


def main() -> None:
    config = hptune.load_study_file(
        STUDY,
        overrides=["n_trials=4", "train.epochs=2", "data.train_subset=5000"],
        study_name="fashion-quickstart",
    )
    result = hptune.optimize(config)
    best = result.study.best_trial
    print(f"best val/accuracy {best.value:.4f} with {best.params}")
    print(f"runs are in MLflow experiment {result.experiment!r} at {result.tracking_uri}")


if __name__ == "__main__":
    main()
