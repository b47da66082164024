"""Tide moves: when a hot pool borrows, from whom, which engines, and when it must not."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.fleet import Engine, Fleet, MoveView
from scheduler.policy import Policy
from scheduler.pools import PoolState, pool_states
from scheduler.tide import movable, plan_tide, wants_capacity
from tests.support.sim_fleet import make_engine, make_policy, warm_memory

ZH, EN = "zh-public", "en-public"
NOW = 1000.0
POLICY = make_policy()  # high 0.8, target 0.6, low 0.3; cooldown 15 s, min_stay 30 s
FULL = 11  # samples in a full 10 s window at 1 s

THREE_POOLS = """\
[scheduler]
interval_s = 1.0
window_s = 10.0
cooldown_s = 15.0
min_stay_s = 30.0
drain_timeout_s = 10.0
switch_timeout_s = 60.0

[[pools]]
name = "zh-a"
lang = "zh"
min = 1
max = 8
target_utilization = 0.6
high_watermark = 0.8
low_watermark = 0.3

[[pools]]
name = "zh-b"
lang = "zh"
min = 1
max = 8
target_utilization = 0.6
high_watermark = 0.8
low_watermark = 0.3

[[pools]]
name = "zh-lender"
lang = "zh"
min = 1
max = 8
target_utilization = 0.6
high_watermark = 0.8
low_watermark = 0.3
lend_to = ["zh-a", "zh-b"]
"""


def engines(pool: str, count: int, *, slots: int = 4, prefix: str = "") -> list[Engine]:
    name = prefix or pool.split("-")[0]
    return [make_engine(f"{name}-{i}", pool, slots=slots) for i in range(count)]


def states(
    policy: Policy,
    fleet: Fleet,
    utilization: dict[str, float | list[float]],
    now: float = NOW,
) -> dict[str, PoolState]:
    """Pool states with each pool's window full of `utilization` (or those samples)."""
    samples = {
        pool: value if isinstance(value, list) else [value] * FULL
        for pool, value in utilization.items()
    }
    return pool_states(policy, fleet, warm_memory(policy, samples, now), now)


def moved(
    policy: Policy, fleet: Fleet, utilization: dict[str, float | list[float]]
) -> list[tuple[str, str, str]]:
    moves, _ = plan_tide(policy, fleet, states(policy, fleet, utilization), NOW)
    return [(m.instance_id, m.from_pool, m.to_pool) for m in moves]


def past_move(instance_id: str, from_pool: str, to_pool: str, at: float) -> MoveView:
    return MoveView("m-old", instance_id, from_pool, to_pool, "done", "", at, at + 5)


BALANCED = Fleet.of(engines(ZH, 3) + engines(EN, 3))


# -- wants_capacity ----------------------------------------------------------------------


def test_pool_at_or_below_its_high_watermark_wants_nothing() -> None:
    assert wants_capacity(states(POLICY, BALANCED, {ZH: 0.8})[ZH], POLICY) == (False, "")


def test_no_decision_until_the_window_is_warm() -> None:
    state = states(POLICY, BALANCED, {ZH: [0.95] * 4})[ZH]
    assert wants_capacity(state, POLICY) == (False, "utilisation window not yet full")


def test_pool_cooling_down_after_a_change_waits() -> None:
    fleet = Fleet(BALANCED.engines, (past_move("en-0", EN, ZH, NOW - 14),))
    wanted, why = wants_capacity(states(POLICY, fleet, {ZH: 0.95})[ZH], POLICY)
    assert not wanted
    assert "cooling down (15s" in why
    later = Fleet(BALANCED.engines, (past_move("en-0", EN, ZH, NOW - 15),))
    assert wants_capacity(states(POLICY, later, {ZH: 0.95})[ZH], POLICY)[0]


