"""Field rules for registration and admin input, each failure an `InvalidArgumentError`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from registry.errors import InvalidArgumentError

__all__ = [
    "CAPACITY_MAX",
    "LABEL_KEY_RULE",
    "LABEL_MAX_LEN",
    "LABEL_VALUE_RULE",
    "MAX_LABELS",
    "WEIGHT_MAX",
    "is_label_key",
    "is_label_value",
    "quote",
    "validate_capacity",
    "validate_instance_id",
    "validate_label_key",
    "validate_label_value",
    "validate_labels",
    "validate_lang",
    "validate_name",
    "validate_weight",
]

WEIGHT_MAX = 1000
CAPACITY_MAX = 4096
MAX_LABELS = 32
LABEL_MAX_LEN = 63

# Patterns are used with fullmatch: `$` alone would also accept a trailing "\n".
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_LANG = re.compile(r"[a-z]{2,8}")
_LABEL_KEY = re.compile(r"[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?")
# No `,`, `=` or `|` can appear, so a label value can always be written in a selector.
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")

_NAME_RULE = "must be 1 to 63 characters of a-z, 0-9 and '-', starting and ending with a-z or 0-9"
_INSTANCE_ID_RULE = (
    "must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-',"
    " starting with a letter or digit"
)
_LANG_RULE = "must be 2 to 8 lowercase letters a-z"
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


def quote(value: str) -> str:
    """Quote `value` for an error message: escaped, ASCII-only and length-capped."""
    # json escaping keeps newlines and look-alike Unicode visible instead of forging log lines.
    shown = json.dumps(value[:_QUOTE_LIMIT])
    return shown if len(value) <= _QUOTE_LIMIT else shown[:-1] + '..."'


def _check_pattern(pattern: re.Pattern[str], value: str, field: str, rule: str) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise InvalidArgumentError(field, f"{rule}, got {_shown(value)}")
    return value


def _shown(value: object) -> str:
    return quote(value) if isinstance(value, str) else type(value).__name__


def validate_name(value: str, field: str) -> str:
    """Check a service, alias or tenant name (a DNS label) and return it."""
    return _check_pattern(_NAME, value, field, _NAME_RULE)


def validate_instance_id(value: str, field: str = "instance_id") -> str:
    """Check an instance id and return it."""
    return _check_pattern(_INSTANCE_ID, value, field, _INSTANCE_ID_RULE)


def validate_lang(value: str, field: str = "lang") -> str:
    """Check a language code such as `zh` or `en` and return it."""
    return _check_pattern(_LANG, value, field, _LANG_RULE)


def _check_int(value: int, field: str, low: int, high: int) -> int:
    # bool is an int subclass; `weight=True` is a caller bug, not a weight of 1.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        shown = value if isinstance(value, int) and not isinstance(value, bool) else repr(value)
        raise InvalidArgumentError(field, f"must be an integer from {low} to {high}, got {shown}")
    return value


def validate_weight(value: int, field: str = "weight") -> int:
    """Check a static weight; 0 is allowed and means "registered but sent no traffic"."""
    return _check_int(value, field, 0, WEIGHT_MAX)


def validate_capacity(value: int, field: str = "capacity") -> int:
    """Check a capacity in concurrent slots; an engine always has at least one."""
    return _check_int(value, field, 1, CAPACITY_MAX)


def is_label_key(key: str) -> bool:
    """Whether `key` is a well-formed label key."""
    return _LABEL_KEY.fullmatch(key) is not None


def is_label_value(value: str) -> bool:
    """Whether `value` is a well-formed label value."""
    return _LABEL_VALUE.fullmatch(value) is not None


def validate_label_key(key: str, field: str) -> str:
    """Check a label key; the message names the key because `field` is the whole map."""
    if not isinstance(key, str) or not is_label_key(key):
        raise InvalidArgumentError(field, f"key {_shown(key)} {LABEL_KEY_RULE}")
    return key


def validate_label_value(value: str, field: str) -> str:
    """Check a label value; `field` should already name its key, like `labels["gpu"]`."""
    return _check_pattern(_LABEL_VALUE, value, field, LABEL_VALUE_RULE)


def validate_labels(labels: Mapping[str, str], field: str = "labels") -> dict[str, str]:
    """Check a label map and return a plain dict copy of it."""
    if len(labels) > MAX_LABELS:
        raise InvalidArgumentError(
            field, f"must have at most {MAX_LABELS} entries, got {len(labels)}"
        )
    checked: dict[str, str] = {}
    for key, value in labels.items():
        validate_label_key(key, field)
        # The key is valid by now, so it is safe to splice into the field name.
        checked[key] = validate_label_value(value, f'{field}["{key}"]')
    return checked
