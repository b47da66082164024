"""One tick of decisions: admission of new engines, tenant alias lists, and the whole plan."""

from __future__ import annotations

from dataclasses import replace

from scheduler.actions import SetPool, TenantList
from scheduler.fleet import Engine, Fleet
from scheduler.plan import plan, tenant_lists
from scheduler.policy import DEFAULT_POLICY_TEXT, Policy
from scheduler.pools import Memory
from tests.support.sim_fleet import FakeFleet, make_engine, make_policy, warm_memory

ZH, EN = "zh-public", "en-public"
NOW = 1000.0
POLICY = make_policy(zh_public=(0, 8), en_public=(0, 8))
"""Pools that may be empty, so an empty pool asks no provider for engines."""
DEFAULT = make_policy()

TWO_ZH_POOLS = DEFAULT_POLICY_TEXT.replace('"en-public"', '"zh-b"').replace('"en"', '"zh"')
TENANTS = (
    DEFAULT_POLICY_TEXT
    + '\n[[tenants]]\ntenant = "acme"\nlang = "zh"\naliases = ["zh-acme", "zh-public"]\n'
    + '\n[[tenants]]\ntenant = "acme"\nlang = "en"\naliases = ["en-public"]\n'
)


def busy(id: str, pool: str, in_flight: int, *, slots: int = 4) -> Engine:
    return make_engine(id, pool, slots=slots, in_flight=in_flight)


def new(id: str, lang: str = "zh", *, state: str = "ready", admin_drained: bool = False) -> Engine:
    """An engine that registered without a pool."""
    return make_engine(id, "", lang=lang, home="", state=state, admin_drained=admin_drained)


def bare(text: str, **pools: tuple[int, int]) -> Policy:
    """The policy of `text`, its pools allowed to be empty unless `pools` says otherwise."""
    bounds = {p.name.replace("-", "_"): (0, p.max) for p in make_policy(text).pools}
    return make_policy(text, **(bounds | pools))


def admitted(
    policy: Policy, engines: list[Engine], starting: dict[str, int] | None = None
) -> list[tuple[str, str]]:
    memory = Memory.for_policy(policy)
    decided = plan(policy, Fleet.of(engines), memory, NOW, starting=starting)
    return [(a.instance_id, a.pool) for a in decided.admissions]


# -- admission ---------------------------------------------------------------------------


def test_new_engine_is_admitted_into_the_pool_of_its_language() -> None:
    engines = [busy("zh-0", ZH, 2), busy("en-0", EN, 2), new("zh-new"), new("en-new", "en")]
    decided = plan(POLICY, Fleet.of(engines), Memory.for_policy(POLICY), NOW)
    assert decided.admissions == (SetPool("en-new", EN, EN), SetPool("zh-new", ZH, ZH))
    assert decided.acts


def test_admission_picks_the_pool_furthest_below_target() -> None:
    """The pool that, even with the engine, would run busiest against its target."""
    policy = bare(TWO_ZH_POOLS)
    engines = [busy("a-0", ZH, 3), busy("b-0", "zh-b", 1), new("zh-new")]
    assert admitted(policy, engines) == [("zh-new", ZH)]
    engines = [busy("a-0", ZH, 1), busy("b-0", "zh-b", 3), new("zh-new")]
    assert admitted(policy, engines) == [("zh-new", "zh-b")]


def test_engines_admitted_in_one_tick_spread_over_the_pools() -> None:
    policy = bare(TWO_ZH_POOLS)
    engines = [busy("a-0", ZH, 2), busy("b-0", "zh-b", 2), new("zh-1"), new("zh-2")]
    assert sorted(pool for _, pool in admitted(policy, engines)) == ["zh-b", ZH]


def test_admission_fills_a_pool_below_its_min_first() -> None:
    policy = bare(TWO_ZH_POOLS, zh_b=(1, 8))
    engines = [busy("a-0", ZH, 4), busy("a-1", ZH, 4), new("zh-new")]
    assert admitted(policy, engines) == [("zh-new", "zh-b")]