def test_passing_surge_is_not_worth_a_move() -> None:
    falling = [1.0 - 0.02 * i for i in range(FULL)]  # mean 0.9, falling 0.02/s
    wanted, why = wants_capacity(states(POLICY, BALANCED, {ZH: falling})[ZH], POLICY)
    assert not wanted
    assert "deficit will not outlast a move" in why


def test_deficit_must_outlast_the_switch_plus_the_stay() -> None:
    # Mean 0.85 falling 0.0014/s: 0.801 after 35 s (5 s switch + 30 s stay), 0.794 after 40 s.
    samples = [0.85 + 0.0014 * (5 - i) for i in range(FULL)]
    state = states(POLICY, BALANCED, {ZH: samples})[ZH]
    assert wants_capacity(state, POLICY)[0]
    slower = replace(POLICY, loop=replace(POLICY.loop, expected_switch_s=10.0))
    wanted, why = wants_capacity(state, slower)
    assert not wanted
    assert "in 40s" in why


def test_rising_pool_above_high_wants_capacity() -> None:
    wanted, why = wants_capacity(states(POLICY, BALANCED, {ZH: 0.9})[ZH], POLICY)
    assert wanted
    assert "utilisation 0.90 > 0.8" in why


# -- movable -----------------------------------------------------------------------------


def test_engine_settled_in_a_lending_pool_is_movable() -> None:
    assert movable(BALANCED.engines["en-0"], BALANCED, POLICY, NOW)


def test_engine_stays_min_stay_after_its_last_move() -> None:
    engine = make_engine("en-0", ZH, lang="zh", home=EN)
    recent = Fleet.of([engine], [past_move("en-0", EN, ZH, NOW - 29)])
    assert not movable(engine, recent, POLICY, NOW)
    settled = Fleet.of([engine], [past_move("en-0", EN, ZH, NOW - 30)])
    assert movable(engine, settled, POLICY, NOW)


def test_engine_moving_or_not_ready_is_not_movable() -> None:
    moving = MoveView("m-1", "en-0", EN, ZH, "draining", "", NOW - 100, NOW - 100)
    assert not movable(BALANCED.engines["en-0"], Fleet(BALANCED.engines, (moving,)), POLICY, NOW)
    drained = make_engine("en-0", EN, admin_drained=True)
    assert not movable(drained, Fleet.of([drained]), POLICY, NOW)
    switching = make_engine("en-0", EN, state="switching")
    assert not movable(switching, Fleet.of([switching]), POLICY, NOW)


def test_engine_of_a_pool_that_lends_to_none_moves_only_if_it_has_a_home() -> None:
    policy = replace(POLICY, pools=tuple(replace(p, lend_to=()) for p in POLICY.pools))
    native = make_engine("en-0", EN, home="")
    assert not movable(native, Fleet.of([native]), policy, NOW)
    visitor = make_engine("zh-9", EN, lang="en", home=ZH)
    assert movable(visitor, Fleet.of([visitor]), policy, NOW)


# -- plan_tide: whether and from whom ----------------------------------------------------


def test_hot_pool_borrows_from_an_idle_lender() -> None:
    moves, decisions = plan_tide(
        POLICY, BALANCED, states(POLICY, BALANCED, {ZH: 0.9, EN: 0.1}), NOW
    )
    assert [(m.from_pool, m.to_pool) for m in moves] == [(EN, ZH), (EN, ZH)]
    assert "en-public at 0.10" in moves[0].reason
    assert [d.kind for d in decisions] == ["move", "move"]


def test_no_move_when_the_lender_is_not_below_its_low_watermark() -> None:
    moves, decisions = plan_tide(
        POLICY, BALANCED, states(POLICY, BALANCED, {ZH: 0.9, EN: 0.31}), NOW
    )
    assert moves == []
    assert [(d.kind, d.reason) for d in decisions] == [("hold", "no pool can lend an engine now")]


def test_no_move_from_a_lender_whose_window_is_cold() -> None:
    assert moved(POLICY, BALANCED, {ZH: 0.9, EN: [0.1] * 3}) == []


