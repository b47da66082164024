"""Label selectors, the routing rules that pick an alias's instances by their labels.

One grammar for everyone: the registry validates and stores them, routers and
the scheduler match instances with them, and `ctl --selector` filters listings.
`k=a|b,k2=v`: every term must hold; a term holds when the label `k` has one of
the values. Parsing raises `RuleError` naming the offending term.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise

from tidepool.runtime.rules import (
    LABEL_KEY_RULE,
    LABEL_VALUE_RULE,
    MAX_LABELS,
    RuleError,
    check_label_key,
    is_label_key,
    is_label_value,
    quote,
)

__all__ = ["Selector", "Term", "parse_selector"]

TERM_RULE = "must be key=value or key=a|b"


@dataclass(frozen=True, slots=True)
class Term:
    """One `key=a|b` clause: the instance's label `key` must be one of `values`."""

    key: str
    values: frozenset[str]

    def __post_init__(self) -> None:
        # Code that builds a Term directly gets the same guarantees as parsed text,
        # so str() of any Term is always parseable again.
        if not is_label_key(self.key):
            raise ValueError(f"Term key {quote(self.key)} {LABEL_KEY_RULE}")
        if not self.values:
            raise ValueError(f"Term {quote(self.key)} must have at least one value")
        for value in self.values:
            if not is_label_value(value):
                raise ValueError(f"Term value {quote(value)} {LABEL_VALUE_RULE}")

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether `labels` has this key with one of the allowed values."""
        value = labels.get(self.key)
        return value is not None and value in self.values

    def __str__(self) -> str:
        return f"{self.key}={'|'.join(sorted(self.values))}"


@dataclass(frozen=True, slots=True)
class Selector:
    """A conjunction of terms; terms are kept sorted by key so equal rules compare equal."""

    terms: tuple[Term, ...]

    def __post_init__(self) -> None:
        if not self.terms:
            # An empty selector would match every instance: never what a routing rule means.
            raise ValueError("Selector must have at least one term")
        ordered = tuple(sorted(self.terms, key=lambda term: term.key))
        for before, after in pairwise(ordered):
            if before.key == after.key:
                raise ValueError(f"Selector repeats key {quote(after.key)}")
        object.__setattr__(self, "terms", ordered)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every term holds for `labels`."""
        return all(term.matches(labels) for term in self.terms)

    def __str__(self) -> str:
        return ",".join(str(term) for term in self.terms)


def parse_selector(text: str) -> Selector:
    """Parse `k=a|b,k2=v` (whitespace around parts ignored) into a `Selector`."""
    if not text.strip():
        raise RuleError(f"must have at least one term ({TERM_RULE})")
    parts = text.split(",")
    if len(parts) > MAX_LABELS:
        raise RuleError(f"must have at most {MAX_LABELS} terms, got {len(parts)}")
    terms: dict[str, Term] = {}
    for position, part in enumerate(parts, start=1):
        term = _parse_term(part.strip(), position)
        if term.key in terms:
            raise RuleError(f"key {quote(term.key)} appears in more than one term")
        terms[term.key] = term
    return Selector(tuple(terms.values()))


def _parse_term(text: str, position: int) -> Term:
    if not text:
        raise RuleError(f"term {position} is empty; terms are separated by single commas")
    if text.count("=") != 1:
        raise RuleError(f"term {quote(text)} {TERM_RULE}")
    raw_key, _, raw_values = text.partition("=")
    key = check_label_key(raw_key.strip())
    values: set[str] = set()
    for raw in raw_values.split("|"):
        value = raw.strip()
        if not value:
            raise RuleError(f"term {quote(text)} has an empty value")
        if not is_label_value(value):
            raise RuleError(f"value {quote(value)} in term {quote(text)} {LABEL_VALUE_RULE}")
        if value in values:
            # Most likely a typo for another value (zh|zh meant zh|en), so say so.
            raise RuleError(f"term {quote(text)} repeats value {quote(value)}")
        values.add(value)
    return Term(key, frozenset(values))
