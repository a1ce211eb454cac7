"""hptune: hyperparameter studies of PyTorch models with Optuna, tracked in MLflow.

The public API is small: load a study file (with overrides), then optimize it::

    import hptune
    config = hptune.load_study_file("studies/fashion.yaml", ["train.epochs=2"])
    result = hptune.optimize(config)

Heavy modules (torch, optuna, mlflow) load only when ``optimize`` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hptune.config import StudyConfig
from hptune.errors import ConfigError, DataError, HptuneError, StudyConflictError
from hptune.studyfile import load_study_file, validate_config

if TYPE_CHECKING:
    from hptune.study import StudyResult

__all__ = [
    "ConfigError",
    "DataError",
    "HptuneError",
    "StudyConfig",
    "StudyConflictError",
    "StudyResult",
    "load_study_file",
    "optimize",
    "validate_config",
]


def optimize(config: StudyConfig) -> StudyResult:
    """Run ``config.n_trials`` more trials of the study (see ``hptune.study.optimize``)."""
    from hptune.environment import restored_environment

    with restored_environment():  # importing mlflow, the first time, edits os.environ too
        from hptune.study import optimize as run

        return run(config)


def __getattr__(name: str) -> Any:
    if name == "StudyResult":
        from hptune.study import StudyResult

        return StudyResult
    raise AttributeError(f"module 'hptune' has no attribute {name!r}")