def test_admission_stays_within_max() -> None:
    policy = bare(TWO_ZH_POOLS, zh_public=(1, 1))
    engines = [busy("a-0", ZH, 0), busy("b-0", "zh-b", 4), new("zh-new")]
    assert admitted(policy, engines) == [("zh-new", "zh-b")]


def test_no_admission_when_every_pool_of_the_language_is_full() -> None:
    policy = bare(DEFAULT_POLICY_TEXT, zh_public=(1, 1))
    engines = [busy("zh-0", ZH, 0), new("zh-new"), new("zh-other")]
    decided = plan(policy, Fleet.of(engines), Memory.for_policy(policy), NOW)
    assert decided.admissions == ()
    holds = [(d.kind, d.pool, d.reason) for d in decided.decisions if d.kind == "hold"]
    assert ("hold", "zh-new", "no zh pool has room") in holds


def test_engines_a_provider_is_starting_keep_their_place_under_max() -> None:
    policy = bare(DEFAULT_POLICY_TEXT, zh_public=(1, 2))
    engines = [busy("zh-0", ZH, 2), new("zh-new")]
    assert admitted(policy, engines, starting={ZH: 1}) == []
    assert admitted(policy, engines) == [("zh-new", ZH)]


def test_engine_of_a_language_without_a_pool_waits() -> None:
    decided = plan(POLICY, Fleet.of([new("fr-0", "fr")]), Memory.for_policy(POLICY), NOW)
    assert decided.admissions == ()
    assert [d.reason for d in decided.decisions] == ["no fr pool has room"]


def test_engine_not_ready_yet_is_not_admitted() -> None:
    engines = [new("zh-1", state="switching"), new("zh-2", admin_drained=True)]
    assert admitted(POLICY, engines) == []


# -- tenant alias lists ------------------------------------------------------------------


def test_tenant_list_keeps_policy_order_when_every_alias_has_a_ready_engine() -> None:
    policy = bare(TENANTS)
    fleet = Fleet.of([busy("acme-0", "zh-acme", 0), busy("zh-0", ZH, 0), busy("en-0", EN, 0)])
    assert tenant_lists(policy, fleet) == (
        TenantList("acme", "zh", ("zh-acme", "zh-public")),
        TenantList("acme", "en", ("en-public",)),
    )


def test_tenant_list_skips_an_alias_with_no_ready_engine() -> None:
    policy = bare(TENANTS)
    drained = make_engine("acme-0", "zh-acme", admin_drained=True)
    switching = make_engine("acme-1", "zh-acme", state="switching")
    fleet = Fleet.of([drained, switching, busy("zh-0", ZH, 0)])
    assert tenant_lists(policy, fleet)[0].aliases == ("zh-public",)


def test_tenant_list_falls_back_to_every_alias_when_none_has_a_ready_engine() -> None:
    policy = bare(TENANTS)
    fleet = Fleet.of([make_engine("zh-0", ZH, state="unhealthy")])
    assert tenant_lists(policy, fleet) == (
        TenantList("acme", "zh", ("zh-acme", "zh-public")),
        TenantList("acme", "en", ("en-public",)),
    )


def test_plan_publishes_the_tenant_lists() -> None:
    policy = bare(TENANTS)
    fleet = Fleet.of([busy("zh-0", ZH, 0)])
    decided = plan(policy, fleet, Memory.for_policy(policy), NOW)
    assert decided.tenants[0] == TenantList("acme", "zh", ("zh-public",))
    assert not decided.acts


# -- the whole plan ----------------------------------------------------------------------


def hot_zh(count: int = 3, lenders: int = 3) -> list[Engine]:
    """zh-public at 1.0 (every slot busy), en-public idle."""
    return [busy(f"zh-{i}", ZH, 4) for i in range(count)] + [
        busy(f"en-{i}", EN, 0) for i in range(lenders)
    ]


def warm(policy: Policy) -> Memory:
    return warm_memory(policy, {ZH: [1.0] * 10, EN: [0.0] * 10}, NOW - 1)