def test_no_move_from_a_lender_cooling_down() -> None:
    other = make_engine("zh-9", "", lang="zh")
    fleet = Fleet.of([*BALANCED.engines.values(), other], [past_move("zh-9", EN, "", NOW - 5)])
    assert moved(POLICY, fleet, {ZH: 0.9, EN: 0.1}) == []


def test_no_move_from_a_pool_that_does_not_lend_to_the_hot_one() -> None:
    policy = replace(POLICY, pools=tuple(replace(p, lend_to=()) for p in POLICY.pools))
    assert moved(policy, BALANCED, {ZH: 0.9, EN: 0.1}) == []


@pytest.mark.parametrize(("size", "expected"), [(2, 0), (3, 1), (4, 2)])
def test_lender_never_goes_below_its_min(size: int, expected: int) -> None:
    policy = make_policy(en_public=(2, 8))
    fleet = Fleet.of(engines(ZH, 3) + engines(EN, size))
    assert len(moved(policy, fleet, {ZH: 1.2, EN: 0.05})) == expected


def test_engines_already_moving_out_count_against_the_lenders_min() -> None:
    policy = make_policy(en_public=(2, 8))
    out = MoveView("m-1", "en-3", EN, "zh-x", "draining", "", NOW - 100, NOW - 100)
    fleet = Fleet.of(engines(ZH, 3) + engines(EN, 4), [out])
    assert [m[0] for m in moved(policy, fleet, {ZH: 1.2, EN: 0.05})] == ["en-0"]


@pytest.mark.parametrize(("most", "expected"), [(3, 0), (4, 1), (5, 2)])
def test_hot_pool_never_grows_above_its_max(most: int, expected: int) -> None:
    policy = make_policy(zh_public=(1, most))
    assert len(moved(policy, BALANCED, {ZH: 1.2, EN: 0.05})) == expected


def test_engines_moving_in_count_against_the_max() -> None:
    policy = make_policy(zh_public=(1, 4))
    incoming = MoveView("m-1", "en-2", EN, ZH, "switching", "", NOW - 100, NOW - 100)
    fleet = Fleet(BALANCED.engines, (incoming,))
    assert moved(policy, fleet, {ZH: 1.2, EN: 0.05}) == []


def test_at_most_max_moves_per_tick() -> None:
    policy = replace(POLICY, loop=replace(POLICY.loop, max_moves_per_tick=1))
    fleet = Fleet.of(engines(ZH, 3) + engines(EN, 6))
    assert len(moved(policy, fleet, {ZH: 1.5, EN: 0.05})) == 1


def test_lender_keeps_enough_for_its_own_target() -> None:
    # en: 12 slots at 0.29 is a load of 3.5, which needs 5.8 slots at the 0.6 target:
    # one engine of 4 slots may go, not two, though the hot pool wants more.
    assert len(moved(POLICY, BALANCED, {ZH: 1.5, EN: 0.29})) == 1


def test_no_more_engines_than_the_gap_needs() -> None:
    # zh: 12 slots at 0.85 is a load of 10.2 -> 17 slots at target: a gap of 5 slots.
    fleet = Fleet.of(engines(ZH, 3) + engines(EN, 4, slots=8))
    assert len(moved(POLICY, fleet, {ZH: 0.85, EN: 0.05})) == 1


# -- plan_tide: which engines ------------------------------------------------------------


def test_picks_the_smallest_engine_that_closes_the_gap() -> None:
    # zh: 8 slots at 0.825 is a load of 6.6 -> 11 slots at target: a gap of 3 slots.
    lender = [make_engine(f"en-{s}", EN, slots=s) for s in (2, 4, 8)]
    fleet = Fleet.of(engines(ZH, 2) + lender)
    assert moved(POLICY, fleet, {ZH: 0.825, EN: 0.05}) == [("en-4", EN, ZH)]


