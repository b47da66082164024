"""Share accounting: the per-second ring of recent counts, configured against received
shares, and the routing table counting every pick, on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.outlier import OutlierConfig
from router.shares import (
    RecentCounts,
    configured_shares,
    largest_gap,
    received_shares,
)
from router.slow_start import SlowStartConfig
from router.table import PoolDetail, RoutingTable, TableConfig
from router.view import RegistryView
from tidepool.registry.v1 import registry_pb2 as pb

START = 1000.0
ALIAS = "zh"


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ---- the ring -------------------------------------------------------------------------------


def test_counts_cover_the_last_window_and_forget_what_is_older() -> None:
    recent = RecentCounts(window_s=60)
    for second in range(100):
        recent.add("a", START + second + 0.5)
    now = START + 99.9
    # Buckets 40..99 are inside the 60 s window that ends in bucket 99.
    assert recent.counts(now) == {"a": 60}
    assert recent.counts(now + 59) == {"a": 1}
    assert recent.counts(now + 60) == {}


def test_a_slot_left_over_from_an_earlier_turn_of_the_ring_restarts_at_one() -> None:
    recent = RecentCounts(window_s=10)
    for _ in range(5):
        recent.add("a", START)
    recent.add("a", START + 10)  # the same slot, one turn later
    assert recent.counts(START + 10) == {"a": 1}


def test_retain_forgets_endpoints_that_left() -> None:
    recent = RecentCounts()
    recent.add("a", START)
    recent.add("b", START)
    recent.retain(["b"])
    assert recent.counts(START) == {"b": 1}


@pytest.mark.parametrize(("window_s", "bucket_s"), [(0, 1.0), (10, 0.0), (5, 10.0)])
def test_a_window_shorter_than_a_bucket_is_refused(window_s: int, bucket_s: float) -> None:
    with pytest.raises(ValueError, match="window_s >= bucket_s > 0"):
        RecentCounts(window_s=window_s, bucket_s=bucket_s)


@given(
    events=st.lists(
        st.tuples(st.sampled_from("abc"), st.floats(min_value=0, max_value=300)), max_size=200
    ),
    read_at=st.floats(min_value=0, max_value=400),
)
def test_counts_equal_a_brute_force_count_of_the_window(
    events: list[tuple[str, float]], read_at: float
) -> None:
    recent = RecentCounts(window_s=60)
    events.sort(key=lambda e: e[1])  # time moves forward, as the monotonic clock does
    added = [(key, at) for key, at in events if at <= read_at]
    for key, at in added:
        recent.add(key, at)
    newest = int(read_at)
    expected: dict[str, int] = {}
    for key, at in added:
        if newest - 60 < int(at) <= newest:
            expected[key] = expected.get(key, 0) + 1
    assert recent.counts(read_at) == expected


# ---- shares ---------------------------------------------------------------------------------


def test_configured_and_received_shares_and_their_largest_gap() -> None:
    configured = configured_shares({"a": 1, "b": 2, "c": 3})
    assert configured == pytest.approx({"a": 1 / 6, "b": 2 / 6, "c": 3 / 6})
    received = received_shares({"a": 10, "b": 20, "c": 20, "gone": 10})
    assert received == pytest.approx({"a": 1 / 6, "b": 2 / 6, "c": 2 / 6, "gone": 1 / 6})
    assert largest_gap(configured, received) == pytest.approx(1 / 6)


def test_no_picks_is_no_gap_and_no_weights_is_no_share() -> None:
    assert largest_gap({"a": 1.0}, received_shares({})) == 0.0
    assert configured_shares({"a": 0}) == {"a": 0.0}
    assert received_shares({"a": 0}) == {"a": 0.0}


# ---- the routing table counts every pick ----------------------------------------------------


def _instance(instance_id: str, weight: int, state: int = pb.INSTANCE_STATE_READY) -> pb.Instance:
    ready = state == pb.INSTANCE_STATE_READY
    return pb.Instance(
        id=instance_id,
        service="speech",
        address=f"{instance_id}.test:7000",
        weight=weight,
        effective_weight=weight if ready else 0,
        labels={"lang": "zh"},
        state=state,  # type: ignore[arg-type]
    )


class _Harness:
    """A table fed by watch events, as the watcher feeds it, on a fake clock."""

    def __init__(self, *instances: pb.Instance, slow_start_s: float = 0.0) -> None:
        self.clock = FakeClock()
        slow = SlowStartConfig(window_s=slow_start_s) if slow_start_s else None
        config = TableConfig(slow_start=slow, outlier=OutlierConfig())
        self.table = RoutingTable(config, clock=self.clock)
        self.view = RegistryView()
        self.revision = 0
        alias = pb.Alias(name=ALIAS, service="speech", selector="lang=zh")
        self.send(pb.WatchEvent.KIND_SNAPSHOT, *instances, aliases=[alias])

    def send(
        self, kind: int, *instances: pb.Instance, aliases: list[pb.Alias] | None = None
    ) -> None:
        self.revision += 1
        event = pb.WatchEvent(
            kind=kind,  # type: ignore[arg-type]
            revision=self.revision,
            instances=list(instances),
            aliases=aliases or [],
        )
        self.table.update(self.view, self.view.apply(event))

    def pick(self, count: int, exclude: frozenset[str] = frozenset()) -> None:
        for _ in range(count):
            assert self.table.pick((ALIAS,), exclude) is not None

    def detail(self) -> PoolDetail:
        (detail,) = self.table.details()
        return detail


def test_received_shares_follow_weights_one_two_three() -> None:
    harness = _Harness(_instance("a", 100), _instance("b", 200), _instance("c", 300))
    harness.pick(600)
    detail = harness.detail()
    assert detail.picks == {"a": 100, "b": 200, "c": 300}
    assert detail.received == pytest.approx(detail.configured)
    assert detail.share_gap == pytest.approx(0.0)
    assert harness.table.pools()[0].share_gap == pytest.approx(0.0)


def test_retries_count_as_picks_of_the_endpoint_tried() -> None:
    harness = _Harness(_instance("a", 100), _instance("b", 100))
    harness.pick(10, exclude=frozenset({"a"}))
    assert harness.detail().picks == {"b": 10}


def test_picks_older_than_the_window_leave_the_received_share() -> None:
    harness = _Harness(_instance("a", 100), _instance("b", 100))
    harness.pick(100, exclude=frozenset({"a"}))  # b only: a gap of half the traffic
    assert harness.detail().share_gap == pytest.approx(0.5)
    harness.clock.now += 61
    harness.pick(100)
    detail = harness.detail()
    assert detail.picks == {"a": 50, "b": 50}
    assert detail.share_gap == pytest.approx(0.0)


def test_slow_start_shows_as_a_gap_between_configured_and_received() -> None:
    # a and b are known when the table starts (not ramped); c joins later and ramps.
    harness = _Harness(_instance("a", 100), _instance("b", 100), slow_start_s=60)
    harness.send(pb.WatchEvent.KIND_UPSERT, _instance("c", 100))
    harness.clock.now += 0.1
    harness.pick(300)
    detail = harness.detail()
    assert detail.pickable["c"] < 20, detail.pickable  # about 10 % of its 100
    assert detail.configured["c"] == pytest.approx(1 / 3)
    assert detail.received["c"] < 0.1, detail.received
    assert detail.share_gap > 0.2


def test_a_passive_ejection_shows_until_when_and_leaves_the_pickable_set() -> None:
    harness = _Harness(_instance("a", 100), _instance("b", 100), _instance("c", 100))
    assert harness.table.report_failure(ALIAS, "c")
    detail = harness.detail()
    assert detail.ejected_until == {"c": pytest.approx(harness.clock.now + 2.0)}  # first: 2 s
    assert detail.ejections == {"c": 1}
    assert set(detail.pickable) == {"a", "b"}
    assert detail.configured == pytest.approx({"a": 0.5, "b": 0.5})
    harness.clock.now += 2.0
    detail = harness.detail()
    assert detail.ejected_until == {}
    assert set(detail.pickable) == {"a", "b", "c"}


def test_endpoints_that_leave_the_pool_take_their_picks_with_them() -> None:
    harness = _Harness(_instance("a", 100), _instance("b", 100))
    harness.pick(10)
    harness.send(pb.WatchEvent.KIND_DELETE, _instance("b", 100))
    assert harness.detail().picks == {"a": 5}
