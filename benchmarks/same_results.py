"""Do two checkouts of hptune give the same study results? Run each study file with both, compare.

    python benchmarks/same_results.py OLD_ROOT NEW_ROOT [--study FILE ...] [--set KEY=VALUE ...]
        [--n-trials N] [--work DIR]

OLD_ROOT and NEW_ROOT are checkouts (e.g. ``git worktree add /tmp/old <rev>``); both run with
this Python, each with its own root first on ``PYTHONPATH``, in fresh folders under ``--work``
(new Optuna and MLflow stores), on the CPU. Each study runs under the study file's name from
``studies/`` of NEW_ROOT (so both run the same file), with the given overrides. Printed per study:
each trial's state, parameters and objective value from both, and whether they match (values to
``--digits`` decimals), then the best trial of each. Exit status 1 if any study differs.

MNIST studies read ``$HPTUNE_DATA_DIR/mnist/``: point it at a copy of MNIST (or, to compare code
rather than accuracy, at Fashion-MNIST's four files under MNIST's folder name).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna


def run(root: Path, study: Path, work: Path, overrides: list[str], n_trials: int | None) -> float:
    work.mkdir(parents=True, exist_ok=False)
    command = [sys.executable, "-m", "hptune", "optimize", str(study), "--device", "cpu"]
    command += [item for key in overrides for item in ("--set", key)]
    if n_trials is not None:
        command += ["--n-trials", str(n_trials)]
    env = {**os.environ, "PYTHONPATH": str(root), "MLFLOW_DISABLE_TELEMETRY": "true"}
    started = time.monotonic()
    with (work / "stderr.log").open("w") as log:
        result = subprocess.run(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        last = (work / "stderr.log").read_text().strip().splitlines()[-1:]
        raise Failed(f"{root} exited with {result.returncode}: {' '.join(last)}")
    return time.monotonic() - started


class Failed(Exception):
    """A checkout's run of a study file did not finish."""


def trials(work: Path) -> tuple[str, list[optuna.trial.FrozenTrial]]:
    storage = f"sqlite:///{work / 'mlruns' / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    return summary.study_name, study.get_trials(deepcopy=False)


def row(trial: optuna.trial.FrozenTrial, digits: int) -> tuple[str, str, str]:
    params = ", ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in sorted(trial.params.items())
    )
    value = "-" if trial.values is None else ", ".join(f"{v:.{digits}f}" for v in trial.values)
    return trial.state.name, params, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--study", action="append", help="a file under studies/ (default: all)")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--n-trials", type=int)
    parser.add_argument("--digits", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("same-results"))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = args.study or sorted(p.name for p in (args.new / "studies").glob("*.yaml"))
    differ = []
    for name in names:
        study = (args.new / "studies" / name).resolve()
        rows, seconds = {}, {}
        try:
            for side, root in (("old", args.old), ("new", args.new)):
                work = args.work.resolve() / side / study.stem
                seconds[side] = run(root.resolve(), study, work, args.overrides, args.n_trials)
                rows[side] = [row(t, args.digits) for t in trials(work)[1]]
        except Failed as error:
            print(f"\n## {name}: FAILED ({error})")
            differ.append(name)
            continue
        same = rows["old"] == rows["new"]
        print(
            f"\n## {name}: {'same' if same else 'DIFFERENT'} "
            f"(old {seconds['old']:.0f} s, new {seconds['new']:.0f} s)"
        )
        for number, (old, new) in enumerate(zip(rows["old"], rows["new"], strict=False)):
            mark = " " if old == new else "*"
            print(
                f"{mark} {number:3d} {old[0]:8s} {old[2]:>8s} {new[2]:>8s}  {old[1]}"
                + ("" if old[1] == new[1] else f"  |  new: {new[1]}")
            )
        if len(rows["old"]) != len(rows["new"]):
            print(f"* trials: old {len(rows['old'])}, new {len(rows['new'])}")
        if not same:
            differ.append(name)
    print(
        f"\n{len(names) - len(differ)} of {len(names)} studies the same"
        + (f"; different: {', '.join(differ)}" if differ else "")
    )
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
