"""hptune as a library is a guest in its caller's process: importing it and running a study
leave the caller's matplotlib backend and environment variables as they were."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import command_environment, study_yaml
from tests.test_study import SMALL

# A caller (a notebook, a GUI, a script) with its own matplotlib backend, which is not Agg,
# imports hptune and runs a one-trial, one-epoch study in its own process.
CALLER = """
import json, os, sys
import matplotlib
matplotlib.use("svg")
before = dict(os.environ)
import hptune
imported = {"backend": matplotlib.get_backend(), "environ": dict(os.environ)}
config = hptune.load_study_file(sys.argv[1], ["n_trials=1", "train.epochs=1"])
result = hptune.optimize(config)
after = {"backend": matplotlib.get_backend(), "environ": dict(os.environ)}
json.dump({"before": before, "imported": imported, "after": after,
           "trials": len(result.study.trials)}, sys.stdout)
"""


def changed(before: dict[str, str], after: dict[str, str]) -> dict[str, tuple]:
    """Environment variables set, changed or removed: name -> (before, after)."""
    names = before.keys() | after.keys()
    return {n: (before.get(n), after.get(n)) for n in names if before.get(n) != after.get(n)}


def test_importing_and_optimizing_leave_the_callers_backend_and_environment(
    tmp_path: Path, mnist_dir: Path
) -> None:
    path = study_yaml(tmp_path / "small.yaml", SMALL)
    # A caller whose own MLflow set its telemetry session (MLflow edits os.environ when first
    # imported: here, with telemetry off, it removes the variable) before it used hptune.
    env = command_environment(_MLFLOW_TELEMETRY_SESSION_ID="the-callers-session")
    run = subprocess.run(
        [sys.executable, "-c", CALLER, str(path)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["trials"] == 1  # the study ran
    # matplotlib's backend is still the caller's, after the import and after the study.
    assert seen["imported"]["backend"] == "svg"
    assert seen["after"]["backend"] == "svg"
    # Not one environment variable was set, changed or removed.
    assert changed(seen["before"], seen["imported"]["environ"]) == {}
    assert changed(seen["before"], seen["after"]["environ"]) == {}
