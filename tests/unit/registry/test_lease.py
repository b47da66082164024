"""Lease table: deadlines, stream breaks, stalls, forgetting and self-preservation (fake time)."""

from __future__ import annotations

import pytest

from registry.lease import LeaseConfig, LeaseTable

TTL = 3.0
CONFIG = LeaseConfig(
    ttl_s=TTL,
    stall_after_s=10.0,
    forget_after_s=60.0,
    self_preservation_threshold=0.5,
    self_preservation_min_instances=3,
)


def _table(*ids: str, now: float = 0.0, config: LeaseConfig = CONFIG) -> LeaseTable:
    table = LeaseTable(config)
    for instance_id in ids:
        table.grant(instance_id, now)
    return table


def _healthy(table: LeaseTable, instance_id: str) -> bool:
    return table.leases[instance_id].healthy


def test_granted_lease_is_healthy_until_its_ttl_lapses() -> None:
    table = _table("e-1")
    assert table.sweep(TTL - 0.01).changed == ()
    assert _healthy(table, "e-1")
    result = table.sweep(TTL)
    assert result.changed == ("e-1",)
    assert not _healthy(table, "e-1")
    assert table.leases["e-1"].unhealthy_since == TTL


def test_heartbeat_pushes_the_deadline_a_full_ttl_ahead() -> None:
    table = _table("e-1")
    table.heartbeat("e-1", 2.0, in_flight=0, progress=0)
    assert table.sweep(2.0 + TTL - 0.01).changed == ()
    assert _healthy(table, "e-1")
    assert table.sweep(2.0 + TTL).changed == ("e-1",)
    assert not _healthy(table, "e-1")


def test_grant_with_grace_outlasts_the_ttl() -> None:
    table = LeaseTable(CONFIG)
    table.grant("e-1", 0.0, grace_s=10.0)
    assert table.sweep(9.9).changed == ()
    assert _healthy(table, "e-1")
    assert table.sweep(10.0).changed == ("e-1",)


def test_grant_reports_a_health_change_only_when_there_was_one() -> None:
    table = LeaseTable(CONFIG)
    assert table.grant("e-1", 0.0) is True  # new
    assert table.grant("e-1", 1.0) is False  # already healthy
    table.sweep(1.0 + TTL)
    assert not _healthy(table, "e-1")
    assert table.grant("e-1", 5.0) is True  # back from the dead
    assert _healthy(table, "e-1")
    assert table.leases["e-1"].unhealthy_since is None


def test_broken_stream_is_unhealthy_at_once() -> None:
    table = _table("e-1")
    table.attach("e-1", 0.5)
    assert table.detach("e-1", 0.6, broken=True) is True
    assert not _healthy(table, "e-1")
    assert table.leases["e-1"].unhealthy_since == 0.6
    assert not table.leases["e-1"].attached


def test_cleanly_closed_stream_leaves_the_lease_to_its_ttl() -> None:
    table = _table("e-1")
    table.attach("e-1", 0.5)
    assert table.detach("e-1", 0.6, broken=False) is False
    assert _healthy(table, "e-1")
    assert table.sweep(0.5 + TTL).changed == ("e-1",)


def test_detaching_an_unknown_or_already_unhealthy_instance_changes_nothing() -> None:
    table = _table("e-1")
    assert table.detach("nobody", 0.1, broken=True) is False
    table.detach("e-1", 0.1, broken=True)
    assert table.detach("e-1", 0.2, broken=True) is False
    assert table.leases["e-1"].unhealthy_since == 0.1


def test_attach_counts_as_a_heartbeat() -> None:
    table = _table("e-1")
    table.attach("e-1", 2.0)
    assert table.leases["e-1"].attached
    assert table.leases["e-1"].last_heartbeat_at == 2.0
    assert table.sweep(2.0 + TTL - 0.01).changed == ()


def test_busy_instance_without_progress_stalls_and_progress_clears_it() -> None:
    table = _table("e-1")
    assert table.heartbeat("e-1", 1.0, in_flight=2, progress=7) is False
    # Work is held but nothing finishes: stalled once stall_after_s has passed.
    assert table.heartbeat("e-1", 10.9, in_flight=2, progress=7) is False
    assert table.heartbeat("e-1", 11.0, in_flight=2, progress=7) is True
    assert table.leases["e-1"].stalled
    assert not table.leases["e-1"].routable_liveness()
    assert table.heartbeat("e-1", 11.5, in_flight=2, progress=8) is True
    assert not table.leases["e-1"].stalled
    assert table.leases["e-1"].routable_liveness()


