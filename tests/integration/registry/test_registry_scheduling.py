"""The Scheduling service on a real registry: leader lease, fencing, moves, pools and tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from registry.fencing import FENCE_HEADER
from tests.support.registry_harness import (
    Clients,
    RawEngine,
    clients,
    registration,
    running_registry,
    wait_for,
)
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = pytest.mark.timeout(30)

STEADY = {"heartbeat_interval_s": 1.0, "ttl_s": 30.0, "restart_grace_s": 30.0}
ENGINE, READ, ADMIN = "engine-secret", "read-secret", "admin-secret"
TOKENS = {**STEADY, "engine_token": ENGINE, "read_token": READ, "admin_token": ADMIN}
SHORT_TTL_S = 0.5
LONG_TTL_S = 30.0
LAPSE_TIMEOUT_S = 5.0
STALE = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT
POOL_LABELS = {"lang": "zh", "tier": "idc", "pool": "zh-a"}
POOLS = [
    pb.PoolStatus(name="zh-a", lang="zh", size=2, ready=2, utilization=0.5, desired=2, max=4),
    pb.PoolStatus(name="en-a", lang="en", size=1, ready=0, moving_in=1, desired=1, max=4),
]


# --- helpers ------------------------------------------------------------------------------


def _fenced(c: Clients, fence: int | str) -> tuple[tuple[str, str], ...]:
    return (*c.md, (FENCE_HEADER, str(fence)))


async def _acquire(c: Clients, holder: str, ttl_s: float = LONG_TTL_S) -> pb.Leadership:
    request = pb.AcquireLeadershipRequest(holder=holder)
    request.ttl.FromNanoseconds(int(ttl_s * 1e9))
    return await c.scheduling.AcquireLeadership(request, metadata=c.md)


async def _lead(c: Clients, holder: str, ttl_s: float = LONG_TTL_S) -> int:
    """Take the leadership (it must be free) and return the fence."""
    leadership = await _acquire(c, holder, ttl_s)
    assert leadership.granted, f"{holder} expected the leadership, got {leadership}"
    return int(leadership.fence)


async def _take_over(c: Clients, holder: str) -> pb.Leadership:
    """Ask for the leadership until the current holder's lease lapses and it is granted."""

    async def granted() -> pb.Leadership | None:
        leadership = await _acquire(c, holder)
        return leadership if leadership.granted else None

    return await wait_for(
        granted, LAPSE_TIMEOUT_S, f"{holder} never got the leadership after the TTL", 0.05
    )


async def _release(c: Clients, holder: str) -> pb.Leadership:
    request = pb.ReleaseLeadershipRequest(holder=holder)
    return await c.scheduling.ReleaseLeadership(request, metadata=c.md)


async def _leadership(c: Clients) -> pb.Leadership:
    return await c.scheduling.GetLeadership(pb.GetLeadershipRequest(), metadata=c.md)


async def _put_move(
    c: Clients, metadata: tuple[tuple[str, str], ...] | None = None, **fields: Any
) -> pb.Move:
    request = pb.PutMoveRequest(move=pb.Move(**fields))
    return await c.scheduling.PutMove(request, metadata=c.md if metadata is None else metadata)


async def _moves(c: Clients) -> list[pb.Move]:
    response = await c.scheduling.ListMoves(pb.ListMovesRequest(), metadata=c.md)
    return list(response.moves)


async def _pools(c: Clients) -> pb.ListPoolsResponse:
    return await c.scheduling.ListPools(pb.ListPoolsRequest(), metadata=c.md)


