"""Utilisation smoothing: the window's mean, its least-squares trend, and when it is warm."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.smoothing import Series, UtilizationWindow


def test_mean_covers_only_the_last_window() -> None:
    series = Series(window_s=10.0)
    for now in range(21):
        series.add(float(now), 1.0 if now < 10 else 0.0)
    # Samples from 10 to 20 inclusive: the one exactly window_s old stays.
    assert [t for t, _ in series.samples] == [float(t) for t in range(10, 21)]
    assert series.mean() == 0.0


def test_a_single_noisy_sample_moves_the_mean_by_its_share_only() -> None:
    series = Series(window_s=9.0)
    for now in range(10):
        series.add(float(now), 0.5 if now != 5 else 1.5)
    assert series.mean() == pytest.approx(0.6)


def test_slope_of_a_steady_rise_is_its_rate() -> None:
    series = Series(window_s=10.0)
    for now in range(11):
        series.add(100.0 + now, 0.2 + 0.03 * now)
    assert series.slope_per_s() == pytest.approx(0.03)


def test_slope_is_zero_with_fewer_than_three_samples() -> None:
    series = Series(window_s=10.0)
    series.add(0.0, 0.0)
    series.add(1.0, 1.0)
    assert series.slope_per_s() == 0.0


def test_slope_is_zero_when_the_samples_have_no_spread_in_time() -> None:
    series = Series(window_s=10.0)
    for value in (0.1, 0.9, 0.5):
        series.add(5.0, value)
    assert series.slope_per_s() == 0.0


def test_flat_load_has_no_trend() -> None:
    series = Series(window_s=10.0)
    for now in range(11):
        series.add(float(now), 0.7)
    assert series.slope_per_s() == pytest.approx(0.0)


def test_window_is_warm_after_half_a_window_of_samples() -> None:
    window = UtilizationWindow(window_s=10.0)
    assert not window.warm("zh-public")
    for now in range(5):
        window.add("zh-public", float(now), 0.5)
    assert not window.warm("zh-public")
    window.add("zh-public", 5.0, 0.5)
    assert window.warm("zh-public")


def test_pools_are_smoothed_separately() -> None:
    window = UtilizationWindow(window_s=10.0)
    for now in range(6):
        window.add("zh-public", float(now), 0.9)
        window.add("en-public", float(now), 0.1 * now)
    assert window.mean("zh-public") == pytest.approx(0.9)
    assert window.slope_per_s("zh-public") == pytest.approx(0.0)
    assert window.mean("en-public") == pytest.approx(0.25)
    assert window.slope_per_s("en-public") == pytest.approx(0.1)


def test_unknown_pool_reads_as_idle_and_cold() -> None:
    window = UtilizationWindow(window_s=10.0)
    assert window.mean("nope") == 0.0
    assert window.slope_per_s("nope") == 0.0
    assert not window.warm("nope")


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=40),
    window_s=st.floats(1.0, 30.0),
)
def test_mean_lies_within_the_samples_of_the_window(values: list[float], window_s: float) -> None:
    series = Series(window_s)
    for now, value in enumerate(values):
        series.add(float(now), value)
    kept = [v for t, v in series.samples]
    assert all(t >= len(values) - 1 - window_s for t, _ in series.samples)
    assert min(kept) - 1e-9 <= series.mean() <= max(kept) + 1e-9


@settings(max_examples=50, deadline=None)
@given(
    start=st.floats(-1.0, 1.0),
    rate=st.floats(-0.1, 0.1),
    count=st.integers(3, 30),
    interval_s=st.floats(0.1, 5.0),
)
def test_slope_of_any_straight_line_is_its_rate(
    start: float, rate: float, count: int, interval_s: float
) -> None:
    series = Series(window_s=count * interval_s)
    for index in range(count):
        series.add(index * interval_s, start + rate * index * interval_s)
    assert series.slope_per_s() == pytest.approx(rate, abs=1e-9)
