"""Field rules for registration and admin input, each failure an `InvalidArgumentError`.

The rules themselves live in `tidepool.runtime.rules`, shared with every client;
this module names the request field in the error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from registry.errors import InvalidArgumentError
from tidepool.runtime.rules import (
    CAPACITY_MAX,
    LABEL_KEY_RULE,
    LABEL_MAX_LEN,
    LABEL_VALUE_RULE,
    MAX_LABELS,
    WEIGHT_MAX,
    RuleError,
    check_capacity,
    check_instance_id,
    check_label_key,
    check_label_value,
    check_lang,
    check_name,
    check_weight,
    is_label_key,
    is_label_value,
    quote,
)

T = TypeVar("T")

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


def _field(check: Callable[[T], T], value: T, field: str) -> T:
    try:
        return check(value)
    except RuleError as exc:
        raise InvalidArgumentError(field, str(exc)) from None


def validate_name(value: str, field: str) -> str:
    """Check a service, alias or tenant name (a DNS label) and return it."""
    return _field(check_name, value, field)


def validate_instance_id(value: str, field: str = "instance_id") -> str:
    """Check an instance id and return it."""
    return _field(check_instance_id, value, field)


def validate_lang(value: str, field: str = "lang") -> str:
    """Check a language code such as `zh` or `en` and return it."""
    return _field(check_lang, value, field)


def validate_weight(value: int, field: str = "weight") -> int:
    """Check a static weight; 0 is allowed and means "registered but sent no traffic"."""
    return _field(check_weight, value, field)


def validate_capacity(value: int, field: str = "capacity") -> int:
    """Check a capacity in concurrent slots; an engine always has at least one."""
    return _field(check_capacity, value, field)


def validate_label_key(key: str, field: str) -> str:
    """Check a label key; the message names the key because `field` is the whole map."""
    return _field(check_label_key, key, field)


def validate_label_value(value: str, field: str) -> str:
    """Check a label value; `field` should already name its key, like `labels["gpu"]`."""
    return _field(check_label_value, value, field)


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
