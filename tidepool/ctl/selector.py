"""Client-side label selectors for `ctl instances --selector`: alias selector syntax (pure).

The registry's own selector lives with the server (`registry.selector`), which the
ctl must not import; this is the same grammar, `k=v[,k2=a|b]`, every term must
hold, checked only as far as an operator's typing needs (the registry validates
label keys and values when they are written, so nothing stored can be odd).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_RULE = "terms are k=v or k=a|b, separated by commas"


@dataclass(frozen=True)
class LabelSelector:
    """Label key -> the values it may take; an instance matches when every key does."""

    terms: tuple[tuple[str, frozenset[str]], ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) in values for key, values in self.terms)

    def __str__(self) -> str:
        return ",".join(f"{key}={'|'.join(sorted(values))}" for key, values in self.terms)


def parse_label_selector(text: str) -> LabelSelector:
    """Parse `k=v[,k2=a|b]`; ValueError with a one-line reason when malformed."""
    if not text.strip():
        raise ValueError(f"empty selector ({_RULE})")
    terms: dict[str, frozenset[str]] = {}
    for part in text.split(","):
        key, sep, raw_values = part.strip().partition("=")
        key = key.strip()
        values = [v.strip() for v in raw_values.split("|")]
        if not sep or not key or "=" in raw_values or not all(values):
            raise ValueError(f"bad term {part.strip()!r} ({_RULE})")
        if key in terms:
            raise ValueError(f"key {key!r} appears in more than one term")
        terms[key] = frozenset(values)
    return LabelSelector(tuple(sorted(terms.items())))
