"""The one exception root for problems a user can fix."""

from __future__ import annotations

from collections.abc import Iterable


class HptuneError(Exception):
    """A problem the user can fix: the CLI prints it as one line per problem, exit code 2."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ConfigError(HptuneError):
    """A study file (or an override of it) breaks a rule of the schema."""


class DataError(HptuneError):
    """A data set cannot be found, read or downloaded."""


class StudyConflictError(HptuneError):
    """The stored study does not fit the study file (other search space or direction)."""
