"""Passive ejection (capped share, growing backoff, decay) and panic mode, on fake time."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.endpoint import Endpoint
from router.outlier import OutlierConfig, OutlierDetector, select_candidates

CONFIG = OutlierConfig(
    base_ejection_s=2.0,
    max_ejection_s=60.0,
    multiplier=2.0,
    decay_interval_s=10.0,
    max_ejection_percent=50.0,
    panic_threshold_percent=50.0,
)


def _ids(n: int) -> list[str]:
    return [f"e-{i}" for i in range(n)]


def _detector(n: int = 4, config: OutlierConfig = CONFIG) -> OutlierDetector:
    return OutlierDetector(config, _ids(n))


# --- config -------------------------------------------------------------------------


def test_defaults_are_the_documented_ones() -> None:
    config = OutlierConfig()
    assert (config.base_ejection_s, config.max_ejection_s, config.multiplier) == (2.0, 60.0, 2.0)
    assert config.max_ejection_percent == 50.0
    assert config.panic_threshold_percent == 50.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("base_ejection_s", 0.0),
        ("max_ejection_s", 1.0),
        ("max_ejection_s", math.inf),
        ("multiplier", 0.5),
        ("decay_interval_s", 0.0),
        ("max_ejection_percent", 101.0),
        ("panic_threshold_percent", -1.0),
        ("panic_threshold_percent", math.nan),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"router outlier: {field}"):
        OutlierConfig(**{field: value})


@given(
    st.floats(min_value=0.01, max_value=100),
    st.floats(min_value=1, max_value=1000),
    st.floats(min_value=1, max_value=100),
    st.integers(min_value=1, max_value=10_000),
)
def test_ejection_length_starts_at_base_grows_and_caps(
    base: float, cap_factor: float, multiplier: float, n: int
) -> None:
    config = OutlierConfig(
        base_ejection_s=base, max_ejection_s=base * cap_factor, multiplier=multiplier
    )
    assert config.ejection_s(1) == base
    assert config.ejection_s(n) <= config.ejection_s(n + 1) <= config.max_ejection_s
    saturated = config.ejection_s(config.saturating_ejections)
    if multiplier > 1:
        assert saturated == pytest.approx(config.max_ejection_s)
    else:
        assert saturated == base


# --- ejection -----------------------------------------------------------------------


def test_a_failure_ejects_at_once_for_the_base_time() -> None:
    detector = _detector()
    assert detector.report_failure("e-0", 100.0) is True
    assert detector.is_ejected("e-0", 100.0)
    assert detector.is_ejected("e-0", 101.99)
    assert not detector.is_ejected("e-0", 102.0)
    assert detector.ejected(101.0) == {"e-0"}
    assert detector.next_readmission_at(101.0) == 102.0
    assert detector.next_readmission_at(102.0) is None


def test_repeated_ejections_grow_the_backoff_up_to_the_cap() -> None:
    detector = _detector()
    now, lengths = 0.0, []
    for _ in range(8):
        assert detector.report_failure("e-0", now)
        until = detector.next_readmission_at(now)
        assert until is not None
        lengths.append(until - now)
        now = until  # fails again the moment it is let back
    assert lengths == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_quiet_time_and_successes_decay_the_backoff() -> None:
    detector = _detector()
    for now in (0.0, 2.0, 6.0):  # three ejections in a row: 2, 4, 8 seconds
        assert detector.report_failure("e-0", now)
    assert detector.ejections("e-0") == 3
    detector.report_success("e-0", 14.0 + 9.9)  # readmitted at 14; not a full interval yet
    assert detector.ejections("e-0") == 3
    detector.report_success("e-0", 14.0 + 20.0)  # two intervals: two steps down
    assert detector.ejections("e-0") == 1
    assert detector.report_failure("e-0", 35.0)
    assert detector.next_readmission_at(35.0) == 35.0 + 4.0


def test_decay_forgets_an_endpoint_entirely() -> None:
    detector = _detector()
    detector.report_failure("e-0", 0.0)
    detector.report_success("e-0", 1.0)  # still ejected: nothing decays
    assert detector.ejections("e-0") == 1
    detector.report_success("e-0", 12.0)
    assert detector.ejections("e-0") == 0
    assert detector.report_failure("e-0", 13.0)
    assert detector.next_readmission_at(13.0) == 15.0


def test_already_ejected_or_unknown_endpoints_are_not_ejected_again() -> None:
    detector = _detector()
    assert detector.report_failure("e-0", 0.0)
    assert detector.report_failure("e-0", 1.0) is False  # a late failure does not extend
    assert detector.next_readmission_at(1.0) == 2.0
    assert detector.report_failure("stranger", 1.0) is False


def test_never_ejects_more_than_max_percent() -> None:
    detector = _detector(5)  # 50 % of 5: two at most
    assert detector.report_failure("e-0", 0.0)
    assert detector.report_failure("e-1", 0.0)
    assert detector.report_failure("e-2", 0.0) is False
    assert detector.ejected(0.0) == {"e-0", "e-1"}
    assert detector.report_failure("e-2", 2.0)  # room again once e-0 and e-1 are back


def test_a_single_endpoint_pool_is_never_ejected_at_the_default_share() -> None:
    detector = _detector(1)
    assert detector.report_failure("e-0", 0.0) is False


@given(
    st.integers(min_value=1, max_value=20),
    st.floats(min_value=0, max_value=100),
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=19), st.floats(min_value=0, max_value=5)),
        max_size=200,
    ),
)
def test_ejected_share_never_exceeds_max_percent(
    n: int, percent: float, failures: list[tuple[int, float]]
) -> None:
    detector = _detector(n, OutlierConfig(max_ejection_percent=percent))
    now = 0.0
    for index, gap in failures:
        now += gap
        detector.report_failure(f"e-{index % n}", now)
        assert len(detector.ejected(now)) * 100 <= n * percent


def test_set_pool_forgets_removed_endpoints() -> None:
    detector = _detector(4)
    detector.report_failure("e-0", 0.0)
    detector.report_failure("e-1", 0.0)
    detector.set_pool(["e-1", "e-2", "e-3", "e-4"])
    assert detector.ejected(0.0) == {"e-1"}
    assert detector.ejections("e-0") == 0
    assert detector.report_failure("e-0", 0.0) is False  # no longer in the pool


# --- candidates and panic -----------------------------------------------------------


def _pool(*spec: tuple[int, bool]) -> list[Endpoint]:
    return [
        Endpoint(f"e-{i}", f"10.0.0.{i}:7000", weight, healthy=healthy)
        for i, (weight, healthy) in enumerate(spec)
    ]


def test_unhealthy_ejected_and_drained_endpoints_are_not_candidates() -> None:
    pool = _pool((100, True), (100, False), (100, True), (0, True), (100, True))
    chosen = select_candidates(pool, frozenset({"e-2"}), 50.0)
    assert chosen == ((pool[0], pool[4]), False)


def test_an_endpoint_comes_back_when_its_backoff_passed_and_the_registry_says_healthy() -> None:
    detector = _detector(3)
    detector.report_failure("e-0", 0.0)
    healthy = _pool((100, True), (100, True), (100, True))
    assert "e-0" not in {e.id for e in select_candidates(healthy, detector.ejected(1.0), 0)[0]}
    assert "e-0" in {e.id for e in select_candidates(healthy, detector.ejected(2.0), 0)[0]}
    sick = _pool((100, False), (100, True), (100, True))
    assert "e-0" not in {e.id for e in select_candidates(sick, detector.ejected(2.0), 0)[0]}


def test_panic_spreads_over_the_whole_pool_but_never_a_drained_endpoint() -> None:
    pool = _pool((100, False), (100, False), (100, True), (0, True))
    chosen = select_candidates(pool, frozenset(), 50.0)
    assert chosen.panic is True
    assert chosen.candidates == tuple(pool[:3])


def test_exactly_at_the_threshold_is_not_panic() -> None:
    pool = _pool((100, False), (100, True))
    assert select_candidates(pool, frozenset(), 50.0) == ((pool[1],), False)


def test_a_zero_threshold_disables_panic() -> None:
    pool = _pool((100, False), (100, False))
    assert select_candidates(pool, frozenset(), 0.0) == ((), False)


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=3), st.booleans(), st.booleans()),
        max_size=12,
    ),
    st.floats(min_value=0, max_value=100),
)
def test_panic_iff_the_healthy_share_is_below_the_threshold(
    spec: list[tuple[int, bool, bool]], threshold: float
) -> None:
    pool = _pool(*((weight, healthy) for weight, healthy, _ in spec))
    ejected = frozenset(e.id for e, (_, _, out) in zip(pool, spec, strict=True) if out)
    candidates, panic = select_candidates(pool, ejected, threshold)
    routable = [e for e in pool if e.weight > 0]
    healthy = [e for e in routable if e.healthy and e.id not in ejected]
    share = Fraction(len(healthy), len(routable)) * 100 if routable else Fraction(100)
    assert panic == (share < Fraction(threshold))
    answering = [e for e in routable if e.id not in ejected] or routable
    assert list(candidates) == (answering if panic else healthy)


def test_panic_leaves_out_what_this_router_saw_fail_unless_nothing_is_left() -> None:
    pool = _pool((100, False), (100, False), (100, True))
    assert select_candidates(pool, frozenset({"e-0"}), 50.0) == ((pool[1], pool[2]), True)
    everyone = frozenset({"e-0", "e-1", "e-2"})
    assert select_candidates(pool, everyone, 50.0) == (tuple(pool), True)
