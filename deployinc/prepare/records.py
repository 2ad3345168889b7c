"""What a prepare pass did (:class:`PassRecord`), apart from the passes so that ``import deployinc.prepare`` needs
no torch (:mod:`deployinc.prepare.passes` imports it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PassRecord:
    """What one pass did: the modules it changed, and what it skipped with the reason."""

    name: str
    changed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "changed": self.changed,
            "skipped": [{"module": m, "reason": r} for m, r in self.skipped],
            "notes": self.notes,
        }

    def summary(self) -> str:
        s = f"{self.name}: {len(self.changed)} changed"
        if self.skipped:
            s += f", {len(self.skipped)} skipped"
        return s
