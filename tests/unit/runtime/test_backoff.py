"""Exponential backoff with full jitter: growth, cap, jitter range and reset."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidepool.runtime.backoff import Backoff


def test_ceiling_doubles_from_min_until_max() -> None:
    backoff = Backoff(0.2, 5.0, rng=lambda: 1.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])


def test_full_jitter_draws_from_zero_to_the_ceiling() -> None:
    assert Backoff(1.0, 10.0, rng=lambda: 0.0).next_delay() == 0.0
    halves = Backoff(1.0, 10.0, rng=lambda: 0.5)
    assert [halves.next_delay() for _ in range(3)] == pytest.approx([0.5, 1.0, 2.0])


def test_reset_starts_again_from_min() -> None:
    backoff = Backoff(0.5, 8.0, rng=lambda: 1.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() == pytest.approx(0.5)


def test_custom_factor() -> None:
    backoff = Backoff(1.0, 100.0, factor=3.0, rng=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(4)] == pytest.approx([1.0, 3.0, 9.0, 27.0])


def test_a_long_outage_never_overflows() -> None:
    backoff = Backoff(0.1, 30.0, rng=lambda: 1.0)
    for _ in range(10_000):
        assert backoff.next_delay() <= 30.0


def test_seeded_random_source_replays() -> None:
    first = Backoff(0.2, 5.0, rng=random.Random(7).random)
    second = Backoff(0.2, 5.0, rng=random.Random(7).random)
    assert [first.next_delay() for _ in range(6)] == [second.next_delay() for _ in range(6)]


@given(
    min_s=st.floats(0.001, 10),
    spread=st.floats(1, 100),
    draws=st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=30),
)
def test_every_delay_lies_within_zero_and_max(
    min_s: float, spread: float, draws: list[float]
) -> None:
    source = iter(draws)
    backoff = Backoff(min_s, min_s * spread, rng=lambda: next(source))
    for _ in draws:
        assert 0 <= backoff.next_delay() <= min_s * spread


@pytest.mark.parametrize(
    ("min_s", "max_s", "factor", "field"),
    [(0, 1, 2, "min_s"), (2, 1, 2, "max_s"), (1, 2, 0.5, "factor")],
)
def test_rejects_bad_settings_naming_the_field(
    min_s: float, max_s: float, factor: float, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        Backoff(min_s, max_s, factor)
