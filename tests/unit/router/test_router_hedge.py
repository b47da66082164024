"""The hedge decision, the budget it draws on, and ejection after consecutive attempt timeouts.

Pure parts only (no sockets): `retry.may_hedge`, `OutlierDetector.report_timeout`,
and `Forwarder`'s bookkeeping over a real routing table (fed a snapshot as the watcher
feeds it) and a real retry budget.
"""

from __future__ import annotations

import math

import pytest

from router.attempt_timeout import AttemptTimeoutConfig, AttemptTimeouts
from router.channels import ChannelPool
from router.config import parse_config
from router.endpoint import Endpoint
from router.forward import Forwarder
from router.outlier import OutlierConfig, OutlierDetector
from router.retry import MIN_ATTEMPT_S, RetryBudget, RetryPolicy, may_hedge
from router.table import RoutingTable, TableConfig
from router.view import RegistryView
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.runtime.options import ConfigError

EVALUATE = "/tidepool.engine.v1.Evaluator/Evaluate"
MUTATE = "/tidepool.test.v1.Echo/Mutate"
POLICY = RetryPolicy(max_attempts=3, idempotent_methods=(EVALUATE,))


@pytest.mark.parametrize(
    ("method", "attempts", "left", "replayable", "expected"),
    [
        (EVALUATE, 1, 5.0, True, True),
        (MUTATE, 1, 5.0, True, False),  # not idempotent: the engine may be doing it
        (EVALUATE, 1, 5.0, False, False),  # the request is no longer held in full
        (EVALUATE, 3, 5.0, True, False),  # no attempts left
        (EVALUATE, 1, MIN_ATTEMPT_S / 2, True, False),  # no time left
    ],
)
def test_only_a_replayable_idempotent_call_with_attempts_and_time_left_is_hedged(
    method: str, attempts: int, left: float, replayable: bool, expected: bool
) -> None:
    assert may_hedge(POLICY, method, attempts, left, replayable) is expected


def _detector(consecutive: int = 3) -> OutlierDetector:
    config = OutlierConfig(consecutive_timeouts=consecutive, max_ejection_percent=100)
    return OutlierDetector(config, ["a", "b", "c"])


def test_consecutive_timeouts_of_a_silent_engine_eject_it() -> None:
    detector = _detector(3)
    silent = -math.inf
    assert not detector.report_timeout("a", 10.0, silent)
    assert not detector.report_timeout("a", 10.1, silent)
    assert detector.report_timeout("a", 10.2, silent)
    assert detector.is_ejected("a", 10.3)


def test_an_answer_between_timeouts_starts_the_count_again() -> None:
    detector = _detector(3)
    assert not detector.report_timeout("a", 10.0, -math.inf)
    assert not detector.report_timeout("a", 10.1, -math.inf)
    # It answered something at 10.15: slow, not frozen.
    assert not detector.report_timeout("a", 10.2, 10.15)
    assert not detector.report_timeout("a", 10.3, 10.15)
    assert detector.report_timeout("a", 10.4, 10.15)


def test_consecutive_timeouts_zero_never_ejects() -> None:
    detector = _detector(0)
    assert not any(detector.report_timeout("a", 10.0 + i, -math.inf) for i in range(20))


