"""Match an alias's routing rule (a label selector) against instance labels.

The registry validates and normalises every selector before it stores it, so the
router only needs to read the stored text (`k=a|b,k2=v`): no validation here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A conjunction of `key in values` terms."""

    terms: tuple[tuple[str, frozenset[str]], ...]

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """Read the registry's selector text; an unreadable term matches nothing."""
        terms: list[tuple[str, frozenset[str]]] = []
        for part in text.split(","):
            key, sep, values = part.partition("=")
            if not sep:
                return cls((("", frozenset()),))
            terms.append((key.strip(), frozenset(v.strip() for v in values.split("|"))))
        return cls(tuple(terms))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every term holds for `labels`."""
        for key, values in self.terms:
            value = labels.get(key)
            if value is None or value not in values:
                return False
        return True