def test_sweep_flags_a_stall_between_heartbeats() -> None:
    config = LeaseConfig(ttl_s=30.0, stall_after_s=5.0)
    table = _table("e-1", config=config)
    table.heartbeat("e-1", 1.0, in_flight=1, progress=3)
    assert table.sweep(5.9).changed == ()
    assert table.sweep(6.0).changed == ("e-1",)
    assert table.leases["e-1"].stalled
    assert _healthy(table, "e-1")


def test_idle_instance_never_stalls() -> None:
    table = _table("e-1")
    for second in range(1, 40):
        table.heartbeat("e-1", float(second), in_flight=0, progress=0)
        table.sweep(float(second))
    assert not table.leases["e-1"].stalled


def test_expiry_clears_the_stall_flag() -> None:
    config = LeaseConfig(ttl_s=30.0, stall_after_s=5.0)
    table = _table("e-1", config=config)
    table.heartbeat("e-1", 1.0, in_flight=1, progress=3)
    table.sweep(6.0)
    table.detach("e-1", 7.0, broken=True)
    assert not _healthy(table, "e-1")
    assert not table.leases["e-1"].stalled


def test_unhealthy_lease_is_forgotten_after_forget_after() -> None:
    table = _table("e-1")
    table.detach("e-1", 1.0, broken=True)
    assert table.sweep(1.0 + CONFIG.forget_after_s - 0.01).forget == ()
    assert table.sweep(1.0 + CONFIG.forget_after_s).forget == ("e-1",)


def test_returning_instance_is_not_forgotten() -> None:
    table = _table("e-1")
    table.detach("e-1", 1.0, broken=True)
    table.grant("e-1", 30.0)
    table.heartbeat("e-1", 60.0, in_flight=0, progress=0)
    assert table.sweep(61.5).forget == ()


def test_remove_drops_the_lease() -> None:
    table = _table("e-1")
    table.remove("e-1")
    table.remove("e-1")  # idempotent
    assert "e-1" not in table.leases


def test_mass_silent_lapse_engages_self_preservation_and_holds_expiry() -> None:
    table = _table("e-1", "e-2", "e-3", "e-4")
    result = table.sweep(TTL)
    assert result.self_preservation
    assert table.self_preservation
    assert result.changed == ()
    assert all(lease.healthy for lease in table.leases.values())


def test_self_preservation_ends_when_the_fleet_beats_again() -> None:
    table = _table("e-1", "e-2", "e-3", "e-4")
    assert table.sweep(TTL).self_preservation
    for instance_id in ("e-1", "e-2", "e-3", "e-4"):
        table.heartbeat(instance_id, TTL + 0.1, in_flight=0, progress=0)
    assert not table.sweep(TTL + 0.2).self_preservation


def test_fleet_smaller_than_the_minimum_expires_even_when_all_lapse() -> None:
    table = _table("e-1", "e-2")
    result = table.sweep(TTL)
    assert not result.self_preservation
    assert set(result.changed) == {"e-1", "e-2"}
    assert not _healthy(table, "e-1")
    assert not _healthy(table, "e-2")


@pytest.mark.parametrize(("size", "held"), [(2, False), (3, True)])
def test_min_instances_is_the_smallest_fleet_self_preservation_protects(
    size: int, held: bool
) -> None:
    table = _table(*(f"e-{n}" for n in range(size)))
    assert table.sweep(TTL).self_preservation is held


def test_a_single_lapse_in_a_beating_fleet_is_expired() -> None:
    table = _table("e-1", "e-2", "e-3", "e-4")
    for instance_id in ("e-2", "e-3", "e-4"):
        table.heartbeat(instance_id, 2.0, in_flight=0, progress=0)
    result = table.sweep(TTL)
    assert not result.self_preservation
    assert result.changed == ("e-1",)