def test_timeouts_respect_the_ejection_cap() -> None:
    config = OutlierConfig(consecutive_timeouts=1, max_ejection_percent=50)
    detector = OutlierDetector(config, ["a", "b", "c"])
    assert detector.report_timeout("a", 10.0, -math.inf)
    assert not detector.report_timeout("b", 10.0, -math.inf)  # 2 of 3 would break the cap


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Ejections:
    """The table's events sink: remembers each ejection (the rest is ignored)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def ejected(self, alias: str, instance_id: str, kind: str) -> None:
        self.seen.append((alias, instance_id, kind))

    def panic_changed(self, alias: str, panic: bool) -> None:
        pass

    def last_resort_changed(self, alias: str, last_resort: bool) -> None:
        pass


def _table(clock: _Clock, events: _Ejections) -> RoutingTable:
    """A real routing table: alias zh over engines a, b, c; one counted timeout ejects."""
    outlier = OutlierConfig(consecutive_timeouts=1, max_ejection_percent=100)
    table = RoutingTable(TableConfig(outlier=outlier), events=events, clock=clock)
    engines = [
        pb.Instance(
            id=name, service="speech", address=f"{name}.test:7000", weight=100,
            effective_weight=100, labels={"pool": "zh"}, state=pb.INSTANCE_STATE_READY,
        )
        for name in "abc"
    ]  # fmt: skip
    view = RegistryView()
    snapshot = pb.WatchEvent(
        kind=pb.WatchEvent.KIND_SNAPSHOT,
        revision=1,
        instances=engines,
        aliases=[pb.Alias(name="zh", service="speech", selector="pool=zh")],
    )
    table.update(view, view.apply(snapshot))
    return table


def _forwarder(
    clock: _Clock, ratio: float = 0.0, min_per_s: float = 0.0, events: _Ejections | None = None
) -> Forwarder:
    budget = RetryBudget(ratio=ratio, min_per_s=min_per_s, window_s=10.0, clock=clock)
    timeouts = AttemptTimeouts(AttemptTimeoutConfig(min_samples=1, min_s=0.05, max_s=5.0))
    return Forwarder(
        _table(clock, events or _Ejections()),
        ChannelPool(),
        POLICY,
        budget,
        clock=clock,
        timeouts=timeouts,
    )


def test_a_hedge_is_taken_from_the_retry_budget_and_refused_when_it_is_spent() -> None:
    clock = _Clock()
    forwarder = _forwarder(clock, ratio=0.5)
    for _ in range(4):
        forwarder.budget.deposit()
    granted = [forwarder.may_hedge(EVALUATE, "zh", "a", 1, 5.0, True) for _ in range(4)]
    assert granted == [True, True, False, False]  # 0.5 of 4 calls: two hedges
    assert forwarder.counts["a"].hedges == 2


def test_an_attempt_timeout_counts_toward_ejection_only_if_the_engine_was_silent() -> None:
    clock = _Clock()
    events = _Ejections()
    forwarder = _forwarder(clock, events=events)
    forwarder.observe("a", 0.05, now=1000.0)
    forwarder.observe("b", 0.05, now=1001.0)  # a peer answers calls begun later
    forwarder.attempt_timed_out("zh", "a", started=999.0)  # it answered since: slow
    forwarder.attempt_timed_out("zh", "a", started=1000.5)  # nothing since it began
    assert events.seen == [("zh", "a", "passive")]  # the second one only
    assert forwarder.counts["a"].attempt_timeouts == 2


def test_a_fleet_slow_all_at_once_is_not_counted_toward_ejection() -> None:
    clock = _Clock()
    events = _Ejections()
    forwarder = _forwarder(clock, events=events)
    for engine in "abc":
        forwarder.observe(engine, 0.05, now=1000.0)
    # Every engine silent since 1000.5: nobody is singled out.
    for engine in "abc":
        forwarder.attempt_timed_out("zh", engine, started=1000.5)
    # Peers answer, but calls older than the timed-out attempt: slow, not overtaken.
    forwarder.observe("b", 0.9, now=1001.2)
    forwarder.attempt_timed_out("zh", "a", started=1000.5)
    assert events.seen == []


def test_the_attempt_timeout_follows_the_engine_and_only_idempotent_methods_have_one() -> None:
    clock = _Clock()
    forwarder = _forwarder(clock)
    for _ in range(50):
        forwarder.observe("a", 0.1, now=clock.now)
    limit = forwarder.attempt_timeout_s(EVALUATE, "a", clock.now)
    assert limit is not None
    assert 0.2 <= limit < 0.3  # p99 about 0.1 s, times the default margin of 2
    assert forwarder.attempt_timeout_s(MUTATE, "a", clock.now) is None


def test_a_silent_endpoint_stays_out_until_it_answers_a_probe() -> None:
    config = OutlierConfig(base_ejection_s=2.0, max_ejection_s=60.0, max_ejection_percent=50)
    detector = OutlierDetector(config, ["a", "b", "c"])
    assert detector.report_silent("a", 10.0)
    assert detector.is_silent("a", 10.0)
    assert detector.is_ejected("a", 30.0)  # not back after the 2 s of a first ejection
    assert detector.report_alive("a", 31.0)
    assert not detector.is_ejected("a", 31.0)
    assert not detector.report_alive("a", 32.0)  # only a silent ejection ends this way


def test_a_silent_ejection_is_capped_at_max_ejection_s() -> None:
    config = OutlierConfig(base_ejection_s=2.0, max_ejection_s=60.0, max_ejection_percent=50)
    detector = OutlierDetector(config, ["a", "b", "c"])
    detector.report_silent("a", 10.0)
    assert not detector.is_ejected("a", 70.0)


def test_a_failure_ejection_turns_silent_when_the_ping_fails_too() -> None:
    config = OutlierConfig(max_ejection_percent=50)
    detector = OutlierDetector(config, ["a", "b", "c"])
    assert detector.report_failure("a", 10.0)  # the reset came first
    assert not detector.report_silent("a", 10.1)  # already out...
    assert detector.is_silent("a", 10.1)  # ...but now until it answers


def test_the_frozen_engine_flags_reach_the_config_with_their_documented_defaults() -> None:
    config = parse_config([], {})
    assert config.attempt_timeouts() == AttemptTimeoutConfig(
        percentile=99.0, margin=2.0, min_s=0.1, max_s=10.0
    )
    assert config.table().outlier.consecutive_timeouts == 3
    assert (config.engine_ping_after_s, config.engine_ping_timeout_s) == (0.5, 1.0)
    flags = ["--attempt-timeout-margin", "1.5", "--consecutive-timeouts", "0"]
    changed = parse_config(flags, {"TIDEPOOL_ROUTER_ENGINE_PING_TIMEOUT_S": "0.3"})
    assert changed.attempt_timeouts().margin == 1.5
    assert changed.table().outlier.consecutive_timeouts == 0
    assert changed.engine_ping_timeout_s == 0.3


def test_an_attempt_timeout_max_below_its_min_is_refused_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match="--attempt-timeout-max-s: must be at least"):
        parse_config(["--attempt-timeout-min-s", "2", "--attempt-timeout-max-s", "1"], {})


def test_the_endpoints_view_shows_each_engines_attempt_figures() -> None:
    clock = _Clock()
    forwarder = _forwarder(clock)
    endpoint = Endpoint("a", "127.0.0.1:1", 100)
    forwarder.attempt_timed_out("zh", "a", started=clock.now)
    forwarder.ping_failed("127.0.0.1:1")
    view = forwarder.attempt_view([endpoint])["a"]
    assert view == {
        "attempt_timeout_s": 5.0,  # nothing observed yet: the ceiling
        "attempt_timeouts": 1,
        "hedges": 0,
        "hedge_wins": 0,
        "ping_failures": 1,
    }