async def _refused(call: Awaitable[Any], code: grpc.StatusCode, mentions: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await call
    assert excinfo.value.code() == code, excinfo.value.details()
    assert mentions in (excinfo.value.details() or "")


async def _seed(c: Clients) -> None:
    """e-0 sits in pool zh-a; e-1 is registered but in no pool yet."""
    await c.registry.Register(
        registration(9000, instance_id="e-0", labels=POOL_LABELS), metadata=c.md
    )
    await c.registry.Register(registration(9001, instance_id="e-1"), metadata=c.md)
    alias = pb.Alias(name="zh", selector="lang=zh")
    await c.admin.PutAlias(pb.PutAliasRequest(alias=alias), metadata=c.md)


async def _state(c: Clients) -> tuple[Any, ...]:
    """Everything a fenced write could change; a refused write must leave all of it."""
    instances = await c.registry.ListInstances(pb.ListInstancesRequest(), metadata=c.md)
    for instance in instances.instances:  # what heartbeats alone move
        instance.ClearField("load")
        instance.ClearField("last_heartbeat_at")
    pools = await _pools(c)
    pools.ClearField("age")  # grows with time alone
    return (
        instances,
        await c.registry.ListAliases(pb.ListAliasesRequest(), metadata=c.md),
        await c.registry.ListTenants(pb.ListTenantsRequest(), metadata=c.md),
        await _moves(c),
        pools,
    )


def _fenced_writes(
    c: Clients, metadata: tuple[tuple[str, str], ...]
) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One call per kind of fenced write; each would change what `_state` shows."""
    return {
        "SetLabels": lambda: c.admin.SetLabels(
            pb.SetLabelsRequest(instance_id="e-0", set={"pool": "stolen"}), metadata=metadata
        ),
        "SetWeight": lambda: c.admin.SetWeight(
            pb.SetWeightRequest(instance_id="e-0", weight=5), metadata=metadata
        ),
        "Drain": lambda: c.admin.Drain(pb.DrainRequest(instance_id="e-0"), metadata=metadata),
        "PutAlias": lambda: c.admin.PutAlias(
            pb.PutAliasRequest(alias=pb.Alias(name="zh", selector="pool=stolen")),
            metadata=metadata,
        ),
        "PutTenant": lambda: c.admin.PutTenant(
            pb.PutTenantRequest(route=pb.TenantRoute(tenant="evil", lang="zh", aliases=["zh"])),
            metadata=metadata,
        ),
        "DeleteAlias": lambda: c.admin.DeleteAlias(
            pb.DeleteAliasRequest(name="zh"), metadata=metadata
        ),
        "PutMove": lambda: _put_move(c, metadata, instance_id="e-0", to_pool="en-a"),
        "PutPools": lambda: c.scheduling.PutPools(
            pb.PutPoolsRequest(pools=POOLS), metadata=metadata
        ),
    }


# --- leadership ---------------------------------------------------------------------------


async def test_first_holder_is_granted_a_fence_and_keeps_it_on_renewal(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        free = await _leadership(c)
        assert (free.holder, free.granted, free.fence) == ("", False, 0)
        first = await _acquire(c, "sched-a")
        assert (first.holder, first.granted) == ("sched-a", True)
        assert first.fence >= 1
        assert 0 < first.remaining.ToNanoseconds() / 1e9 <= LONG_TTL_S
        again = await _acquire(c, "sched-a")
        assert (again.holder, again.granted, again.fence) == ("sched-a", True, first.fence)
        seen = await _leadership(c)
        assert (seen.holder, seen.granted, seen.fence) == ("sched-a", False, first.fence)


async def test_second_holder_is_refused_until_the_first_lease_lapses(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        first = await _lead(c, "sched-a", SHORT_TTL_S)
        refused = await _acquire(c, "sched-b")
        assert (refused.holder, refused.granted, refused.fence) == ("sched-a", False, first)
        taken = await _take_over(c, "sched-b")
        assert taken.holder == "sched-b"
        assert taken.fence > first
        # The deposed leader, coming back, is now the one refused.
        late = await _acquire(c, "sched-a")
        assert (late.holder, late.granted, late.fence) == ("sched-b", False, taken.fence)


async def test_release_lets_the_standby_in_at_once_with_a_higher_fence(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        first = await _lead(c, "sched-a")
        assert not (await _acquire(c, "sched-b")).granted
        # Only the holder can release: another holder's release is a no-op.
        assert (await _release(c, "sched-b")).holder == "sched-a"
        released = await _release(c, "sched-a")
        assert (released.holder, released.granted, released.fence) == ("", False, first)
        second = await _lead(c, "sched-b")
        assert second > first
        assert (await _leadership(c)).holder == "sched-b"


@pytest.mark.parametrize("ttl_s", [0.0, 0.4, 60.5])
async def test_ttl_out_of_bounds_is_invalid_and_grants_nothing(
    tmp_path: Path, ttl_s: float
) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _refused(_acquire(c, "sched-a", ttl_s), INVALID, "ttl")
        assert (await _leadership(c)).holder == ""


async def test_malformed_holder_is_invalid(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _refused(_acquire(c, ""), INVALID, "holder")
        await _refused(_acquire(c, "no spaces allowed"), INVALID, "holder")
        assert (await _leadership(c)).holder == ""


# --- fencing ------------------------------------------------------------------------------


async def test_deposed_leaders_writes_are_refused_and_change_nothing(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        engine = RawEngine(c, "e-0")
        await engine.attach()
        try:
            old = await _lead(c, "sched-a", SHORT_TTL_S)
            new = int((await _take_over(c, "sched-b")).fence)
            before = await _state(c)
            for name, call in _fenced_writes(c, _fenced(c, old)).items():
                with pytest.raises(grpc.aio.AioRpcError) as excinfo:
                    await call()
                assert excinfo.value.code() == STALE, name
                assert f"{FENCE_HEADER}: {old} is stale" in (excinfo.value.details() or ""), name
            drain = pb.Directive(kind=pb.Directive.KIND_DRAIN)
            await _refused(
                c.admin.SendDirective(
                    pb.SendDirectiveRequest(instance_id="e-0", directive=drain),
                    metadata=_fenced(c, old),
                ),
                STALE,
                "sched-b",
            )
            assert await _state(c) == before, "a deposed leader's write changed the registry"
            # The current fence passes; the engine's first directive is the fenced one,
            # so the refused DRAIN never reached it.
            resume = pb.Directive(kind=pb.Directive.KIND_RESUME)
            await c.admin.SendDirective(
                pb.SendDirectiveRequest(instance_id="e-0", directive=resume),
                metadata=_fenced(c, new),
            )
            received = await asyncio.wait_for(engine.directives.get(), 5)
            assert received.kind == pb.Directive.KIND_RESUME
        finally:
            engine.break_stream()


async def test_current_leaders_fenced_writes_pass(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        fence = await _lead(c, "sched-a")
        writes = _fenced_writes(c, _fenced(c, fence))
        for name in ("SetLabels", "PutAlias", "PutMove", "PutPools"):
            await writes[name]()
        instances, aliases, _tenants, moves, pools = await _state(c)
        (e0,) = [i for i in instances.instances if i.id == "e-0"]
        assert e0.labels["pool"] == "stolen"
        assert [(a.name, a.selector) for a in aliases.aliases] == [("zh", "pool=stolen")]
        # The move was prepared from e-0's labels after SetLabels moved it.
        assert [(m.instance_id, m.from_pool, m.to_pool) for m in moves] == [
            ("e-0", "stolen", "en-a")
        ]
        assert list(pools.pools) == POOLS


async def test_any_fence_is_refused_while_nobody_leads(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        fence = await _lead(c, "sched-a")
        await _release(c, "sched-a")
        before = await _state(c)
        for presented in (fence, fence + 1, 0):
            writes = _fenced_writes(c, _fenced(c, presented))
            for name, call in writes.items():
                with pytest.raises(grpc.aio.AioRpcError) as excinfo:
                    await call()
                assert excinfo.value.code() == STALE, name
                assert "no scheduler holds the leadership" in (excinfo.value.details() or "")
        assert await _state(c) == before


@pytest.mark.parametrize("header", ["abc", "-1", "1.5", "12 ", "9" * 20])
async def test_malformed_fence_header_is_invalid_and_changes_nothing(
    tmp_path: Path, header: str
) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        await _lead(c, "sched-a")
        before = await _state(c)
        for name, call in _fenced_writes(c, _fenced(c, header)).items():
            with pytest.raises(grpc.aio.AioRpcError) as excinfo:
                await call()
            assert excinfo.value.code() == INVALID, name
            assert FENCE_HEADER in (excinfo.value.details() or ""), name
        assert await _state(c) == before


async def test_unfenced_operator_writes_pass_while_a_leader_holds(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        await _lead(c, "sched-a")
        request = pb.SetLabelsRequest(instance_id="e-0", set={"owner": "ops"})
        instance = await c.admin.SetLabels(request, metadata=c.md)
        assert instance.labels["owner"] == "ops"


# --- durability across a restart ----------------------------------------------------------


async def test_fence_keeps_growing_and_moves_survive_a_restart(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        first = await _lead(c, "sched-a")
        await _release(c, "sched-a")
        before = await _lead(c, "sched-b")
        assert before > first
        move = await _put_move(c, instance_id="e-0", to_pool="en-a", reason="rebalance")
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        after_restart = await _leadership(c)
        assert (after_restart.holder, after_restart.fence) == ("", before), (
            "the lease is memory only, the last fence is durable"
        )
        assert await _moves(c) == [move]
        # The same holder as before the restart still gets a new, higher number.
        after = await _lead(c, "sched-b")
        assert after > before
        await _refused(
            _put_move(c, _fenced(c, before), id=move.id, state=pb.Move.STATE_DRAINING),
            STALE,
            f"holds fence {after}",
        )
        updated = await _put_move(c, _fenced(c, after), id=move.id, state=pb.Move.STATE_DRAINING)
        assert updated.state == pb.Move.STATE_DRAINING
        assert await _moves(c) == [updated]


# --- moves --------------------------------------------------------------------------------


async def test_unfenced_put_move_creates_one_pending_move_per_instance(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        move = await _put_move(c, instance_id="e-0", to_pool="en-a", reason="ctl move")
        assert move.id.startswith("m-")
        assert (move.instance_id, move.from_pool, move.to_pool) == ("e-0", "zh-a", "en-a")
        assert (move.state, move.reason) == (pb.Move.STATE_PENDING, "ctl move")
        assert move.started_at == move.updated_at
        assert move.started_at.seconds > 0
        await _refused(_put_move(c, instance_id="e-0", to_pool="en-b"), STALE, "already moving")
        assert await _moves(c) == [move]


@pytest.mark.parametrize(
    ("fields", "code", "mentions"),
    [
        ({"instance_id": "e-1", "to_pool": "en-a"}, STALE, "in no pool"),
        ({"instance_id": "e-9", "to_pool": "en-a"}, grpc.StatusCode.NOT_FOUND, "e-9"),
        ({"instance_id": "e-0", "to_pool": "zh-a"}, STALE, "already in 'zh-a'"),
        ({"instance_id": "e-0", "to_pool": ""}, INVALID, "move.to_pool"),
        (
            {"instance_id": "e-0", "to_pool": "en-a", "state": pb.Move.STATE_DRAINING},
            INVALID,
            "must be pending",
        ),
        (
            {"instance_id": "e-0", "to_pool": "en-a", "state": pb.Move.STATE_DONE},
            INVALID,
            "must be pending",
        ),
        ({"instance_id": "e-0", "to_pool": "en-a", "state": 99}, INVALID, "move.state"),
        (
            {"id": "m-anything", "instance_id": "e-0", "state": pb.Move.STATE_DONE},
            STALE,
            "only the scheduler leader",
        ),
    ],
)
async def test_unfenced_put_move_rules(
    tmp_path: Path, fields: dict[str, Any], code: grpc.StatusCode, mentions: str
) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        await _refused(_put_move(c, **fields), code, mentions)
        assert await _moves(c) == []


async def test_leader_drives_a_move_to_its_end_and_then_it_is_frozen(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _seed(c)
        fence = _fenced(c, await _lead(c, "sched-a"))
        move = await _put_move(c, instance_id="e-0", to_pool="en-a")
        # An operator cannot update it, even to a state a leader could set.
        await _refused(
            _put_move(c, id=move.id, state=pb.Move.STATE_DRAINING), STALE, "scheduler leader"
        )
        for state in (pb.Move.STATE_DRAINING, pb.Move.STATE_SWITCHING, pb.Move.STATE_DONE):
            move = await _put_move(c, fence, id=move.id, state=state, reason=f"now {state}")
            assert move.state == state
        await _refused(
            _put_move(c, fence, id=move.id, state=pb.Move.STATE_ROLLING_BACK),
            STALE,
            "already ended done",
        )
        await _refused(
            _put_move(c, fence, id="m-unknown", state=pb.Move.STATE_DONE),
            grpc.StatusCode.NOT_FOUND,
            "m-unknown",
        )
        assert await _moves(c) == [move]
        # Finished, the instance may move again; the leader may create in any state.
        again = await _put_move(
            c, fence, instance_id="e-0", to_pool="en-b", state=pb.Move.STATE_DRAINING
        )
        assert [m.id for m in await _moves(c)] == [again.id, move.id]


async def test_list_moves_puts_unfinished_oldest_first_then_finished_newest_first(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        for index in range(4):
            labels = {**POOL_LABELS, "pool": "zh-a"}
            request = registration(9000 + index, instance_id=f"e-{index}", labels=labels)
            await c.registry.Register(request, metadata=c.md)
        fence = _fenced(c, await _lead(c, "sched-a"))
        made = [await _put_move(c, instance_id=f"e-{n}", to_pool="en-a") for n in range(4)]
        for move, end in ((made[1], pb.Move.STATE_DONE), (made[3], pb.Move.STATE_ROLLED_BACK)):
            await _put_move(c, fence, id=move.id, state=end)
        assert [m.id for m in await _moves(c)] == [made[0].id, made[2].id, made[3].id, made[1].id]


# --- pools --------------------------------------------------------------------------------


async def test_put_pools_needs_the_leaders_fence(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        nothing = await _pools(c)
        assert (list(nothing.pools), nothing.leader, nothing.HasField("age")) == ([], "", False)
        await _refused(
            c.scheduling.PutPools(pb.PutPoolsRequest(pools=POOLS), metadata=c.md),
            STALE,
            "only the scheduler leader",
        )
        assert await _pools(c) == nothing
        fence = await _lead(c, "sched-a")
        await c.scheduling.PutPools(pb.PutPoolsRequest(pools=POOLS), metadata=_fenced(c, fence))
        published = await _pools(c)
        assert list(published.pools) == POOLS
        assert published.leader == "sched-a"
        assert published.HasField("age")
        assert 0 <= published.age.ToNanoseconds() / 1e9 < 5


async def test_put_pools_replaces_the_whole_list(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        fence = _fenced(c, await _lead(c, "sched-a"))
        await c.scheduling.PutPools(pb.PutPoolsRequest(pools=POOLS), metadata=fence)
        await c.scheduling.PutPools(pb.PutPoolsRequest(pools=POOLS[1:]), metadata=fence)
        assert list((await _pools(c)).pools) == POOLS[1:]


async def test_too_many_pools_is_invalid(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        fence = _fenced(c, await _lead(c, "sched-a"))
        many = [pb.PoolStatus(name=f"p-{n}") for n in range(257)]
        await _refused(
            c.scheduling.PutPools(pb.PutPoolsRequest(pools=many), metadata=fence),
            INVALID,
            "pools",
        )
        assert list((await _pools(c)).pools) == []


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"name": "Not A Name"}, "pools[1].name"),
        ({"name": "zh-a"}, "pools[1].name"),  # twice
        ({"lang": ""}, "pools[1].lang"),
        ({"utilization": float("nan")}, "pools[1].utilization"),
        ({"high_watermark": -0.5}, "pools[1].high_watermark"),
    ],
)
async def test_a_malformed_pool_status_is_invalid_and_publishes_nothing(
    tmp_path: Path, bad: dict[str, object], field: str
) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        fence = _fenced(c, await _lead(c, "sched-a"))
        await c.scheduling.PutPools(pb.PutPoolsRequest(pools=POOLS), metadata=fence)
        broken = pb.PoolStatus()
        broken.CopyFrom(POOLS[1])
        for key, value in bad.items():
            setattr(broken, key, value)
        await _refused(
            c.scheduling.PutPools(pb.PutPoolsRequest(pools=[POOLS[0], broken]), metadata=fence),
            INVALID,
            field,
        )
        assert list((await _pools(c)).pools) == POOLS  # the last good publication stays


# --- tokens -------------------------------------------------------------------------------

Call = Callable[[Clients], Awaitable[object]]

ADMIN_CALLS: dict[str, Call] = {
    "AcquireLeadership": lambda c: _acquire(c, "sched-a"),
    "ReleaseLeadership": lambda c: _release(c, "sched-a"),
    "PutMove": lambda c: _put_move(c, instance_id="e-0", to_pool="en-a"),
    # Without a fence it would be refused anyway, but the token check comes first.
    "PutPools": lambda c: c.scheduling.PutPools(pb.PutPoolsRequest(pools=POOLS), metadata=c.md),
}
READ_CALLS: dict[str, Call] = {
    "GetLeadership": _leadership,
    "ListMoves": _moves,
    "ListPools": _pools,
}


async def _code_of(call: Call, c: Clients) -> grpc.StatusCode:
    try:
        await call(c)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _scheduling_state(c: Clients) -> tuple[Any, ...]:
    admin = c.with_token(ADMIN)
    leadership = await _leadership(admin)
    leadership.ClearField("remaining")  # shrinks with time alone
    return leadership, await _moves(admin), await _pools(admin)


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        ("guessed-secret", grpc.StatusCode.UNAUTHENTICATED),
        (ENGINE, grpc.StatusCode.PERMISSION_DENIED),
        (READ, grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_scheduling_writes_need_the_admin_token(
    tmp_path: Path, token: str | None, code: grpc.StatusCode
) -> None:
    async with running_registry(tmp_path, **TOKENS) as server, clients(server) as c:
        admin = c.with_token(ADMIN)
        await _seed(admin)
        before = await _scheduling_state(c)
        caller = c.with_token(token)
        codes = {name: await _code_of(call, caller) for name, call in ADMIN_CALLS.items()}
        assert codes == dict.fromkeys(ADMIN_CALLS, code)
        assert await _scheduling_state(c) == before, "a refused call changed the registry"
        # Nor can it depose a live leader by releasing on its behalf.
        await _lead(admin, "sched-a")
        held = await _scheduling_state(c)
        assert await _code_of(ADMIN_CALLS["ReleaseLeadership"], caller) == code
        assert await _scheduling_state(c) == held


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (None, grpc.StatusCode.UNAUTHENTICATED),
        (ENGINE, grpc.StatusCode.PERMISSION_DENIED),
        (READ, grpc.StatusCode.OK),
        (ADMIN, grpc.StatusCode.OK),
    ],
)
async def test_scheduling_reads_need_the_read_token(
    tmp_path: Path, token: str | None, code: grpc.StatusCode
) -> None:
    async with running_registry(tmp_path, **TOKENS) as server, clients(server) as c:
        admin = c.with_token(ADMIN)
        await _seed(admin)
        await _lead(admin, "sched-a")
        caller = c.with_token(token)
        codes = {name: await _code_of(call, caller) for name, call in READ_CALLS.items()}
        assert codes == dict.fromkeys(READ_CALLS, code)


async def test_admin_token_can_lead_move_and_publish(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **TOKENS) as server, clients(server) as c:
        admin = c.with_token(ADMIN)
        await _seed(admin)
        codes = {name: await _code_of(call, admin) for name, call in ADMIN_CALLS.items()}
        assert codes == {
            "AcquireLeadership": grpc.StatusCode.OK,
            "ReleaseLeadership": grpc.StatusCode.OK,
            "PutMove": grpc.StatusCode.OK,
            "PutPools": STALE,  # allowed by the token, refused for want of a fence
        }
        fence = await _lead(admin, "sched-b")
        await admin.scheduling.PutPools(
            pb.PutPoolsRequest(pools=POOLS), metadata=_fenced(admin, fence)
        )
        reader = c.with_token(READ)
        assert (await _pools(reader)).leader == "sched-b"
        assert [m.instance_id for m in await _moves(reader)] == ["e-0"]
