"""Label selectors: parsing, canonical form and matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.errors import InvalidArgumentError
from registry.selector import Selector, Term, parse_selector
from registry.validation import MAX_LABELS

LABEL_VALUES = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?", fullmatch=True)
LABEL_KEYS = st.from_regex(r"[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?", fullmatch=True)
# Small alphabets so generated labels often hit the selector's keys and values.
SMALL_KEYS = st.sampled_from(["lang", "tier", "gpu", "pool"])
SMALL_VALUES = st.sampled_from(["zh", "en", "idc", "cvm", "a100"])

TERMS = st.builds(Term, LABEL_KEYS, st.frozensets(LABEL_VALUES, min_size=1, max_size=4))
SELECTORS = st.lists(TERMS, min_size=1, max_size=6, unique_by=lambda term: term.key).map(
    lambda terms: Selector(tuple(terms))
)
SMALL_SELECTORS = st.lists(
    st.builds(Term, SMALL_KEYS, st.frozensets(SMALL_VALUES, min_size=1, max_size=3)),
    min_size=1,
    max_size=4,
    unique_by=lambda term: term.key,
).map(lambda terms: Selector(tuple(terms)))


def test_parses_single_term() -> None:
    selector = parse_selector("lang=zh")
    assert selector == Selector((Term("lang", frozenset({"zh"})),))


def test_parses_alternatives_and_strips_whitespace() -> None:
    selector = parse_selector("  tier = idc | cvm , lang=zh ")
    assert selector.terms == (
        Term("lang", frozenset({"zh"})),
        Term("tier", frozenset({"idc", "cvm"})),
    )


def test_canonical_form_sorts_keys_and_values() -> None:
    assert str(parse_selector("tier=idc|cvm,lang=zh")) == "lang=zh,tier=cvm|idc"


def test_selectors_with_terms_in_any_order_are_equal() -> None:
    assert parse_selector("a=1,b=2") == parse_selector("b=2,a=1")


def test_matches_when_every_term_holds() -> None:
    selector = parse_selector("lang=zh,tier=idc|cvm")
    assert selector.matches({"lang": "zh", "tier": "cvm", "gpu": "a100"})
    assert not selector.matches({"lang": "en", "tier": "cvm"})
    assert not selector.matches({"lang": "zh"})
    assert not selector.matches({})


@pytest.mark.parametrize("text", ["", "   "])
def test_rejects_empty_selector(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^selector: must have at least one term"):
        parse_selector(text)


@pytest.mark.parametrize("text", ["lang", "lang=zh,tier", "lang==zh", "lang=zh=en"])
def test_rejects_term_without_exactly_one_equals(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"must be key=value or key=a\|b$"):
        parse_selector(text)


def test_error_names_the_offending_term() -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        parse_selector("lang")
    assert str(excinfo.value) == 'selector: term "lang" must be key=value or key=a|b'


@pytest.mark.parametrize("text", ["lang=zh,", ",lang=zh", "lang=zh,,tier=idc"])
def test_rejects_empty_term(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^selector: term \d is empty"):
        parse_selector(text)


@pytest.mark.parametrize("text", ["lang=", "lang=zh|", "lang=|zh", "lang=zh||en", "lang= "])
def test_rejects_empty_value(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^selector: term .* has an empty value$"):
        parse_selector(text)


def test_rejects_duplicate_key() -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        parse_selector("lang=zh,tier=idc,lang=en", field="rule")
    assert str(excinfo.value) == 'rule: key "lang" appears in more than one term'


def test_rejects_repeated_value_in_a_term() -> None:
    with pytest.raises(InvalidArgumentError, match=r'repeats value "zh"$'):
        parse_selector("lang=zh|zh")


@pytest.mark.parametrize("text", ["Lang=zh", "=zh", "la ng=zh", "-lang=zh"])
def test_rejects_malformed_key(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r'^selector: key ".*" must be 1 to 63'):
        parse_selector(text)


@pytest.mark.parametrize("text", ["lang=z h", "lang=-zh", "lang=zh!", "lang=" + "x" * 64])
def test_rejects_malformed_value(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r'^selector: value ".*" in term ".*" must be'):
        parse_selector(text)


def test_rejects_more_than_max_terms() -> None:
    text = ",".join(f"k{i}=v" for i in range(MAX_LABELS + 1))
    with pytest.raises(
        InvalidArgumentError, match=r"^selector: must have at most 32 terms, got 33"
    ):
        parse_selector(text)


def test_accepts_exactly_max_terms() -> None:
    text = ",".join(f"k{i}=v" for i in range(MAX_LABELS))
    assert len(parse_selector(text).terms) == MAX_LABELS


def test_constructing_an_empty_selector_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one term"):
        Selector(())


def test_constructing_a_selector_with_duplicate_keys_is_an_error() -> None:
    term = Term("lang", frozenset({"zh"}))
    with pytest.raises(ValueError, match="repeats key"):
        Selector((term, term))


@pytest.mark.parametrize(
    ("key", "values"),
    [("Lang", frozenset({"zh"})), ("lang", frozenset()), ("lang", frozenset({"a,b"}))],
)
def test_constructing_an_invalid_term_is_an_error(key: str, values: frozenset[str]) -> None:
    with pytest.raises(ValueError, match="Term"):
        Term(key, values)


@given(SELECTORS)
def test_parsing_the_canonical_form_gives_back_the_selector(selector: Selector) -> None:
    assert parse_selector(str(selector)) == selector


@given(SELECTORS)
def test_canonical_form_is_a_fixed_point(selector: Selector) -> None:
    text = str(selector)
    assert str(parse_selector(text)) == text


@given(SMALL_SELECTORS, st.dictionaries(SMALL_KEYS, SMALL_VALUES))
def test_matches_agrees_with_reference_definition(
    selector: Selector, labels: dict[str, str]
) -> None:
    expected = all(
        term.key in labels and labels[term.key] in term.values for term in selector.terms
    )
    assert selector.matches(labels) is expected