def test_plan_observes_this_ticks_utilisation() -> None:
    memory = Memory.for_policy(DEFAULT)
    engines = [busy("zh-0", ZH, 3), busy("en-0", EN, 1)]
    decided = plan(DEFAULT, Fleet.of(engines), memory, NOW)
    assert memory.window.mean(ZH) == 0.75
    assert decided.pools[EN].utilization == 0.25
    assert not decided.acts


def test_plan_borrows_before_it_scales_up() -> None:
    memory = warm(DEFAULT)
    decided = plan(DEFAULT, Fleet.of(hot_zh()), memory, NOW)
    # 12 slots busy -> 20 at the 0.6 target: 8 missing. Two moves bring 8 slots.
    assert [(m.from_pool, m.to_pool) for m in decided.moves] == [(EN, ZH), (EN, ZH)]
    assert decided.scale_up == ()
    assert decided.acts
    assert memory.scaled_at == {}


def test_plan_scales_up_only_what_moves_leave_uncovered() -> None:
    engines = [make_engine(f"zh-{i}", ZH, in_flight=4, queued=2) for i in range(3)]
    engines += [busy(f"en-{i}", EN, 0) for i in range(3)]
    memory = warm_memory(DEFAULT, {ZH: [1.5] * 10, EN: [0.0] * 10}, NOW - 1)
    decided = plan(DEFAULT, Fleet.of(engines), memory, NOW)
    # A load of 18 needs 30 slots: 18 missing, 8 come with two moves, 3 engines of 4 for 10.
    assert len(decided.moves) == 2
    assert [(u.pool, u.count) for u in decided.scale_up] == [(ZH, 3)]


def test_plan_scales_up_what_no_lender_can_give_and_starts_the_cooldown() -> None:
    memory = warm(DEFAULT)
    decided = plan(DEFAULT, Fleet.of(hot_zh(lenders=1)), memory, NOW)
    assert decided.moves == ()
    assert [(u.pool, u.tier, u.count) for u in decided.scale_up] == [(ZH, "cvm", 2)]
    assert memory.scaled_at == {ZH: NOW}
    later = plan(DEFAULT, Fleet.of(hot_zh(lenders=1)), memory, NOW + 1, starting={ZH: 2})
    assert later.pools[ZH].cooling
    assert not later.acts


def test_engine_admitted_into_an_empty_pool_counts_towards_its_min() -> None:
    policy = make_policy()
    decided = plan(
        policy, Fleet.of([new("zh-0"), busy("en-0", EN, 0)]), Memory.for_policy(policy), NOW
    )
    assert [(a.instance_id, a.pool) for a in decided.admissions] == [("zh-0", ZH)]
    assert decided.scale_up == ()


def test_admission_and_scale_up_in_one_tick_stay_within_max() -> None:
    policy = make_policy(zh_public=(1, 4))
    engines = [*hot_zh(lenders=1), new("zh-new")]
    decided = plan(policy, Fleet.of(engines), warm(policy), NOW)
    assert [a.pool for a in decided.admissions] == [ZH]
    assert decided.scale_up == ()


def test_settled_fleet_under_steady_load_makes_no_decisions() -> None:
    fleet = FakeFleet.of(DEFAULT, [busy(f"zh-{i}", ZH, 0) for i in range(3)] + hot_zh(0, 3))
    ticks = fleet.run_utilization(lambda now: {ZH: 0.5, EN: 0.5}, 60)
    assert not any(t.plan.acts for t in ticks)
    assert {d.kind for t in ticks for d in t.plan.decisions} == set()


def test_hot_pool_recovers_through_moves_and_the_lender_keeps_its_target() -> None:
    engines = hot_zh(3, 4)
    fleet = FakeFleet.of(replace(DEFAULT, provider=None), engines)
    fleet.run(lambda now: {ZH: 12.0, EN: 1.0}, 120)
    pools = fleet.history[-1].plan.pools
    assert pools[ZH].utilization <= DEFAULT.pools[0].high_watermark
    assert pools[EN].utilization <= DEFAULT.pools[1].target_utilization
    moved = [m for t in fleet.history for m in t.plan.moves]
    assert moved
    assert {(m.from_pool, m.to_pool) for m in moved} == {(EN, ZH)}
    assert all(m.state == "done" for m in fleet.moves)
