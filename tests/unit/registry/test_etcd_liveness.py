"""The owner's word on an engine, held by another replica's lease table (pure, fake clock)."""

from __future__ import annotations

import pytest

from registry.catalog import Catalog, EngineStatus, State
from registry.etcd_liveness import Liveness, hand_over, hold_remote, observe, remote_report
from registry.lease import LeaseConfig, LeaseTable
from registry.records import InstanceRecord, frozen_labels

TTL_S = 1.0


def _catalog() -> Catalog:
    catalog = Catalog(LeaseTable(LeaseConfig(ttl_s=TTL_S, stall_after_s=5.0)))
    record = InstanceRecord("e-1", "speech", "127.0.0.1:1", 100, 4, frozen_labels({}), 0.0)
    catalog.leases.grant("e-1", 0.0, grace_s=10.0)
    catalog.put(record, 0.0, 0.0)
    return catalog


def _hold(catalog: Catalog, liveness: Liveness, now: float) -> State:
    hold_remote(catalog.leases.leases["e-1"], liveness, now)
    catalog.report("e-1", remote_report(catalog.last_report("e-1"), liveness))
    return catalog.view("e-1").state


@pytest.mark.parametrize(
    ("liveness", "state"),
    [
        (Liveness("r-a"), State.READY),
        (Liveness("r-a", healthy=False), State.UNHEALTHY),
        (Liveness("r-a", stalled=True), State.STALLED),
        (Liveness("r-a", held=True), State.FLAPPING),
        (Liveness("r-a", status=EngineStatus.SWITCHING), State.SWITCHING),
        (Liveness("r-a", status=EngineStatus.DRAINING), State.DRAINING),
    ],
)
def test_the_owners_word_holds_through_any_number_of_sweeps(
    liveness: Liveness, state: State
) -> None:
    catalog = _catalog()
    assert _hold(catalog, liveness, 1.0) is state
    for now in (5.0, 50.0, 500.0):
        catalog.leases.sweep(now)
        assert catalog.view("e-1").state is state, now


def test_what_the_owner_observes_round_trips_through_the_attached_key() -> None:
    catalog = _catalog()
    lease = catalog.leases.leases["e-1"]
    catalog.leases.heartbeat("e-1", 1.0, in_flight=2, progress=0)
    catalog.leases.heartbeat("e-1", 6.5, in_flight=2, progress=0)  # no progress for 5.5 s
    catalog.report("e-1", remote_report(catalog.last_report("e-1"), Liveness("x")))
    said = observe("r-a", lease, catalog.last_report("e-1"))
    assert said == Liveness("r-a", healthy=True, stalled=True)
    assert Liveness.decode(said.encode()) == said


def test_a_hand_over_keeps_the_engine_ready_until_the_grace_ends() -> None:
    catalog = _catalog()
    _hold(catalog, Liveness("r-a"), 1.0)
    hand_over(catalog.leases.leases["e-1"], 2.0, grace_s=3.0)
    catalog.leases.sweep(4.9)
    assert catalog.view("e-1").state is State.READY
    catalog.leases.sweep(5.0)
    assert catalog.view("e-1").state is State.UNHEALTHY


def test_a_value_that_is_no_attachment_is_refused() -> None:
    with pytest.raises(ValueError, match="not an attachment record"):
        Liveness.decode(b'{"replica": "r-a"}')
