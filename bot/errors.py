"""User-facing exceptions: each carries a message fit to print as it is."""

from __future__ import annotations


class EvalbotError(Exception):
    """Base of every error evalbot reports to a user instead of a traceback."""


class InputError(EvalbotError):
    """A file that cannot be read or run: syntax error, missing file, bad template (CLI exit code 2).

    Args:
        message: what is wrong, in plain words.
        path: the file it is in, relative to the repository root.
        line: the 1-based line, where there is one.
        row: the 1-based dataset row, where there is one.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None, row: int | None = None):
        self.message = message
        self.path = path
        self.line = line
        self.row = row
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or ""
        if self.line is not None:
            where += f":{self.line}"
        if self.row is not None:
            where += f" (row {self.row})"
        return f"{where}: {self.message}" if where else self.message


class UnknownSuiteError(InputError):
    """A suite named on the command line that `.evalbot.yml` does not define."""


class ModelCallError(EvalbotError):
    """A model call that failed after the retry policy gave up; recorded as an error for its case."""


class BudgetExhausted(EvalbotError):
    """The run's real spend reached its budget: no further model call starts."""


class JudgeError(EvalbotError):
    """A judge answer that could not be parsed or checked; recorded as a grader error for its case."""


class BasePolicyError(InputError):
    """The base branch's `.evalbot.yml` cannot be read or parsed: there is no policy, so nothing passes the
    gate and nobody can approve (never a default config in its place)."""


class FileTooLargeError(InputError):
    """A repository file over the base's `limits.max_file_mb`, found before it is read whole."""

    def __init__(self, path: str, size_bytes: int, max_bytes: int):
        self.size_bytes = size_bytes
        self.max_bytes = max_bytes
        super().__init__(
            f"file is {size_bytes / 1_000_000:.3g} MB ({size_bytes:,} bytes), over the limit of "
            f"{max_bytes / 1_000_000:g} MB (`limits.max_file_mb` in the base branch's .evalbot.yml)",
            path,
        )


class InputErrors(InputError):
    """Every problem found in the inputs at once, so that one bad file does not hide another's.

    Args:
        errors: the problems, each with its file and line where there is one (at least one).
    """

    def __init__(self, errors: list[InputError]):
        self.errors = sorted_errors([e for error in errors for e in unpack(error)])
        first = self.errors[0]
        super().__init__(first.message, first.path, first.line, first.row)

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)


def unpack(error: InputError) -> list[InputError]:
    """The single problems an InputError stands for (one, or each of an InputErrors)."""
    return list(error.errors) if isinstance(error, InputErrors) else [error]


def sorted_errors(errors: list[InputError]) -> list[InputError]:
    """By file, then line and row; problems with no file first (they concern the whole run)."""
    return sorted(errors, key=lambda e: (e.path or "", e.line or 0, e.row or 0))


class Problem(str):
    """A message that keeps where it is: prints as its text, and names its file and line for an annotation.

    Args:
        text: the message as the report shows it.
        path: the file, relative to the repository root, where there is one.
        line: the 1-based line in `path`, where there is one.
        message: the message without its location (the annotation's text); `text` when None.
    """

    path: str | None
    line: int | None
    message: str

    def __new__(
        cls, text: str, path: str | None = None, line: int | None = None, message: str | None = None
    ) -> Problem:
        problem = super().__new__(cls, text)
        problem.path, problem.line, problem.message = path, line, text if message is None else message
        return problem

    @classmethod
    def of(cls, error: InputError) -> Problem:
        return cls(str(error), error.path, error.line, error.message)


class ConfigError(EvalbotError):
    """A setting that cannot be used as given (a secret too short to sign with, a missing URL)."""
