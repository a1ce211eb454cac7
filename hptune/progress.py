"""Progress on the terminal: one bar for the study's trials, one for the running trial's epochs.

Bars go to stderr and switch themselves off when stderr is not a terminal (tests, CI logs).
"""

from __future__ import annotations

from tqdm.auto import tqdm


class Progress:
    """``enabled=False``: no bars at all (worker processes; the main one shows the study's)."""

    def __init__(self, n_trials: int | None, epochs: int, enabled: bool = True) -> None:
        self.epochs = epochs
        self.disable = None if enabled else True  # None: tqdm decides by the terminal
        self.study_bar = tqdm(total=n_trials, desc="trials", unit="trial", disable=self.disable)
        self.trial_bar: tqdm | None = None

    def trial_started(self, number: int, epochs: int) -> None:
        self.trial_bar = tqdm(
            total=epochs, desc=f"trial {number}", unit="epoch", leave=False, disable=self.disable
        )

    def epoch(self, metrics: dict[str, float]) -> None:
        if self.trial_bar is not None:
            self.trial_bar.set_postfix(
                {k: f"{v:.4g}" for k, v in metrics.items() if k.startswith(("train/", "val/"))},
                refresh=False,
            )
            self.trial_bar.update()

    def trial_ended(self) -> None:
        if self.trial_bar is not None:
            self.trial_bar.close()
            self.trial_bar = None
        self.study_bar.update()

    def show_best(self, best: float | None) -> None:
        """The study's best value so far, beside the trial count."""
        if best is not None:
            self.study_bar.set_postfix(best=f"{best:.4g}", refresh=False)

    def finished(self, count: int, best: float | None) -> None:
        """Trials finished so far (by every worker), as counted in the study's storage."""
        self.show_best(best)
        self.study_bar.update(count - self.study_bar.n)

    def close(self) -> None:
        if self.trial_bar is not None:
            self.trial_bar.close()
        self.study_bar.close()
