"""Slow start: ramped weights are bounded, monotone, and pickers know when to refresh."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.endpoint import Endpoint
from router.slow_start import SlowStartConfig, ramp, slow_start_weight

weights = st.integers(min_value=0, max_value=1000)
windows = st.floats(min_value=0.001, max_value=600)
shares = st.floats(min_value=0.001, max_value=1)
aggressions = st.floats(min_value=0.1, max_value=10)
offsets = st.floats(min_value=-10, max_value=700)


def test_ramps_linearly_from_min_share_to_full_weight() -> None:
    assert slow_start_weight(100, 0.0, 0.0, 10.0) == pytest.approx(10.0)
    assert slow_start_weight(100, 0.0, 5.0, 10.0) == pytest.approx(55.0)
    assert slow_start_weight(100, 0.0, 10.0, 10.0) == 100
    assert slow_start_weight(100, 0.0, 99.0, 10.0) == 100


def test_zero_window_weight_zero_and_warm_endpoints_are_left_alone() -> None:
    assert slow_start_weight(100, 5.0, 5.0, 0.0) == 100
    assert slow_start_weight(0, 5.0, 5.0, 10.0) == 0
    assert slow_start_weight(100, -math.inf, 0.0, 10.0) == 100


def test_a_join_time_in_the_future_counts_as_just_joined() -> None:
    assert slow_start_weight(100, 7.0, 5.0, 10.0, min_share=0.2) == pytest.approx(20.0)


@given(weights, windows, shares, aggressions, offsets)
def test_ramped_weight_is_bounded_by_min_share_and_full_weight(
    weight: int, window_s: float, min_share: float, aggression: float, elapsed: float
) -> None:
    ramped = slow_start_weight(weight, 0.0, elapsed, window_s, min_share, aggression)
    assert weight * min_share * (1 - 1e-9) <= ramped <= weight


@given(weights, windows, shares, aggressions, offsets, offsets)
def test_ramped_weight_never_decreases_with_time(
    weight: int, window_s: float, min_share: float, aggression: float, a: float, b: float
) -> None:
    early, late = sorted((a, b))
    assert slow_start_weight(weight, 0.0, early, window_s, min_share, aggression) <= (
        slow_start_weight(weight, 0.0, late, window_s, min_share, aggression)
    )


@given(weights, windows, shares, aggressions, st.floats(min_value=0, max_value=1))
def test_higher_aggression_ramps_no_slower(
    weight: int, window_s: float, min_share: float, aggression: float, fraction: float
) -> None:
    now = fraction * window_s
    linear = slow_start_weight(weight, 0.0, now, window_s, min_share, 1.0)
    eager = slow_start_weight(weight, 0.0, now, window_s, min_share, 1.0 + aggression)
    assert eager >= linear * (1 - 1e-9)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("window_s", -1.0),
        ("window_s", math.inf),
        ("window_s", math.nan),
        ("min_share", 0.0),
        ("min_share", 1.5),
        ("aggression", 0.0),
        ("refresh_s", 0.0),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"router slow_start: {field}"):
        SlowStartConfig(**{field: value})


def _endpoint(name: str, weight: int, joined_at: float) -> Endpoint:
    return Endpoint(name, "10.0.0.1:7000", weight, joined_at=joined_at)


def test_ramp_refreshes_every_refresh_s_and_exactly_when_a_ramp_ends() -> None:
    config = SlowStartConfig(window_s=10.0, min_share=0.5, refresh_s=1.0)
    pool = [_endpoint("warm", 100, -math.inf), _endpoint("new", 100, 0.0)]
    weights, refresh_at = ramp(pool, 2.0, config)
    assert weights[0] == 100
    assert weights[1] == pytest.approx(60.0)
    assert refresh_at == 3.0
    assert ramp(pool, 9.5, config).refresh_at == 10.0
    assert ramp(pool, 10.0, config) == ((100, 100), None)


def test_ramp_is_a_no_op_when_disabled_or_nothing_is_new() -> None:
    pool = [_endpoint("new", 100, 0.0)]
    assert ramp(pool, 0.0, SlowStartConfig(window_s=0.0)) == ((100,), None)
    assert ramp([_endpoint("warm", 7, -math.inf)], 0.0, SlowStartConfig()) == ((7,), None)
    assert ramp([], 0.0, SlowStartConfig()) == ((), None)
