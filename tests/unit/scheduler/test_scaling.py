"""Scaling: which tier to ask for, how many engines, and which provider engines to give back."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.actions import MoveIntent
from scheduler.fleet import Engine, Fleet, MoveView
from scheduler.policy import Policy, ProviderPolicy
from scheduler.pools import PoolState, pool_states
from scheduler.scaling import choose_tier, plan_scale_down, plan_scale_up
from tests.support.sim_fleet import PROVIDER, make_engine, make_policy, warm_memory

ZH, EN = "zh-public", "en-public"
NOW = 1000.0
POLICY = make_policy(en_public=(0, 8))
"""Its provider: cvm starts in 5 s at 1.0/h, serverless in 1 s at 2.5/h; 4 engines of 4 slots."""
FULL = 11


def bounds(least: int, most: int) -> Policy:
    """zh-public's min and max; en-public may be empty (it then needs no engines)."""
    return make_policy(zh_public=(least, most), en_public=(0, 8))


def provider(cvm: float = 5.0, serverless: float = 1.0) -> ProviderPolicy:
    """The policy's provider with these start times."""
    assert POLICY.provider is not None
    return replace(POLICY.provider, start_s={"cvm": cvm, "serverless": serverless})


SLOW_CVM = replace(POLICY, provider=provider(cvm=30.0))


def states(
    fleet: Fleet,
    utilization: dict[str, float],
    policy: Policy = POLICY,
    window: int = FULL,
    starting: dict[str, int] | None = None,
) -> dict[str, PoolState]:
    samples = {pool: [value] * window for pool, value in utilization.items()}
    return pool_states(policy, fleet, warm_memory(policy, samples, NOW), NOW, starting)


def zh(count: int = 3) -> list[Engine]:
    return [make_engine(f"zh-{i}", ZH) for i in range(count)]


def into_zh(*ids: str) -> list[MoveIntent]:
    return [MoveIntent(i, EN, ZH, "hot") for i in ids]


def ups(
    fleet: Fleet,
    utilization: dict[str, float],
    *,
    policy: Policy = POLICY,
    moves: list[MoveIntent] | None = None,
    starting: dict[str, int] | None = None,
    running: int = 0,
) -> list[tuple[str, str, int]]:
    got, _ = plan_scale_up(
        policy,
        states(fleet, utilization, policy, starting=starting),
        moves or [],
        starting or {},
        running,
    )
    return [(u.pool, u.tier, u.count) for u in got]


def provider_engine(
    id: str, tier: str, *, slots: int = 4, registered_at: float = -1000.0
) -> Engine:
    return make_engine(
        id, ZH, tier=tier, slots=slots, provider=PROVIDER, registered_at=registered_at
    )


def downs(
    fleet: Fleet,
    utilization: float,
    *,
    policy: Policy = POLICY,
    moves: list[MoveIntent] | None = None,
    window: int = FULL,
) -> list[str]:
    got, _ = plan_scale_down(
        policy, fleet, states(fleet, {ZH: utilization}, policy, window), moves or [], NOW
    )
    return [d.instance_id for d in got]


# -- choose_tier -------------------------------------------------------------------------


def test_cheapest_tier_that_starts_in_time() -> None:
    assert choose_tier(provider(), within_s=60.0) == "cvm"


def test_faster_tier_when_the_cheap_one_starts_too_late() -> None:
    assert choose_tier(provider(cvm=30.0), within_s=10.0) == "serverless"


def test_fastest_tier_when_none_starts_in_time() -> None:
    assert choose_tier(provider(cvm=30.0, serverless=20.0), within_s=10.0) == "serverless"


def test_equal_prices_prefer_the_faster_start() -> None:
    same = replace(provider(cvm=8.0), price_per_hour={"cvm": 1.0, "serverless": 1.0})
    assert choose_tier(same, within_s=60.0) == "serverless"


# -- plan_scale_up -----------------------------------------------------------------------

BUSY = Fleet.of(zh(3))  # 12 slots; en-public has no engines, so no pool can lend


def test_no_provider_no_scale_up() -> None:
    policy = replace(POLICY, provider=None)
    assert plan_scale_up(policy, states(BUSY, {ZH: 0.95}, policy), [], {}, 0) == ([], [])


def test_hot_pool_asks_for_the_slots_it_misses() -> None:
    # 12 slots at 0.9 is a load of 10.8 -> 18 slots at the 0.6 target: 6 missing, 2 engines.
    assert ups(BUSY, {ZH: 0.9}) == [(ZH, "cvm", 2)]


def test_normal_scale_up_takes_the_cheap_slow_tier() -> None:
    assert ups(BUSY, {ZH: 0.9}, policy=SLOW_CVM) == [(ZH, "cvm", 2)]


def test_saturated_pool_takes_the_tier_that_starts_urgently() -> None:
    assert ups(BUSY, {ZH: 1.0}, policy=SLOW_CVM) == [(ZH, "serverless", 2)]


def test_moves_this_tick_that_cover_the_gap_need_no_engines() -> None:
    assert ups(BUSY, {ZH: 0.9}, moves=into_zh("en-0", "en-1")) == []


def test_scale_up_asks_only_for_what_moves_leave_uncovered() -> None:
    assert ups(BUSY, {ZH: 0.9}, moves=into_zh("en-0")) == [(ZH, "cvm", 1)]


def test_moves_under_way_count_as_coming() -> None:
    incoming = MoveView("m-1", "en-0", EN, ZH, "switching", "", NOW - 100, NOW - 100)
    fleet = Fleet(BUSY.engines, (incoming,))
    assert ups(fleet, {ZH: 0.9}) == [(ZH, "cvm", 1)]


