"""The scheduler's registry adapter: listings in, labels, drains, directives and moves out.

Every write carries the leader's fencing number (`x-tidepool-fence`), so a
scheduler that lost its leadership cannot change anything. gRPC errors become
`RegistryCallError` (or `FencedError`) here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import grpc

from registry.client import MOVE_STATE_NAMES, MOVE_STATES_BY_NAME, freshest, state_name
from scheduler.errors import FencedError, RegistryCallError
from scheduler.fleet import HOME_LABEL, PROVIDER_LABEL, Engine, MoveView
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc
from tidepool.runtime.channel import auth_metadata, open_channel
from tidepool.runtime.replicas import parse_addresses, rebind
from tidepool.runtime.rules import POOL_LABEL

T = TypeVar("T")
log = logging.getLogger("tidepool.scheduler")
CALL_TIMEOUT_S = 5.0
FENCE_HEADER = "x-tidepool-fence"


def engine_from_pb(instance: Any) -> Engine:
    labels = instance.labels
    return Engine(
        id=instance.id,
        lang=labels.get("lang", ""),
        tier=labels.get("tier", ""),
        weight=instance.weight,
        slots=instance.load.slots or instance.capacity,
        state=state_name(instance.state),
        in_flight=instance.load.in_flight,
        queued=instance.load.queued,
        pool=labels.get(POOL_LABEL, ""),
        home=labels.get(HOME_LABEL, ""),
        provider=labels.get(PROVIDER_LABEL, ""),
        admin_drained=instance.admin_drained,
        registered_at=instance.registered_at.ToNanoseconds() / 1e9,
    )


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name} {error.details() or ''}".strip()
    return repr(error)


def move_from_pb(move: Any) -> MoveView:
    return MoveView(
        id=move.id,
        instance_id=move.instance_id,
        from_pool=move.from_pool,
        to_pool=move.to_pool,
        state=MOVE_STATE_NAMES.get(move.state, "unknown"),
        reason=move.reason,
        started_at=move.started_at.ToNanoseconds() / 1e9,
        updated_at=move.updated_at.ToNanoseconds() / 1e9,
        from_lang=move.from_lang,
        to_lang=move.to_lang,
    )


class SchedulerRegistry:
    """Async stubs with the admin token and, once leading, the fencing number.

    `targets` may name several replicas ("A,B,C"): a call that cannot reach one goes
    to the next (each once per call). A write that moves is still fenced, so a
    deposed leader cannot land one through another replica either.
    """

    def __init__(self, targets: str, token: str | None) -> None:
        self.targets = parse_addresses(targets)
        self._index = 0
        self._channels: list[grpc.aio.Channel] = []
        self._auth = auth_metadata(token)
        self.fence: int | None = None
        self._readers: dict[str, tuple[grpc.aio.Channel, pb_grpc.RegistryStub]] = {}
        """A channel and stub per replica for listing the whole fleet's load (`engines`)."""
        self._missing: frozenset[str] = frozenset()
        """Replicas the last listing went without (a warning when that changes)."""
        self._connect()

    @property
    def target(self) -> str:
        return self.targets[self._index]

    def _connect(self) -> None:
        channel = open_channel(self.target)
        self._channels.append(channel)
        self._registry = pb_grpc.RegistryStub(channel)
        self._admin = pb_grpc.AdminStub(channel)
        self._scheduling = pb_grpc.SchedulingStub(channel)

    def _stubs(self) -> tuple[object, ...]:
        return (self._registry, self._admin, self._scheduling)

    async def close(self) -> None:
        for channel in [*self._channels, *(channel for channel, _ in self._readers.values())]:
            await channel.close()

    async def _call(self, name: str, method: Callable[..., Awaitable[T]], request: Any) -> T:
        metadata = self._auth
        if self.fence is not None:
            metadata = (*metadata, (FENCE_HEADER, str(self.fence)))
        for attempt in range(len(self.targets)):
            try:
                return await method(request, timeout=CALL_TIMEOUT_S, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                code, details = exc.code(), exc.details() or ""
                last = attempt == len(self.targets) - 1
                if code != grpc.StatusCode.UNAVAILABLE or last:
                    error = FencedError if FENCE_HEADER in details else RegistryCallError
                    raise error(name, code.name, details) from None
            old = self._stubs()
            await self._channels.pop().close()
            self._index = (self._index + 1) % len(self.targets)
            self._connect()
            method = rebind(method, old, self._stubs())
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- leadership -------------------------------------------------------

    async def acquire(self, holder: str, ttl_s: float) -> Any:
        request = pb.AcquireLeadershipRequest(holder=holder)
        request.ttl.FromNanoseconds(int(ttl_s * 1e9))
        return await self._call("AcquireLeadership", self._scheduling.AcquireLeadership, request)

    async def release(self, holder: str) -> None:
        request = pb.ReleaseLeadershipRequest(holder=holder)
        await self._call("ReleaseLeadership", self._scheduling.ReleaseLeadership, request)

    # ---- reads ------------------------------------------------------------

    async def engines(self) -> list[Engine]:
        """The fleet with every engine's load. With several replicas, each is listed: an
        engine's load is known only to the replica holding its heartbeat stream."""
        if len(self.targets) == 1:
            return [engine_from_pb(i) for i in await self._pages(self._list_current)]
        answers = await asyncio.gather(
            *(self._pages(partial(self._read, self._reader(t))) for t in self.targets),
            return_exceptions=True,
        )
        listings = [a for a in answers if isinstance(a, list)]
        failed = [
            (target, answer)
            for target, answer in zip(self.targets, answers, strict=True)
            if not isinstance(answer, list)
        ]
        errors = [f"{target}: {_describe(answer)}" for target, answer in failed]
        if not listings:
            raise RegistryCallError("ListInstances", "UNAVAILABLE", "; ".join(errors))
        missing = frozenset(target for target, _ in failed)
        if missing != self._missing:  # one line when it starts or changes, one when it ends
            if missing:
                log.warning("fleet listed without: %s", "; ".join(errors))
            else:
                log.info("fleet listed from every replica again")
            self._missing = missing
        return [engine_from_pb(i) for i in freshest(listings)]

    async def _list_current(self, request: pb.ListInstancesRequest) -> pb.ListInstancesResponse:
        return await self._call("ListInstances", self._registry.ListInstances, request)

    @staticmethod
    async def _pages(
        call: Callable[[pb.ListInstancesRequest], Awaitable[pb.ListInstancesResponse]],
    ) -> list[pb.Instance]:
        instances: list[pb.Instance] = []
        token = ""
        while True:
            response = await call(pb.ListInstancesRequest(page_token=token))
            instances.extend(response.instances)
            token = response.next_page_token
            if not token:
                return instances

    def _reader(self, target: str) -> pb_grpc.RegistryStub:
        if target not in self._readers:
            channel = open_channel(target)
            self._readers[target] = (channel, pb_grpc.RegistryStub(channel))
        return self._readers[target][1]

    async def _read(
        self, stub: pb_grpc.RegistryStub, request: pb.ListInstancesRequest
    ) -> pb.ListInstancesResponse:
        response: pb.ListInstancesResponse = await stub.ListInstances(
            request, timeout=CALL_TIMEOUT_S, metadata=self._auth
        )
        return response

    async def moves(self) -> list[MoveView]:
        response = await self._call("ListMoves", self._scheduling.ListMoves, pb.ListMovesRequest())
        return [move_from_pb(m) for m in response.moves]

    async def aliases(self) -> dict[str, str]:
        response = await self._call(
            "ListAliases", self._registry.ListAliases, pb.ListAliasesRequest()
        )
        return {a.name: a.selector for a in response.aliases}

    async def tenants(self) -> dict[tuple[str, str], tuple[str, ...]]:
        response = await self._call(
            "ListTenants", self._registry.ListTenants, pb.ListTenantsRequest()
        )
        return {(t.tenant, t.lang): tuple(t.aliases) for t in response.tenants}

    # ---- writes (fenced) --------------------------------------------------

    async def set_pool(self, instance_id: str, pool: str, home: str) -> None:
        labels = {POOL_LABEL: pool, **({HOME_LABEL: home} if home else {})}
        request = pb.SetLabelsRequest(instance_id=instance_id, set=labels)
        await self._call("SetLabels", self._admin.SetLabels, request)

    async def drain(self, instance_id: str) -> None:
        await self._call("Drain", self._admin.Drain, pb.DrainRequest(instance_id=instance_id))

    async def restore(self, instance_id: str) -> None:
        request = pb.RestoreRequest(instance_id=instance_id)
        await self._call("Restore", self._admin.Restore, request)

    async def switch_model(self, instance_id: str, lang: str) -> None:
        directive = pb.Directive(kind=pb.Directive.KIND_SWITCH_MODEL, model=lang)
        request = pb.SendDirectiveRequest(instance_id=instance_id, directive=directive)
        await self._call("SendDirective", self._admin.SendDirective, request)

    async def put_alias(self, name: str, selector: str) -> None:
        request = pb.PutAliasRequest(alias=pb.Alias(name=name, selector=selector))
        await self._call("PutAlias", self._admin.PutAlias, request)

    async def put_tenant(self, tenant: str, lang: str, aliases: tuple[str, ...]) -> None:
        route = pb.TenantRoute(tenant=tenant, lang=lang, aliases=list(aliases))
        await self._call("PutTenant", self._admin.PutTenant, pb.PutTenantRequest(route=route))

    async def create_move(
        self, instance_id: str, to_pool: str, reason: str, from_lang: str, to_lang: str
    ) -> MoveView:
        move = pb.Move(
            instance_id=instance_id,
            to_pool=to_pool,
            state=pb.Move.STATE_PENDING,
            reason=reason,
            from_lang=from_lang,
            to_lang=to_lang,
        )
        stored = await self._call("PutMove", self._scheduling.PutMove, pb.PutMoveRequest(move=move))
        return move_from_pb(stored)

    async def update_move(
        self, move: MoveView, state: str, reason: str, from_lang: str = "", to_lang: str = ""
    ) -> MoveView:
        message = pb.Move(
            id=move.id,
            instance_id=move.instance_id,
            state=MOVE_STATES_BY_NAME[state],
            reason=reason,
            from_lang=from_lang,
            to_lang=to_lang,
        )
        request = pb.PutMoveRequest(move=message)
        return move_from_pb(await self._call("PutMove", self._scheduling.PutMove, request))

    async def put_pools(self, pools: list[pb.PoolStatus]) -> None:
        request = pb.PutPoolsRequest(pools=pools)
        await self._call("PutPools", self._scheduling.PutPools, request)
