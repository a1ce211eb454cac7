"""Progress on the terminal: one bar for the study's trials, one for the running trial's epochs.

On a terminal, bars on stderr; the trial's bar shows the objective first, so that an
80-column terminal still shows it. When stderr is not a terminal (a log file, ``nohup``, CI),
one line per finished trial instead: bars there would print nothing until the end.
"""

from __future__ import annotations

import sys
import time
from typing import IO

from tqdm.auto import tqdm

# The trial's bar: the objective before the bar, so that a narrow terminal cuts the bar first.
TRIAL_BAR = "{desc} {n_fmt}/{total_fmt} epochs{postfix} |{bar}| {elapsed}<{remaining}"


class Progress:
    """``enabled=False``: nothing at all (worker processes; the main one shows the study's).

    Args:
        n_trials: trials this run will try (None: until a timeout).
        epochs: epochs per trial, for the trial's bar.
        metric: the objective's metric, shown first on the trial's bar.
        stream: where to write (stderr by default); bars only if it is a terminal.
    """

    def __init__(
        self,
        n_trials: int | None,
        epochs: int,
        enabled: bool = True,
        metric: str = "",
        stream: IO[str] | None = None,
    ) -> None:
        self.epochs = epochs
        self.metric = metric
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.lines = enabled and not _is_terminal(self.stream)
        self.disable = not enabled or self.lines
        self.n_trials = n_trials
        self.done = 0  # trials finished (a disabled bar counts nothing)
        self.best: float | None = None
        self.started = time.monotonic()
        # Trials and epochs are rare events: draw each one. By default tqdm skips updates that
        # come within 0.1 s of the last drawing (and then tunes a step count of its own), so a
        # fast trial's end, and the best value it brings, may never be drawn.
        self.study_bar = tqdm(
            total=n_trials,
            desc="trials",
            unit="trial",
            disable=self.disable,
            file=self.stream,
            mininterval=0,
            miniters=1,
        )
        self.trial_bar: tqdm | None = None

    def trial_started(self, number: int, epochs: int) -> None:
        self.trial_bar = tqdm(
            total=epochs,
            desc=f"trial {number}",
            unit="epoch",
            leave=False,
            disable=self.disable,
            file=self.stream,
            bar_format=TRIAL_BAR,
            mininterval=0,
            miniters=1,
        )

    def epoch(self, metrics: dict[str, float]) -> None:
        if self.trial_bar is None:
            return
        shown = [self.metric, "train/loss"] if self.metric != "train/loss" else [self.metric]
        self.trial_bar.set_postfix(
            {key: f"{metrics[key]:.4g}" for key in shown if key in metrics}, refresh=False
        )
        self.trial_bar.update()

    def trial_ended(
        self, number: int | None = None, outcome: str = "", best: float | None = None
    ) -> None:
        """A trial ended with ``outcome`` (e.g. "complete: val/accuracy 0.8123"); ``best``: the
        study's best value counting this trial (None: unchanged)."""
        if self.trial_bar is not None:
            self.trial_bar.close()
            self.trial_bar = None
        self._set_best(best)
        self._advance(1)
        if self.lines and number is not None:
            self._line(f"trial {number} {outcome}".rstrip())

    def show_best(self, best: float | None) -> None:
        """The study's best value so far, beside the trial count (drawn at once)."""
        self._set_best(best)
        self.study_bar.refresh()

    def finished(self, count: int, best: float | None) -> None:
        """Trials finished so far (by every worker), as counted in the study's storage."""
        new = count - self.done
        self._set_best(best)
        self._advance(new)
        if self.lines and new > 0:
            self._line(f"{new} more trial{'' if new == 1 else 's'} finished")

    def close(self) -> None:
        if self.trial_bar is not None:
            self.trial_bar.close()
        self.study_bar.close()

    def _set_best(self, best: float | None) -> None:
        if best is not None:
            self.best = best
            self.study_bar.set_postfix(best=f"{best:.4g}", refresh=False)

    def _advance(self, count: int) -> None:
        if count <= 0:
            return
        self.done += count
        bar = self.study_bar
        if self.disable:
            return
        if bar.total is not None and bar.n + count >= bar.total:
            # The last step: ``close`` draws the bar's final line, once (drawn here too, the
            # final line would appear twice wherever a carriage return does not go back).
            bar.n += count
        else:
            bar.update(count)

    def _line(self, text: str) -> None:
        """One line: what happened, the best so far, how far the study is."""
        total = self.n_trials
        count = f"{self.done}/{total}" if total is not None else str(self.done)
        best = f"; best {self.best:.4g}" if self.best is not None else ""
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.monotonic() - self.started))
        print(f"{text}{best} [{count} trials, {elapsed}]", file=self.stream, flush=True)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
