"""Attempt timeouts learned from observed latencies (pure)."""

from __future__ import annotations

import pytest

from router.attempt_timeout import (
    AttemptTimeoutConfig,
    AttemptTimeouts,
    bucket_of,
    bucket_top_s,
)

CONFIG = AttemptTimeoutConfig(margin=3.0, min_s=0.1, max_s=5.0, min_samples=10, window_s=10)


def _fed(latencies: dict[str, list[float]], now: float = 0.0) -> AttemptTimeouts:
    timeouts = AttemptTimeouts(CONFIG)
    for engine, values in latencies.items():
        for value in values:
            timeouts.observe(engine, value, now)
    return timeouts


@pytest.mark.parametrize("latency_s", [0.0001, 0.001, 0.05, 0.3, 7.0, 500.0])
def test_a_bucket_top_never_underestimates_by_more_than_one_step(latency_s: float) -> None:
    top = bucket_top_s(bucket_of(latency_s))
    assert top >= min(latency_s, bucket_top_s(bucket_of(1e9)))
    assert top <= max(latency_s * 1.2, 0.0005)


def test_the_timeout_is_the_high_percentile_times_the_margin() -> None:
    timeouts = _fed({"e-1": [0.05] * 99 + [0.08]})
    assert timeouts.timeout_s("e-1", 0.0) == pytest.approx(0.05 * 3, rel=0.2)


def test_a_slow_engine_gets_a_longer_timeout_than_a_fast_one() -> None:
    timeouts = _fed({"fast": [0.02] * 50, "slow": [0.4] * 50})
    assert timeouts.timeout_s("slow", 0.0) > 5 * timeouts.timeout_s("fast", 0.0)


def test_floor_and_ceiling_hold() -> None:
    timeouts = _fed({"tiny": [0.001] * 50, "huge": [4.0] * 50})
    assert timeouts.timeout_s("tiny", 0.0) == CONFIG.min_s
    assert timeouts.timeout_s("huge", 0.0) == CONFIG.max_s


def test_an_engine_with_few_samples_uses_the_figure_of_all_engines() -> None:
    timeouts = _fed({"old": [0.1] * 50, "new": [0.1]})
    assert timeouts.timeout_s("new", 0.0) == pytest.approx(timeouts.timeout_s("old", 0.0))


def test_with_nothing_observed_an_attempt_may_wait_the_ceiling() -> None:
    assert AttemptTimeouts(CONFIG).timeout_s("e-1", 0.0) == CONFIG.max_s


def test_old_samples_are_forgotten_after_two_windows() -> None:
    timeouts = _fed({"e-1": [1.0] * 50})
    for _ in range(50):
        timeouts.observe("e-1", 0.05, 25.0)
    assert timeouts.timeout_s("e-1", 25.0) == pytest.approx(0.15, rel=0.2)


def test_the_figure_is_cached_for_refresh_s() -> None:
    timeouts = _fed({"e-1": [0.05] * 50})
    first = timeouts.timeout_s("e-1", 0.0)
    for _ in range(500):
        timeouts.observe("e-1", 1.0, 0.5)
    assert timeouts.timeout_s("e-1", 0.5) == first
    assert timeouts.timeout_s("e-1", 1.5) > first


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"percentile": 100.0}, "percentile"),
        ({"margin": 0.5}, "margin"),
        ({"min_s": 2.0, "max_s": 1.0}, "min_s <= max_s"),
    ],
)
def test_bad_settings_name_the_rule(changes: dict[str, float], rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        AttemptTimeoutConfig(**changes)  # type: ignore[arg-type]
