"""What a study prints while it runs: bars on an 80-column terminal, lines in a log file."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from hptune.progress import Progress
from tests.conftest import command_environment, hptune_command, study_yaml

TWO_TRIALS = """name: two
n_trials: 2
data: {dataset: mnist, val_fraction: 0.2}
model: {width: 8, depth: 1}
train: {epochs: 2, batch_size: 32}
pruner: {name: none}
search_space:
  lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
"""


def on_a_terminal(path: Path, columns: int = 80) -> tuple[int, list[str]]:
    """Run the CLI with stderr on a pseudo-terminal ``columns`` wide; return its exit code and
    every state a bar was drawn in (the text between carriage returns and newlines)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    command = hptune_command("optimize", str(path))
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=follower, env=command_environment()
    )
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    code = process.wait(timeout=300)
    os.close(leader)
    text = output.decode(errors="replace").replace("\x1b[A", "")
    return code, [s for line in text.split("\n") for s in line.split("\r") if s.strip()]


@pytest.fixture
def two(tmp_path: Path, mnist_dir: Path) -> Path:
    return study_yaml(tmp_path / "two.yaml", TWO_TRIALS)


def test_bars_on_an_80_column_terminal(two: Path) -> None:
    code, drawn = on_a_terminal(two)
    assert code == 0
    epochs = [s for s in drawn if " epochs," in s]
    assert epochs
    # Every drawn state of a trial's bar fits 80 columns and still shows the objective.
    assert all(len(s) <= 80 and "val/accuracy=" in s for s in epochs), epochs
    # The study's best already counts the trial that just ended.
    (after_first,) = {s for s in drawn if s.startswith("trials:") and "1/2 [" in s}
    assert "best=" in after_first
    # The final state of the study's bar is drawn once.
    assert len([s for s in drawn if s.startswith("trials: 100%")]) == 1
    # MLflow's registration chatter is gone (the summary, on stdout, names the model).
    assert not [s for s in drawn if "registered model" in s or "Created version" in s]


def test_a_log_file_gets_one_line_per_finished_trial(two: Path, tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        started = time.monotonic()
        command = hptune_command("optimize", str(two))
        result = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=stderr, env=command_environment(), text=True
        )
    assert result.returncode == 0, log.read_text()
    assert time.monotonic() - started < 300
    lines = log.read_text().splitlines()
    # No bars (nothing with a carriage return), one line per trial, with the best so far.
    assert not any("\r" in line for line in lines)
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert [line.split()[1] for line in trial_lines] == ["0", "1"]
    assert all("complete: val/accuracy " in line and "; best " in line for line in trial_lines)
    assert " [2/2 trials, " in trial_lines[-1]
    assert "best: trial " in result.stdout
    assert "model: the best trial's, registered as 'two'" in result.stdout
    assert "Successfully registered model" not in log.read_text()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_trial_that_ends_at_once_is_drawn_with_its_best() -> None:
    # tqdm's default skips drawings within 0.1 s of the last one: a trial on small data can end
    # sooner than that, and its count and best were never drawn (the 80-column test failed so).
    stream = Terminal()
    progress = Progress(n_trials=3, epochs=1, metric="val/accuracy", stream=stream)
    for number, best in enumerate([0.5, 0.75]):
        progress.trial_started(number, 1)
        progress.epoch({"val/accuracy": best, "train/loss": 1.0})
        progress.trial_ended(number, "complete", best)
    drawn = stream.getvalue().replace("\r", "\n").splitlines()
    assert any(s.startswith("trials:") and "1/3 [" in s and "best=0.5" in s for s in drawn)
    assert any(s.startswith("trials:") and "2/3 [" in s and "best=0.75" in s for s in drawn)
    progress.close()
