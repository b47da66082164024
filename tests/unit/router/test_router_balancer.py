"""Pickers: smooth weighted round robin shares and interleaving, least-loaded, the factory."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.balancer import LeastLoadedPicker, SmoothWrrPicker, make_picker
from router.endpoint import Endpoint
from router.slow_start import SlowStartConfig


def _pool(*weights: int) -> list[Endpoint]:
    return [Endpoint(f"e-{i}", f"10.0.0.{i}:7000", w) for i, w in enumerate(weights)]


def _picks(picker: SmoothWrrPicker | LeastLoadedPicker, count: int) -> list[str]:
    picked = []
    for _ in range(count):
        endpoint = picker.pick()
        assert endpoint is not None
        picked.append(endpoint.id)
    return picked


def _runs(sequence: list[str]) -> Iterator[tuple[str, int]]:
    """(id, length) of each maximal run of the same id."""
    start = 0
    for i in range(1, len(sequence) + 1):
        if i == len(sequence) or sequence[i] != sequence[start]:
            yield sequence[start], i - start
            start = i


weight_vectors = st.lists(st.integers(min_value=1, max_value=1000), min_size=1, max_size=16)
small_weight_vectors = st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=8)


# --- smooth weighted round robin: shares --------------------------------------------


def test_hundred_fifty_fifty_gets_half_quarter_quarter_interleaved() -> None:
    picked = _picks(SmoothWrrPicker(_pool(100, 50, 50)), 10_000)
    assert Counter(picked) == {"e-0": 5000, "e-1": 2500, "e-2": 2500}
    assert picked[:8] == ["e-0", "e-1", "e-2", "e-0"] * 2
    assert max(length for _, length in _runs(picked)) <= 2


@settings(max_examples=60, deadline=None)
@given(weight_vectors)
def test_share_tracks_weight_within_one_percent_over_ten_thousand_picks(
    weights: list[int],
) -> None:
    counts = Counter(_picks(SmoothWrrPicker(_pool(*weights)), 10_000))
    total = sum(weights)
    for i, weight in enumerate(weights):
        assert abs(counts[f"e-{i}"] / 10_000 - weight / total) <= 0.01


@given(small_weight_vectors)
def test_every_full_cycle_gives_each_endpoint_exactly_its_weight(weights: list[int]) -> None:
    picker = SmoothWrrPicker(_pool(*weights))
    expected = {f"e-{i}": w for i, w in enumerate(weights)}
    for _ in range(3):
        assert Counter(_picks(picker, sum(weights))) == expected


# --- smooth weighted round robin: interleaving --------------------------------------


@given(weight_vectors)
def test_no_endpoint_is_ever_ahead_of_its_share_by_a_whole_pick(weights: list[int]) -> None:
    # Counters start at zero and always sum to zero; the one picked is the largest of
    # n values summing to T after the add, so it is at least T/n and stays above -T
    # after the subtraction. count_i(t) = (t*w_i - c_i(t)) / T < t*w_i/T + 1.
    total = sum(weights)
    counts = [0] * len(weights)
    for t, endpoint_id in enumerate(_picks(SmoothWrrPicker(_pool(*weights)), 2000), start=1):
        counts[int(endpoint_id.removeprefix("e-"))] += 1
        assert all(c * total < t * w + total for c, w in zip(counts, weights, strict=True))


@given(st.lists(st.integers(min_value=1, max_value=1000), min_size=2, max_size=12))
def test_runs_stay_within_the_bound_implied_by_the_share_guarantees(weights: list[int]) -> None:
    # With counters in (-T, (n-1)T), count_i lags its share by less than (n-1)^2/n and
    # leads it by less than 1, so a run of k picks of i needs k*R_i/T < 1 + (n-1)^2/n,
    # where R_i is the weight of the others.
    n, total = len(weights), sum(weights)
    for endpoint_id, length in _runs(_picks(SmoothWrrPicker(_pool(*weights)), 3000)):
        others = total - weights[int(endpoint_id.removeprefix("e-"))]
        assert length * others < total * (1 + (n - 1) ** 2 / n)


@given(st.integers(min_value=1, max_value=1000), st.integers(min_value=1, max_value=1000))
def test_two_endpoints_never_run_longer_than_their_weight_ratio(a: int, b: int) -> None:
    limits = {"e-0": math.ceil(a / b), "e-1": math.ceil(b / a)}
    for endpoint_id, length in _runs(_picks(SmoothWrrPicker(_pool(a, b)), 3000)):
        assert length <= limits[endpoint_id]


@given(st.integers(min_value=1, max_value=1000), st.integers(min_value=1, max_value=16))
def test_equal_weights_rotate_strictly_in_snapshot_order(weight: int, n: int) -> None:
    picked = _picks(SmoothWrrPicker(_pool(*[weight] * n)), 3 * n)
    assert picked == [f"e-{i}" for i in range(n)] * 3


# --- smooth weighted round robin: what is never picked ------------------------------


@given(st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=16))
def test_weight_zero_is_never_picked(weights: list[int]) -> None:
    picker = SmoothWrrPicker(_pool(*weights))
    zero = {f"e-{i}" for i, w in enumerate(weights) if w == 0}
    if len(zero) == len(weights):
        assert picker.pick() is None
        return
    assert zero.isdisjoint(_picks(picker, 500))
    assert zero.isdisjoint(e.id for e in picker.endpoints)


@given(weight_vectors, st.data())
def test_exclude_is_respected(weights: list[int], data: st.DataObject) -> None:
    ids = [f"e-{i}" for i in range(len(weights))]
    exclude = frozenset(data.draw(st.sets(st.sampled_from(ids))) | {"not-in-pool"})
    picker = SmoothWrrPicker(_pool(*weights))
    for _ in range(200):
        endpoint = picker.pick(exclude)
        if exclude.issuperset(ids):
            assert endpoint is None
        else:
            assert endpoint is not None
            assert endpoint.id not in exclude


def test_excluding_one_keeps_the_shares_of_the_others() -> None:
    picker = SmoothWrrPicker(_pool(100, 300, 100))
    exclude = frozenset({"e-1"})
    counts = Counter(e.id for e in (picker.pick(exclude) for _ in range(1000)) if e)
    assert counts == {"e-0": 500, "e-2": 500}


def test_empty_pool_picks_nothing() -> None:
    assert SmoothWrrPicker([]).pick() is None
    assert SmoothWrrPicker([]).pick(frozenset({"e-0"})) is None
    assert SmoothWrrPicker(_pool(0, 0)).pick() is None


def test_rejects_duplicate_ids_and_bad_weights() -> None:
    endpoint = _pool(10)[0]
    with pytest.raises(ValueError, match="appears twice"):
        SmoothWrrPicker([endpoint, endpoint])
    with pytest.raises(ValueError, match="weights given"):
        SmoothWrrPicker([endpoint], [1, 2])
    for bad in (-1, math.inf, math.nan):
        with pytest.raises(ValueError, match="weight of"):
            SmoothWrrPicker([endpoint], [bad])


# --- smooth weighted round robin: counters carry over between snapshots -------------


@given(weight_vectors)
def test_rebuilding_from_the_same_snapshot_changes_nothing(weights: list[int]) -> None:
    endpoints = _pool(*weights)
    steady = _picks(SmoothWrrPicker(endpoints), 300)
    picker = SmoothWrrPicker(endpoints)
    rebuilt = []
    for _ in range(300):
        picker = SmoothWrrPicker(endpoints, previous=picker)
        rebuilt += _picks(picker, 1)
    assert rebuilt == steady


def test_a_new_snapshot_does_not_restart_the_sequence() -> None:
    endpoints = _pool(100, 50, 50)
    picker = SmoothWrrPicker(endpoints)
    assert _picks(picker, 1) == ["e-0"]
    # A reset would send the heaviest endpoint a second request in a row.
    picker = SmoothWrrPicker(endpoints, previous=picker)
    assert _picks(picker, 3) == ["e-1", "e-2", "e-0"]


@given(weight_vectors, weight_vectors)
def test_counters_carried_into_a_different_pool_keep_shares(old: list[int], new: list[int]) -> None:
    picker = SmoothWrrPicker(_pool(*old))
    _picks(picker, 37)
    picker = SmoothWrrPicker(_pool(*new), previous=picker)
    counts = Counter(_picks(picker, 10_000))
    for i, weight in enumerate(new):
        assert abs(counts[f"e-{i}"] / 10_000 - weight / sum(new)) <= 0.01


# --- least loaded -------------------------------------------------------------------


def _rng(*values: float) -> Iterator[float]:
    return iter(values)


def test_least_loaded_takes_the_lower_load_per_weight_of_the_two_drawn() -> None:
    endpoints = _pool(100, 100, 200)
    in_flight = {"e-0": 3, "e-1": 1, "e-2": 5}
    draws = _rng(0.0, 0.0, 0.0, 0.9)  # draws e-0 and e-1, then e-0 and e-2
    picker = LeastLoadedPicker(endpoints, in_flight=in_flight, rng=lambda: next(draws))
    assert picker.pick() == endpoints[1]  # 2/100 < 4/100
    assert picker.pick() == endpoints[2]  # 6/200 < 4/100


@given(
    st.integers(min_value=1, max_value=1000),
    st.integers(min_value=1, max_value=1000),
    st.integers(min_value=0, max_value=100),
    st.integers(min_value=0, max_value=100),
    st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_least_loaded_never_takes_the_busier_of_two(
    w0: int, w1: int, load0: int, load1: int, draw: float
) -> None:
    endpoints = _pool(w0, w1)
    picker = LeastLoadedPicker(endpoints, in_flight={"e-0": load0, "e-1": load1}, rng=lambda: draw)
    picked = picker.pick()
    assert picked is not None
    scores = {"e-0": (load0 + 1) / w0, "e-1": (load1 + 1) / w1}
    assert scores[picked.id] <= min(scores.values())


def test_least_loaded_steers_away_from_a_loaded_endpoint() -> None:
    endpoints = _pool(100, 100, 100, 100)
    loads = {"e-0": 50}
    picker = LeastLoadedPicker(
        endpoints, in_flight=lambda i: loads.get(i, 0), rng=random.Random(7).random
    )
    counts = Counter(_picks(picker, 4000))
    # e-0 wins only when drawn twice, which two distinct draws never do.
    assert counts["e-0"] == 0
    assert min(counts[f"e-{i}"] for i in (1, 2, 3)) > 1000


@given(st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=8), st.data())
def test_least_loaded_respects_weight_zero_and_exclude(
    weights: list[int], data: st.DataObject
) -> None:
    ids = [f"e-{i}" for i in range(len(weights))]
    exclude = frozenset(data.draw(st.sets(st.sampled_from(ids))))
    allowed = {i for i, w in zip(ids, weights, strict=True) if w > 0} - exclude
    picker = LeastLoadedPicker(_pool(*weights), in_flight={}, rng=random.Random(1).random)
    for _ in range(50):
        endpoint = picker.pick(exclude)
        assert (endpoint is None) == (not allowed)
        assert endpoint is None or endpoint.id in allowed


def test_least_loaded_with_one_or_no_endpoint() -> None:
    assert LeastLoadedPicker([], in_flight={}).pick() is None
    only = _pool(5)
    assert LeastLoadedPicker(only, in_flight={}).pick() == only[0]


# --- factory ------------------------------------------------------------------------


def test_make_picker_builds_each_kind() -> None:
    endpoints = _pool(10, 20)
    assert isinstance(make_picker("wrr", endpoints, now=0.0), SmoothWrrPicker)
    picker = make_picker("least-loaded", endpoints, now=0.0, in_flight={})
    assert isinstance(picker, LeastLoadedPicker)


def test_make_picker_rejects_an_unknown_kind_and_least_loaded_without_counts() -> None:
    with pytest.raises(ValueError, match="least-loaded needs in_flight"):
        make_picker("least-loaded", _pool(1), now=0.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        make_picker("random", _pool(1), now=0.0)  # type: ignore[arg-type]


def test_make_picker_ramps_new_endpoints_and_says_when_to_refresh() -> None:
    old, new = _pool(100, 100)
    new = Endpoint(new.id, new.address, new.weight, joined_at=10.0)
    config = SlowStartConfig(window_s=10.0, min_share=0.1, refresh_s=0.5)
    picker = make_picker("wrr", [old, new], now=10.0, slow_start=config)
    assert picker.weights[0] == 100
    assert picker.weights[1] == pytest.approx(10.0)
    assert picker.refresh_at == 10.5
    later = make_picker("wrr", [old, new], now=20.0, slow_start=config, previous=picker)
    assert later.weights == (100, 100)
    assert later.refresh_at is None
    assert make_picker("wrr", [old, new], now=10.0, slow_start=None).weights == (100, 100)


def test_a_ramping_endpoint_gets_more_traffic_as_its_ramp_advances() -> None:
    steady, fresh = _pool(100, 100)
    fresh = Endpoint(fresh.id, fresh.address, fresh.weight, joined_at=0.0)
    config = SlowStartConfig(window_s=10.0, min_share=0.1, refresh_s=0.5)
    picker = make_picker("wrr", [steady, fresh], now=0.0, slow_start=config)
    shares = []
    now = 0.0
    while picker.refresh_at is not None:
        counts = Counter(_picks(picker, 1000))
        shares.append(counts["e-1"])
        now = picker.refresh_at
        picker = make_picker("wrr", [steady, fresh], now=now, slow_start=config, previous=picker)
    assert now == 10.0
    assert shares == sorted(shares)
    assert shares[0] <= 1000 * 0.1 / 1.1 + 1
    assert Counter(_picks(picker, 1000))["e-1"] == 500