@pytest.mark.parametrize("earlier_expiry", [False, True])
def test_recent_expiries_count_towards_self_preservation(earlier_expiry: bool) -> None:
    table = _table("e-0", "e-1", "e-2", "e-3")
    if not earlier_expiry:
        table.heartbeat("e-0", 2.9, in_flight=0, progress=0)
    table.heartbeat("e-1", 1.0, in_flight=0, progress=0)  # lapses at 4.0
    table.heartbeat("e-2", 2.0, in_flight=0, progress=0)  # lapses at 5.0
    table.heartbeat("e-3", 2.9, in_flight=0, progress=0)
    first = table.sweep(3.0)
    assert first.changed == (("e-0",) if earlier_expiry else ())
    assert not first.self_preservation
    table.heartbeat("e-3", 3.9, in_flight=0, progress=0)
    # At 4.0, e-1 lapses and e-2 is close behind: 2 silent of 4 is not over half,
    # but an expiry a second earlier makes 3 of 4 -- a burst, so expiry is held.
    second = table.sweep(4.0)
    assert second.self_preservation is earlier_expiry
    assert _healthy(table, "e-1") is earlier_expiry


def test_broken_stream_is_never_held_back_by_self_preservation() -> None:
    table = _table("e-1", "e-2", "e-3", "e-4")
    for instance_id in table.leases:
        table.attach(instance_id, 0.0)
    assert table.sweep(TTL).self_preservation
    assert table.detach("e-1", TTL + 0.1, broken=True) is True
    assert not _healthy(table, "e-1")


def test_restored_leases_that_never_reattach_expire_despite_their_number() -> None:
    table = LeaseTable(CONFIG)
    for instance_id in ("e-1", "e-2", "e-3", "e-4"):
        table.grant(instance_id, 0.0, grace_s=10.0)  # known from the store after a restart
    result = table.sweep(10.0)
    assert not result.self_preservation
    assert not any(_healthy(table, i) for i in ("e-1", "e-2", "e-3", "e-4"))


# ---- flap damping ---------------------------------------------------------------------------

FLAPPY = LeaseConfig(
    ttl_s=TTL,
    flap_threshold=3,
    flap_window_s=60.0,
    flap_hold_s=10.0,
    flap_hold_max_s=25.0,
    self_preservation_min_instances=1000,
)


def _flap(table: LeaseTable, times: int, start: float, gap_s: float = 1.0) -> float:
    """Break e-1's stream and bring it back `times` times; the time of the last return."""
    now = start
    for _ in range(times):
        table.detach("e-1", now, broken=True)
        now += gap_s
        table.attach("e-1", now)
    return now


def test_an_engine_that_flaps_past_the_threshold_is_held_out() -> None:
    table = _table("e-1", config=FLAPPY)
    back = _flap(table, 4, start=1.0)
    lease = table.leases["e-1"]
    assert lease.healthy
    assert lease.held_until == back + 10.0
    assert not lease.routable_liveness()
    # Still held just before the hold ends (it keeps beating), released at its end.
    table.heartbeat("e-1", back + 9.0, 0, 0)
    assert table.sweep(back + 9.0).changed == ()
    assert table.sweep(back + 10.0).changed == ("e-1",)
    assert lease.routable_liveness()


def test_flapping_up_to_the_threshold_is_tolerated() -> None:
    table = _table("e-1", config=FLAPPY)
    _flap(table, 3, start=1.0)
    assert table.leases["e-1"].held_until is None


def test_lapses_outside_the_window_do_not_count() -> None:
    table = _table("e-1", config=FLAPPY)
    _flap(table, 3, start=1.0)
    back = _flap(table, 1, start=100.0)  # the first three are more than 60 s old
    assert table.leases["e-1"].held_until is None
    assert back == 101.0


def test_each_hold_in_a_row_doubles_up_to_the_cap() -> None:
    table = _table("e-1", config=FLAPPY)
    holds = []
    now = 1.0
    for _ in range(3):
        now = _flap(table, 4, start=now)
        lease = table.leases["e-1"]
        assert lease.held_until is not None
        holds.append(lease.held_until - now)
        now = lease.held_until
        table.heartbeat("e-1", now, 0, 0)
        table.sweep(now)
    assert holds == [10.0, 20.0, 25.0]


def test_a_quiet_window_forgets_past_holds() -> None:
    table = _table("e-1", config=FLAPPY)
    back = _flap(table, 4, start=1.0)
    released = back + 10.0
    table.heartbeat("e-1", released, 0, 0)
    table.sweep(released)
    quiet = released + 61.0
    table.heartbeat("e-1", quiet, 0, 0)
    table.sweep(quiet)
    again = _flap(table, 4, start=quiet)
    assert table.leases["e-1"].held_until == again + 10.0
