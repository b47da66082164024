"""The latency histogram: percentiles within its precision, exact extremes, lossless merge/JSON."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.histogram import MAX_TRACKABLE_S, Histogram, bucket_bounds, bucket_index

RELATIVE_ERROR = 0.01
"""What the layout promises from 1 µs up (the buckets give < 0.8 %)."""

latencies = st.lists(
    st.floats(min_value=1e-6, max_value=100.0, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=300,
)
percentiles = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)


def histogram_of(values: list[float]) -> Histogram:
    histogram = Histogram()
    for value in values:
        histogram.record(value)
    return histogram


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


@given(latencies, percentiles)
def test_percentile_is_within_one_percent_of_the_exact_value(values: list[float], p: float) -> None:
    exact = nearest_rank(values, p)
    assert histogram_of(values).percentile(p) == pytest.approx(exact, rel=RELATIVE_ERROR, abs=2e-9)


@given(latencies)
def test_count_extremes_and_mean_are_exact(values: list[float]) -> None:
    histogram = histogram_of(values)
    assert histogram.count == len(values)
    assert histogram.percentile(0) == histogram.min == min(values)
    assert histogram.percentile(100) == histogram.max == max(values)
    assert histogram.mean == pytest.approx(sum(values) / len(values))


@given(latencies)
def test_percentiles_never_decrease(values: list[float]) -> None:
    histogram = histogram_of(values)
    points = [histogram.percentile(p) for p in (0, 10, 50, 90, 99, 99.9, 100)]
    assert points == sorted(points)


@given(latencies, latencies)
def test_merge_equals_recording_everything_in_one(left: list[float], right: list[float]) -> None:
    merged = histogram_of(left)
    merged.merge(histogram_of(right))
    together = histogram_of(left + right)
    assert merged.to_dict()["buckets"] == together.to_dict()["buckets"]
    assert (merged.count, merged.min, merged.max) == (together.count, together.min, together.max)
    assert merged.total == pytest.approx(together.total)


@given(latencies)
def test_json_round_trip_keeps_everything(values: list[float]) -> None:
    histogram = histogram_of(values)
    copy = Histogram.from_dict(json.loads(json.dumps(histogram.to_dict())))
    assert copy.to_dict() == histogram.to_dict()
    assert copy.percentile(99) == histogram.percentile(99)


@given(st.integers(min_value=0, max_value=int(MAX_TRACKABLE_S * 1e9)))
def test_every_value_lies_in_its_bucket_and_buckets_are_narrow(ns: int) -> None:
    low, high = bucket_bounds(bucket_index(ns))
    assert low <= ns < high
    assert high - low <= max(1, low / 128)


def test_empty_histogram_reports_nothing_rather_than_zero() -> None:
    histogram = Histogram()
    assert math.isnan(histogram.percentile(50))
    assert math.isnan(histogram.mean)
    assert histogram.to_dict()["min_s"] is None
    assert histogram.summary_ms()["p99"] is None
    assert Histogram.from_dict(histogram.to_dict()).count == 0


def test_merging_an_empty_histogram_changes_nothing() -> None:
    histogram = histogram_of([0.001, 0.002])
    before = histogram.to_dict()
    histogram.merge(Histogram())
    assert histogram.to_dict() == before


def test_negative_and_huge_values_are_clamped_not_lost() -> None:
    histogram = histogram_of([-0.5, 10 * MAX_TRACKABLE_S])
    assert histogram.count == 2
    assert histogram.min == 0.0
    assert histogram.max == MAX_TRACKABLE_S


def test_summary_is_in_milliseconds() -> None:
    summary = histogram_of([0.010] * 99 + [0.500]).summary_ms()
    assert summary["count"] == 100
    assert summary["p50"] == pytest.approx(10.0, rel=RELATIVE_ERROR)
    assert summary["max"] == 500.0


@pytest.mark.parametrize("p", [-1.0, 100.5, math.nan])
def test_percentile_outside_0_to_100_is_refused(p: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        histogram_of([0.001]).percentile(p)


def test_from_dict_refuses_a_foreign_layout_or_inconsistent_counts() -> None:
    data = histogram_of([0.001, 0.002]).to_dict()
    with pytest.raises(ValueError, match="layout"):
        Histogram.from_dict({**data, "sub_bucket_bits": 5})
    with pytest.raises(ValueError, match="add up"):
        Histogram.from_dict({**data, "count": 3})
    with pytest.raises(ValueError, match="out of range"):
        Histogram.from_dict({**data, "buckets": [[10**9, 2]]})
