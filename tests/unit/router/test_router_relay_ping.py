"""Keepalive PINGs on engine connections with calls in flight: a frozen engine is caught fast.

Pure: `Keepalive.action` decides from times passed in.
"""

from __future__ import annotations

import pytest

from router.relay.upstream import Keepalive

KEEPALIVE = Keepalive(interval_s=10.0, timeout_s=5.0, busy_after_s=0.5, busy_timeout_s=1.0)


def test_a_busy_connection_silent_past_busy_after_s_is_pinged() -> None:
    assert KEEPALIVE.action(100.49, 100.0, None, idle=False) is None
    assert KEEPALIVE.action(100.5, 100.0, None, idle=False) == "ping"


def test_a_busy_connection_without_ack_within_busy_timeout_s_is_dropped() -> None:
    assert KEEPALIVE.action(101.49, 100.0, 100.5, idle=False) is None
    assert KEEPALIVE.action(101.5, 100.0, 100.5, idle=False) == "drop"


def test_an_idle_connection_keeps_the_long_idle_timers() -> None:
    assert KEEPALIVE.action(100.5, 100.0, None, idle=True) is None
    assert KEEPALIVE.action(104.0, 100.0, 100.5, idle=True) is None
    assert KEEPALIVE.action(105.5, 100.0, 100.5, idle=True) == "drop"


@pytest.mark.parametrize(("pings", "verdict"), [(0, "ping"), (1, "ping"), (2, None), (5, None)])
def test_a_long_silent_call_gets_at_most_max_busy_pings(pings: int, verdict: str | None) -> None:
    # A grpc server drops a connection after the third PING while it sends no data
    # (GOAWAY too_many_pings): a slow call must never cost its connection.
    assert KEEPALIVE.action(200.0, 100.0, None, idle=False, busy_pings=pings) == verdict


def test_the_keepalive_loop_looks_often_enough_for_the_busy_timers() -> None:
    assert KEEPALIVE.tick_s <= KEEPALIVE.busy_after_s / 4
    assert Keepalive().tick_s <= 0.125
