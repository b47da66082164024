"""Per-caller token buckets."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.ratelimit import KeyedRateLimiter


def test_allows_a_burst_then_refuses() -> None:
    limiter = KeyedRateLimiter(rate_per_s=1.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]


def test_refills_at_the_configured_rate() -> None:
    limiter = KeyedRateLimiter(rate_per_s=2.0, burst=1)
    assert limiter.allow("a", 0.0)
    assert not limiter.allow("a", 0.25)
    assert limiter.allow("a", 0.5)


def test_refill_never_exceeds_burst() -> None:
    limiter = KeyedRateLimiter(rate_per_s=100.0, burst=2)
    limiter.allow("a", 0.0)
    assert [limiter.allow("a", 1000.0) for _ in range(3)] == [True, True, False]


def test_keys_have_independent_buckets() -> None:
    limiter = KeyedRateLimiter(rate_per_s=1.0, burst=1)
    assert limiter.allow("a", 0.0)
    assert not limiter.allow("a", 0.0)
    assert limiter.allow("b", 0.0)


def test_clock_stepping_backwards_mints_no_tokens() -> None:
    limiter = KeyedRateLimiter(rate_per_s=1.0, burst=1)
    assert limiter.allow("a", 100.0)
    assert not limiter.allow("a", 50.0)
    # Time lost going backwards is not credited twice when the clock catches up.
    assert not limiter.allow("a", 100.5)
    assert limiter.allow("a", 101.0)


def test_memory_stays_bounded_by_max_keys() -> None:
    limiter = KeyedRateLimiter(rate_per_s=1.0, burst=1, max_keys=3)
    for i in range(100):
        limiter.allow(f"k{i}", 0.0)
    assert len(limiter) == 3


def test_evicts_least_recently_used_key() -> None:
    limiter = KeyedRateLimiter(rate_per_s=1.0, burst=1, max_keys=2)
    assert limiter.allow("a", 0.0)
    assert limiter.allow("b", 0.0)
    assert not limiter.allow("a", 0.0)  # touches "a", so "b" is now the oldest
    assert limiter.allow("c", 0.0)  # evicts "b"
    assert not limiter.allow("a", 0.0)  # "a" kept its empty bucket
    assert limiter.allow("b", 0.0)  # "b" came back with a fresh bucket


@pytest.mark.parametrize("rate", [0.0, -1.0, math.inf, math.nan, True])
def test_rejects_invalid_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        KeyedRateLimiter(rate_per_s=rate, burst=1)


@pytest.mark.parametrize("burst", [0, -1, True])
def test_rejects_invalid_burst(burst: int) -> None:
    with pytest.raises(ValueError, match="burst"):
        KeyedRateLimiter(rate_per_s=1.0, burst=burst)


@pytest.mark.parametrize("max_keys", [0, -5, False])
def test_rejects_invalid_max_keys(max_keys: int) -> None:
    with pytest.raises(ValueError, match="max_keys"):
        KeyedRateLimiter(rate_per_s=1.0, burst=1, max_keys=max_keys)


@given(
    rate=st.floats(min_value=0.01, max_value=1000.0),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=200),
)
def test_never_allows_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float]
) -> None:
    limiter = KeyedRateLimiter(rate_per_s=rate, burst=burst)
    now = 0.0
    allowed_at: list[float] = []
    for gap in gaps:
        now += gap
        if limiter.allow("caller", now):
            allowed_at.append(now)
    # Every window [allowed_at[i], allowed_at[j]] holds j - i + 1 allowed requests.
    for i, start in enumerate(allowed_at):
        for j in range(i, len(allowed_at)):
            elapsed = allowed_at[j] - start
            assert j - i + 1 <= burst + rate * elapsed + 1e-6
