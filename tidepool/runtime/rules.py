"""The field rules server and clients share: names, ids, languages, tiers, weights, labels.

One place, so the registry that enforces a rule and the SDK, router, ctl and
scheduler that check input early can never disagree. A broken rule raises
`RuleError` carrying the rule's text; each caller names its own field (the
registry turns it into INVALID_ARGUMENT, the ctl into one line for the operator).
"""

from __future__ import annotations

import json
import re
from typing import Literal

WEIGHT_MAX = 1000
CAPACITY_MAX = 4096
MAX_LABELS = 32
LABEL_MAX_LEN = 63
Lang = Literal["zh", "en"]
Tier = Literal["idc", "cvm", "serverless"]
LANGS: tuple[Lang, ...] = ("zh", "en")
"""The languages the engines serve today (each is a model)."""
TIERS: tuple[Tier, ...] = ("idc", "cvm", "serverless")
"""Capacity tiers, cheapest to add last: idc is the fixed fleet."""
POOL_LABEL = "pool"
"""The label that puts an instance in a pool (an alias's rule is `pool=NAME`)."""
METRICS_PORT_LABEL = "metrics_port"
"""The label an engine publishes its metrics port under (the Consul catalog's
`tidepool-engine-metrics` service is built from it)."""

# Patterns are used with fullmatch: `$` alone would also accept a trailing "\n".
NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
LANG = re.compile(r"[a-z]{2,8}")
LABEL_KEY = re.compile(r"[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?")
# No `,`, `=` or `|` can appear, so a label value can always be written in a selector.
LABEL_VALUE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")

NAME_RULE = "must be 1 to 63 characters of a-z, 0-9 and '-', starting and ending with a-z or 0-9"
INSTANCE_ID_RULE = (
    "must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-',"
    " starting with a letter or digit"
)
LANG_RULE = "must be 2 to 8 lowercase letters a-z"
LABEL_KEY_RULE = (
    "must be 1 to 63 characters of a-z, 0-9, '.', '_', '/' and '-',"
    " starting and ending with a-z or 0-9"
)
LABEL_VALUE_RULE = (
    "must be 1 to 63 characters of A-Z, a-z, 0-9, '.', '_' and '-',"
    " starting and ending with a letter or digit"
)

# Rejected input is echoed back to the caller and into logs; cap it so a megabyte
# of garbage does not become a megabyte of error message.
_QUOTE_LIMIT = 80


class RuleError(ValueError):
    """A value broke a rule; the message is the rule and the value, without a field name."""


def quote(value: str) -> str:
    """Quote `value` for an error message: escaped, ASCII-only and length-capped."""
    # json escaping keeps newlines and look-alike Unicode visible instead of forging log lines.
    shown = json.dumps(value[:_QUOTE_LIMIT])
    return shown if len(value) <= _QUOTE_LIMIT else shown[:-1] + '..."'


def shown(value: object) -> str:
    return quote(value) if isinstance(value, str) else type(value).__name__


def check_pattern(pattern: re.Pattern[str], value: str, rule: str) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise RuleError(f"{rule}, got {shown(value)}")
    return value


def check_int(value: int, low: int, high: int) -> int:
    # bool is an int subclass; `weight=True` is a caller bug, not a weight of 1.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        got = value if isinstance(value, int) and not isinstance(value, bool) else repr(value)
        raise RuleError(f"must be an integer from {low} to {high}, got {got}")
    return value


def check_name(value: str) -> str:
    """A service, alias or tenant name (a DNS label)."""
    return check_pattern(NAME, value, NAME_RULE)


def check_instance_id(value: str) -> str:
    return check_pattern(INSTANCE_ID, value, INSTANCE_ID_RULE)


def check_lang(value: str) -> str:
    """A language code such as `zh` or `en`."""
    return check_pattern(LANG, value, LANG_RULE)


def check_weight(value: int) -> int:
    """A static weight; 0 is allowed and means "registered but sent no traffic"."""
    return check_int(value, 0, WEIGHT_MAX)


def check_capacity(value: int) -> int:
    """Concurrent slots; an engine always has at least one."""
    return check_int(value, 1, CAPACITY_MAX)


def is_label_key(key: str) -> bool:
    return isinstance(key, str) and LABEL_KEY.fullmatch(key) is not None


def is_label_value(value: str) -> bool:
    return isinstance(value, str) and LABEL_VALUE.fullmatch(value) is not None


def check_label_key(key: str) -> str:
    if not is_label_key(key):
        raise RuleError(f"key {shown(key)} {LABEL_KEY_RULE}")
    return key


def check_label_value(value: str) -> str:
    return check_pattern(LABEL_VALUE, value, LABEL_VALUE_RULE)
