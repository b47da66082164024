"""FaultPlan: which injected fault hits which request."""

from __future__ import annotations

import random

from engine_stub.config import FaultConfig
from engine_stub.faults import Fault, FaultPlan


def plan(**settings: object) -> FaultPlan:
    return FaultPlan(FaultConfig(**settings), random.Random(42))  # type: ignore[arg-type]


def test_no_faults_by_default() -> None:
    faults = plan()
    assert {faults.next() for _ in range(100)} == {Fault.NONE}
    assert faults.extra_latency_s == 0


def test_hang_after_spares_the_first_n() -> None:
    faults = plan(hang_after=2)
    assert [faults.next() for _ in range(4)] == [Fault.NONE, Fault.NONE, Fault.HANG, Fault.HANG]


def test_crash_wins_over_hang() -> None:
    faults = plan(hang_after=0, crash_after=1)
    assert [faults.next() for _ in range(2)] == [Fault.HANG, Fault.CRASH]


def test_error_rate_is_seeded_and_roughly_right() -> None:
    first = [plan(error_rate=0.25).next() for _ in range(1)]
    again = [plan(error_rate=0.25).next() for _ in range(1)]
    assert first == again
    faults = plan(error_rate=0.25)
    errors = sum(faults.next() is Fault.ERROR for _ in range(4000))
    assert 800 < errors < 1200


def test_latency_is_in_seconds() -> None:
    assert plan(latency_s=0.25).extra_latency_s == 0.25
