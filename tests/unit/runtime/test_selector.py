"""The one label-selector grammar (registry rules, router matching, ctl filters): every term
must hold."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidepool.runtime.selector import parse_selector as parse_label_selector

# Valid label keys and values: they start and end with a letter or digit.
words = st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,6}[a-z0-9])?", fullmatch=True)
labels = st.dictionaries(words, words, max_size=5)


@given(labels=labels, key=words, value=words)
def test_k_equals_v_matches_iff_the_label_has_that_value(
    labels: dict[str, str], key: str, value: str
) -> None:
    assert parse_label_selector(f"{key}={value}").matches(labels) == (labels.get(key) == value)


@given(labels=labels, key=words, values=st.sets(words, min_size=1, max_size=4))
def test_alternatives_match_iff_the_label_is_one_of_them(
    labels: dict[str, str], key: str, values: set[str]
) -> None:
    selector = parse_label_selector(f"{key}={'|'.join(sorted(values))}")
    assert selector.matches(labels) == (labels.get(key) in values)


@given(labels=labels, terms=st.dictionaries(words, words, min_size=1, max_size=4))
def test_a_selector_matches_iff_every_term_does(
    labels: dict[str, str], terms: dict[str, str]
) -> None:
    text = ",".join(f"{k}={v}" for k, v in terms.items())
    expected = all(labels.get(k) == v for k, v in terms.items())
    assert parse_label_selector(text).matches(labels) == expected


@given(terms=st.dictionaries(words, st.sets(words, min_size=1, max_size=3), min_size=1, max_size=8))
def test_str_parses_back_to_the_same_selector(terms: dict[str, set[str]]) -> None:
    selector = parse_label_selector(",".join(f"{k}={'|'.join(v)}" for k, v in terms.items()))
    assert parse_label_selector(str(selector)) == selector


@given(labels=labels)
def test_a_selector_matches_its_own_labels(labels: dict[str, str]) -> None:
    if labels:
        text = ",".join(f"{k}={v}" for k, v in labels.items())
        assert parse_label_selector(text).matches(labels)


def test_whitespace_around_parts_is_ignored() -> None:
    selector = parse_label_selector(" pool = zh-public | en-public , tier=idc ")
    assert selector.matches({"pool": "en-public", "tier": "idc", "lang": "en"})


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "must have at least one term"),
        ("pool", 'term "pool" must be key=value'),
        ("pool=", 'term "pool=" has an empty value'),
        ("=zh", 'key "" must be'),
        ("pool=a||b", 'term "pool=a||b" has an empty value'),
        ("pool=a=b", 'term "pool=a=b" must be key=value'),
        ("pool=a,,tier=b", "term 2 is empty"),
        ("pool=a,pool=b", 'key "pool" appears in more than one term'),
        ("pool=a|a", 'repeats value "a"'),
    ],
)
def test_malformed_selectors_say_why(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("|", r"\|")):
        parse_label_selector(text)
