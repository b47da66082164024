"""Field rules for registration and admin input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.errors import InvalidArgumentError
from registry.validation import (
    CAPACITY_MAX,
    MAX_LABELS,
    WEIGHT_MAX,
    quote,
    validate_capacity,
    validate_instance_id,
    validate_label_key,
    validate_label_value,
    validate_labels,
    validate_lang,
    validate_name,
    validate_weight,
)

LABEL_VALUES = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?", fullmatch=True)
LABEL_KEYS = st.from_regex(r"[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?", fullmatch=True)


def _message(excinfo: pytest.ExceptionInfo[InvalidArgumentError]) -> str:
    return str(excinfo.value)


@pytest.mark.parametrize("name", ["a", "zh-public", "en-acme-2", "0", "a" * 63])
def test_accepts_dns_label_names(name: str) -> None:
    assert validate_name(name, "alias") == name


@pytest.mark.parametrize(
    "name",
    ["", "-zh", "zh-", "Zh", "zh_public", "zh.public", "a" * 64, "zh\n", "zh public", "ζ"],
)
def test_rejects_names_that_are_not_dns_labels(name: str) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        validate_name(name, "alias")
    assert excinfo.value.field == "alias"
    assert _message(excinfo).startswith("alias: must be 1 to 63 characters of a-z, 0-9 and '-'")
    assert f"got {quote(name)}" in _message(excinfo)


@pytest.mark.parametrize("value", ["engine-1", "A.b_c-9", "x" * 128])
def test_accepts_instance_ids(value: str) -> None:
    assert validate_instance_id(value) == value


@pytest.mark.parametrize("value", ["", "-a", ".a", "a/b", "a b", "x" * 129, "a\n"])
def test_rejects_malformed_instance_ids(value: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^instance_id: must be 1 to 128 characters"):
        validate_instance_id(value)


@pytest.mark.parametrize("value", ["zh", "en", "abcdefgh"])
def test_accepts_language_codes(value: str) -> None:
    assert validate_lang(value) == value


@pytest.mark.parametrize("value", ["", "z", "ZH", "zh-CN", "abcdefghi", "z1"])
def test_rejects_malformed_language_codes(value: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^lang: must be 2 to 8 lowercase letters"):
        validate_lang(value)


@pytest.mark.parametrize("value", [0, 1, WEIGHT_MAX])
def test_accepts_weights_in_range(value: int) -> None:
    assert validate_weight(value) == value


def test_rejects_weight_above_max_with_range_in_message() -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        validate_weight(WEIGHT_MAX + 1)
    assert _message(excinfo) == "weight: must be an integer from 0 to 1000, got 1001"


def test_rejects_negative_weight() -> None:
    with pytest.raises(InvalidArgumentError, match=r"^weight: .* got -1$"):
        validate_weight(-1)


def test_rejects_bool_as_weight() -> None:
    with pytest.raises(InvalidArgumentError, match=r"^weight: .* got True$"):
        validate_weight(True)


@pytest.mark.parametrize("value", [1, CAPACITY_MAX])
def test_accepts_capacities_in_range(value: int) -> None:
    assert validate_capacity(value) == value


@pytest.mark.parametrize("value", [0, CAPACITY_MAX + 1])
def test_rejects_capacity_out_of_range(value: int) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        validate_capacity(value, "spec.capacity")
    assert _message(excinfo) == (f"spec.capacity: must be an integer from 1 to 4096, got {value}")


@pytest.mark.parametrize("key", ["gpu", "tidepool.io/pool", "a_b", "x" * 63])
def test_accepts_label_keys(key: str) -> None:
    assert validate_label_key(key, "labels") == key


@pytest.mark.parametrize("key", ["", "Gpu", "gpu-", "/gpu", "a=b", "a,b", "x" * 64])
def test_rejects_malformed_label_keys(key: str) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        validate_label_key(key, "labels")
    assert _message(excinfo).startswith(f"labels: key {quote(key)} must be 1 to 63 characters")


@pytest.mark.parametrize("value", ["a100", "A100-80G", "v1.2_3", "x" * 63])
def test_accepts_label_values(value: str) -> None:
    assert validate_label_value(value, 'labels["gpu"]') == value


@pytest.mark.parametrize("value", ["", "a,b", "a=b", "a|b", "-a", "a.", "a b", "x" * 64])
def test_rejects_malformed_label_values(value: str) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        validate_label_value(value, 'labels["gpu"]')
    assert _message(excinfo).startswith('labels["gpu"]: must be 1 to 63 characters')


def test_labels_are_returned_as_a_plain_dict_copy() -> None:
    source = {"lang": "zh", "tier": "idc"}
    result = validate_labels(source)
    assert result == source
    assert result is not source
    assert type(result) is dict


def test_rejects_more_than_max_labels() -> None:
    labels = {f"k{i}": "v" for i in range(MAX_LABELS + 1)}
    with pytest.raises(InvalidArgumentError) as excinfo:
        validate_labels(labels)
    assert _message(excinfo) == "labels: must have at most 32 entries, got 33"


def test_accepts_exactly_max_labels() -> None:
    labels = {f"k{i}": "v" for i in range(MAX_LABELS)}
    assert validate_labels(labels) == labels


def test_bad_label_key_error_names_the_key() -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        validate_labels({"Bad Key": "v"})
    assert excinfo.value.field == "labels"
    assert _message(excinfo).startswith('labels: key "Bad Key" must be')


def test_bad_label_value_error_names_the_key_in_the_field() -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        validate_labels({"gpu": "a100,h100"}, "spec.labels")
    assert excinfo.value.field == 'spec.labels["gpu"]'
    assert 'got "a100,h100"' in _message(excinfo)


def test_quote_escapes_control_characters_and_caps_length() -> None:
    assert quote("a\nb") == '"a\\nb"'
    long = quote("x" * 500)
    assert len(long) < 100
    assert long.endswith('..."')


@given(st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=MAX_LABELS))
def test_accepts_every_well_formed_label_map(labels: dict[str, str]) -> None:
    assert validate_labels(labels) == labels


@given(
    key=LABEL_KEYS,
    prefix=st.text(max_size=10),
    meta=st.sampled_from([",", "=", "|"]),
    suffix=st.text(max_size=10),
)
def test_never_accepts_a_label_value_containing_selector_metacharacters(
    key: str, prefix: str, meta: str, suffix: str
) -> None:
    with pytest.raises(InvalidArgumentError):
        validate_labels({key: prefix + meta + suffix})
