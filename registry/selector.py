"""Label selectors at the registry's edge: the shared grammar (`tidepool.runtime.selector`)
with its errors turned into `InvalidArgumentError` naming the request field."""

from __future__ import annotations

from registry.errors import InvalidArgumentError
from tidepool.runtime.rules import RuleError
from tidepool.runtime.selector import Selector, Term
from tidepool.runtime.selector import parse_selector as parse_rule

__all__ = ["Selector", "Term", "parse_selector"]


def parse_selector(text: str, field: str = "selector") -> Selector:
    """Parse `k=a|b,k2=v`; INVALID_ARGUMENT naming `field` and the rule when malformed."""
    try:
        return parse_rule(text)
    except RuleError as exc:
        raise InvalidArgumentError(field, str(exc)) from None
