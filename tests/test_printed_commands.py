"""The "continue" and "report" commands ``hptune optimize`` prints work as printed."""

from __future__ import annotations

import shlex
from pathlib import Path

import optuna

from tests.conftest import invoke, study_yaml
from tests.test_bad_input import STUDY  # the same one-trial study


def printed(out: str, label: str) -> list[str]:
    """The arguments of the command printed after ``label:`` (without ``hptune``)."""
    (line,) = [line for line in out.splitlines() if line.startswith(f"{label}: ")]
    words = shlex.split(line.removeprefix(f"{label}: "))
    assert words[0] == "hptune"
    return words[1:]


def test_continue_and_report_commands_carry_the_storage_and_work(
    tmp_path: Path, mnist_dir: Path
) -> None:
    path = study_yaml(tmp_path / "s.yaml", STUDY)
    storage = f"sqlite:///{tmp_path / 'elsewhere' / 'optuna.db'}"
    code, out, err = invoke("optimize", str(path), "--storage", storage, "--study-name", "b")
    assert code == 0, err
    again, report = printed(out, "continue"), printed(out, "report")
    # Both name the storage and the study the run used...
    assert again[-4:] == ["--study-name", "b", "--storage", storage]
    assert report[-4:] == ["--study", "b", "--storage", storage]
    # ...and followed as printed, continue adds a trial to that study, report reports it.
    code, _, err = invoke(*again)
    assert code == 0, err
    study = optuna.load_study(study_name="b", storage=storage)
    assert len(study.trials) == 2
    code, _, err = invoke(*report)
    assert code == 0, err
    assert (tmp_path / "reports" / "b" / "report.html").is_file()
    # The default storage stayed untouched.
    assert not (tmp_path / "mlruns" / "optuna.db").exists()
