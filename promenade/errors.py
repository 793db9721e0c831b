"""Problems found in user input, and the exception that carries them.

Every user mistake becomes a :class:`Problem` naming the file and line, the document
(schema + name) and the path inside it. Problems are collected and raised together as
one :class:`PromenadeError`, which the CLI and doit tasks print without a traceback.
"""

from __future__ import annotations

from typing import NamedTuple


class Problem(NamedTuple):
    """One thing wrong with the input (a named tuple: every doit run defines it, and a frozen
    dataclass costs four times as much to define)."""

    message: str
    file: str | None = None
    line: int | None = None
    schema: str | None = None
    name: str | None = None
    path: str | None = None
    severity: str = "error"

    def __str__(self) -> str:
        where = self.file or "<site>"
        if self.line is not None:
            where += f":{self.line}"
        parts = [where]
        if self.schema or self.name:
            parts.append(f"[{self.schema or '?'} {self.name or '?'}]")
        if self.path:
            parts.append(f"at {self.path}")
        prefix = " ".join(parts)
        tag = "" if self.severity == "error" else f"{self.severity}: "
        return f"{prefix}: {tag}{self.message}"


class PromenadeError(Exception):
    """Raised with every problem found; printing it lists them all."""

    def __init__(self, problems: list[Problem] | Problem | str):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        super().__init__(self.report())

    def report(self) -> str:
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} found:"
        if count == 1:
            return str(self.problems[0])
        return "\n".join([head] + [f"  - {p}" for p in self.problems])