def test_takes_the_largest_engines_when_none_closes_the_gap_alone() -> None:
    lender = [make_engine(f"en-{s}", EN, slots=s) for s in (1, 2, 4)]
    fleet = Fleet.of(engines(ZH, 4, slots=8) + lender)
    picked = moved(POLICY, fleet, {ZH: 1.2, EN: 0.05})
    assert [m[0] for m in picked] == ["en-4", "en-2"]


def test_skips_engines_that_moved_within_min_stay() -> None:
    fleet = Fleet(BALANCED.engines, (past_move("en-0", ZH, EN, NOW - 20),))
    # en-0 came back 20 s ago; en-public is not cooling any more, but en-0 must stay.
    policy = replace(POLICY, loop=replace(POLICY.loop, cooldown_s=10.0))
    assert "en-0" not in [m[0] for m in moved(policy, fleet, {ZH: 0.9, EN: 0.1})]


def test_engines_whose_home_is_the_hot_pool_come_back_first() -> None:
    visitor = make_engine("zh-home", EN, lang="en", home=ZH)
    fleet = Fleet.of([*engines(ZH, 3), make_engine("en-big", EN, slots=8), visitor])
    assert moved(POLICY, fleet, {ZH: 0.85, EN: 0.1}) == [("zh-home", EN, ZH)]


def test_home_engines_first_still_leave_the_lender_its_min() -> None:
    policy = make_policy(en_public=(3, 8))
    visitor = make_engine("zh-home", EN, lang="en", home=ZH)
    fleet = Fleet.of([*engines(ZH, 3), *engines(EN, 3), visitor])
    # Four ready, min 3: one may go, and it is the one whose home is zh-public.
    assert moved(policy, fleet, {ZH: 1.5, EN: 0.05}) == [("zh-home", EN, ZH)]


def test_pool_holding_borrowed_engines_gives_them_back_without_lending_its_own() -> None:
    visitor = make_engine("zh-home", EN, lang="en", home=ZH)
    fleet = Fleet.of([*engines(ZH, 3), *engines(EN, 3), visitor])
    # en-public is at 0.5: too busy to lend, but it can return what it borrowed.
    assert moved(POLICY, fleet, {ZH: 1.2, EN: 0.5}) == [("zh-home", EN, ZH)]


def test_borrowed_engine_stays_when_its_holder_would_run_hot_without_it() -> None:
    visitor = make_engine("zh-home", EN, lang="en", home=ZH)
    fleet = Fleet.of([*engines(ZH, 3), *engines(EN, 3), visitor])
    assert moved(POLICY, fleet, {ZH: 1.2, EN: 0.75}) == []


def test_most_pressed_pool_borrows_first_and_each_pool_moves_once_a_tick() -> None:
    policy = make_policy(THREE_POOLS)
    lender = [make_engine(f"zh-l{i}", "zh-lender") for i in range(6)]
    fleet = Fleet.of([*engines("zh-a", 3, prefix="a"), *engines("zh-b", 3, prefix="b"), *lender])
    got = states(policy, fleet, {"zh-a": 0.85, "zh-b": 0.95, "zh-lender": 0.05})
    moves, decisions = plan_tide(policy, fleet, got, NOW)
    assert {m.to_pool for m in moves} == {"zh-b"}
    assert ("hold", "zh-a", "no pool can lend an engine now") in [
        (d.kind, d.pool, d.reason) for d in decisions
    ]


def test_hot_pool_cooling_holds_and_says_why() -> None:
    fleet = Fleet(BALANCED.engines, (past_move("zh-9", ZH, "", NOW - 3),))
    moves, decisions = plan_tide(POLICY, fleet, states(POLICY, fleet, {ZH: 0.9, EN: 0.1}), NOW)
    assert moves == []
    assert decisions[0].kind == "hold"
    assert "cooling down" in decisions[0].reason
