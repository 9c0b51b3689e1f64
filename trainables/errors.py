"""Exceptions for mistakes a user can make: each carries a message that names what and where."""

from __future__ import annotations

from dataclasses import dataclass


class MedtuneError(Exception):
    """Base for errors caused by the user's input; the CLI prints them without a traceback."""


class ConfigError(MedtuneError, ValueError):
    """An unknown key or a bad value in a trial config or on the command line."""


class StorageError(MedtuneError):
    """A run folder's storage (an object-store URI) cannot be read or written."""


class WeightsError(MedtuneError):
    """Pretrained weights that cannot be found, read or matched to the model."""


class NonFiniteLossError(MedtuneError, FloatingPointError):
    """The training loss became NaN or infinite; the trial stops as failed."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, with the file and CSV row it comes from."""

    file: str
    message: str
    row: int | None = None  # line number in the CSV file (the header is line 1); 0 = no CSV

    def __str__(self) -> str:
        where = f"{self.file} row {self.row}" if self.row else self.file
        return f"{where}: {self.message}"


class DatasetError(MedtuneError):
    """A dataset that fails validation; lists every problem found, not only the first."""

    max_listed = 50

    def __init__(self, root: str, problems: list[Problem]) -> None:
        self.root = root
        self.problems = list(problems)
        lines = [str(p) for p in self.problems[: self.max_listed]]
        if len(self.problems) > self.max_listed:
            lines.append(f"... and {len(self.problems) - self.max_listed} more")
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(
            f"dataset {root} has {len(self.problems)} {noun}:\n  " + "\n  ".join(lines)
        )
