"""Problem records and the report that collects them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One finding. ``severity`` "error" fails verify (exit 1); "info" is reported only."""

    kind: str
    object: str
    location: str
    message: str
    severity: str = "error"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.kind}: {self.object}: {self.message} [{self.location}]"


#: one image's problems and stats, as kept until they join the report: a Report per image held
#: 10,000 sets, lists and dicts at once (~10 MiB)
Findings = tuple[tuple[Problem, ...], tuple[tuple[str, int], ...]]


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    #: the problems already in :attr:`problems`, so a large root's report is not searched
    #: from the start for every new problem (thousands of info lines)
    _seen: set[Problem] = field(default_factory=set, init=False, repr=False, compare=False)

    def add(self, kind: str, obj: str, location: str, message: str, *, severity: str = "error") -> None:
        problem = Problem(kind, obj, location, message, severity)
        if len(self._seen) != len(self.problems):
            self._seen = set(self.problems)  # the list was given or changed from outside
        if problem not in self._seen:
            self._seen.add(problem)
            self.problems.append(problem)

    def merge(self, problems: tuple[Problem, ...], stats: tuple[tuple[str, int], ...]) -> None:
        """Add another report's :data:`Findings` as if they had been added here, in order (the
        findings of images checked in another process join the main report)."""
        for name, n in stats:
            self.count(name, n)
        for p in problems:
            self.add(p.kind, p.object, p.location, p.message, severity=p.severity)

    def count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def infos(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": [p.to_json() for p in self.errors],
            "info": [p.to_json() for p in self.infos],
            "stats": self.stats,
        }