def test_no_second_request_while_engines_are_starting() -> None:
    assert ups(BUSY, {ZH: 0.95}, starting={ZH: 1}) == []


def test_cooling_pool_asks_for_nothing() -> None:
    recent = MoveView("m-1", "en-0", EN, ZH, "done", "", NOW - 5, NOW - 1)
    assert ups(Fleet(BUSY.engines, (recent,)), {ZH: 0.95}) == []


def test_pool_below_its_min_asks_for_the_missing_engines_urgently() -> None:
    policy = replace(bounds(3, 8), provider=SLOW_CVM.provider)
    assert ups(Fleet.of(zh(1)), {ZH: 0.2}, policy=policy) == [(ZH, "serverless", 2)]
    assert ups(Fleet.of(zh(1)), {ZH: 0.2}, policy=policy, starting={ZH: 1}) == [
        (ZH, "serverless", 1)
    ]


def test_pool_that_may_not_scale_asks_for_nothing() -> None:
    policy = replace(POLICY, pools=tuple(replace(p, scale=False) for p in POLICY.pools))
    assert ups(BUSY, {ZH: 1.2}, policy=policy) == []


def test_provider_never_runs_more_than_its_max_engines() -> None:
    assert ups(BUSY, {ZH: 1.5}, running=3) == [(ZH, "cvm", 1)]
    assert ups(BUSY, {ZH: 1.5}, running=4) == []


@pytest.mark.parametrize(("most", "expected"), [(3, []), (4, [(ZH, "cvm", 1)])])
def test_scale_up_never_takes_a_pool_above_its_max(
    most: int, expected: list[tuple[str, str, int]]
) -> None:
    policy = bounds(1, most)
    assert ups(BUSY, {ZH: 1.5}, policy=policy) == expected


def test_scale_up_and_this_ticks_moves_together_stay_within_max() -> None:
    policy = bounds(1, 4)
    # One engine is moving in this tick: with 3 there, that fills the pool.
    assert ups(BUSY, {ZH: 1.5}, policy=policy, moves=into_zh("en-0")) == []


def test_scale_up_says_why() -> None:
    _, decisions = plan_scale_up(POLICY, states(BUSY, {ZH: 0.9}), [], {}, 0)
    assert [(d.kind, d.pool, d.reason) for d in decisions] == [("scale_up", ZH, "2 x cvm")]
    assert "utilisation 0.90 > 0.8" in decisions[0].inputs


# -- plan_scale_down ---------------------------------------------------------------------

MIXED = Fleet.of([*zh(2), provider_engine("p-cvm", "cvm"), provider_engine("p-sls", "serverless")])


def test_idle_pool_gives_back_serverless_first_then_cvm() -> None:
    assert downs(MIXED, 0.1) == ["p-sls", "p-cvm"]


def test_never_gives_back_fixed_engines() -> None:
    assert downs(Fleet.of(zh(4)), 0.0) == []


def test_gives_back_at_most_max_moves_per_tick() -> None:
    policy = replace(POLICY, loop=replace(POLICY.loop, max_moves_per_tick=1))
    assert downs(MIXED, 0.1, policy=policy) == ["p-sls"]


def test_keeps_enough_engines_for_the_target() -> None:
    fleet = Fleet.of(
        [
            make_engine("zh-0", ZH, slots=2),
            make_engine("zh-1", ZH, slots=2),
            provider_engine("p-cvm", "cvm", slots=8),
            provider_engine("p-sls", "serverless", slots=8),
        ]
    )
    # 20 slots at 0.25 is a load of 5: without both provider engines 4 slots run at 1.25.
    assert downs(fleet, 0.25) == ["p-sls"]


def test_never_gives_back_below_min() -> None:
    policy = bounds(3, 8)
    assert downs(MIXED, 0.0, policy=policy) == ["p-sls"]


@pytest.mark.parametrize("utilization", [0.3, 0.5])
def test_no_give_back_at_or_above_the_low_watermark(utilization: float) -> None:
    assert downs(MIXED, utilization + 1e-9) == []


def test_no_give_back_before_the_window_is_warm() -> None:
    assert downs(MIXED, 0.0, window=3) == []


def test_no_give_back_while_the_pool_cools_down() -> None:
    recent = MoveView("m-1", "en-0", ZH, EN, "done", "", NOW - 5, NOW - 1)
    assert downs(Fleet(MIXED.engines, (recent,)), 0.0) == []


def test_no_give_back_from_a_pool_in_this_ticks_moves() -> None:
    moves = [MoveIntent("zh-0", ZH, EN, "en hot")]
    assert downs(MIXED, 0.0, moves=moves) == []


def test_provider_engine_stays_min_stay_after_it_registered() -> None:
    fresh = provider_engine("p-new", "serverless", registered_at=NOW - 29)
    fleet = Fleet.of([*zh(2), provider_engine("p-cvm", "cvm"), fresh])
    assert downs(fleet, 0.0) == ["p-cvm"]


def test_provider_engine_that_moved_recently_is_kept() -> None:
    moved = MoveView("m-1", "p-sls", EN, ZH, "done", "", NOW - 20, NOW - 16)
    assert downs(Fleet(MIXED.engines, (moved,)), 0.0) == ["p-cvm"]


def test_no_provider_no_give_back() -> None:
    policy = replace(POLICY, provider=None)
    assert downs(MIXED, 0.0, policy=policy) == []
