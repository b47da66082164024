"""The gRPC edge of the registry: auth, input decoding, and errors turned into statuses.

This is the one place where `RegistryError`s become gRPC status codes (each error
class carries its code) and where unexpected failures become a plain INTERNAL
status instead of a traceback sent to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from registry.address import parse_peer
from registry.admin import AdminOps
from registry.auth import Role, TokenAuth
from registry.catalog import EngineStatus, InstanceView
from registry.convert import (
    ENGINE_STATUS_FROM_PB,
    alias_to_pb,
    instance_to_pb,
    leadership_to_pb,
    move_request_from_pb,
    move_to_pb,
    tenant_to_pb,
)
from registry.core import Attachment, Registration, RegistryCore
from registry.errors import FailedPreconditionError, InvalidArgumentError, RegistryError
from registry.fencing import PRESENTED_FENCE, read_fence
from registry.ratelimit import KeyedRateLimiter
from registry.scheduling import SchedulingOps
from registry.validation import validate_instance_id, validate_lang, validate_name
from registry.watch import DEFAULT_MAX_CHUNK_BYTES, WatchTarget, fit_pages
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

log = logging.getLogger("tidepool.registry")
UNARY_TIMEOUT_S = 10.0
MIN_BEATS_PER_S = 10.0
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 5000
BEAT_HEADROOM = 4.0
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def _page_size(requested: int) -> int:
    """A listing's page size: 0 means the default; above the cap is refused."""
    if requested > MAX_PAGE_SIZE:
        raise InvalidArgumentError("page_size", f"must be at most {MAX_PAGE_SIZE}")
    return requested or DEFAULT_PAGE_SIZE


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, metrics: Any) -> None:
    if isinstance(exc, RegistryError):
        metrics.rejected.labels(exc.code.name.lower()).inc()
        await context.abort(exc.code, str(exc))
    if isinstance(exc, TimeoutError):
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the registry took too long")
    log.exception("unexpected error in %s", type(exc).__name__)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the registry log")


def unary(role: Role) -> Callable[[Handler], Handler]:
    """Check the token, bound the time, and map errors to statuses for a unary method."""

    def wrap(method: Handler) -> Handler:
        @functools.wraps(method)
        async def handler(self: _Base, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                metadata = context.invocation_metadata()
                self.auth.check(role, metadata)
                PRESENTED_FENCE.set(read_fence(metadata))
                return await asyncio.wait_for(method(self, request, context), UNARY_TIMEOUT_S)
            except Exception as exc:
                await _abort(context, exc, self.core.metrics)

        return handler  # type: ignore[return-value]

    return wrap


class _Base:
    def __init__(self, core: RegistryCore, auth: TokenAuth) -> None:
        self.core = core
        self.auth = auth


class RegistryServicer(_Base, pb_grpc.RegistryServicer):
    """Engine and reader methods."""

    def __init__(
        self,
        core: RegistryCore,
        auth: TokenAuth,
        *,
        first_message_timeout_s: float,
        heartbeat_interval_s: float,
        ttl_s: float,
        max_page_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    ) -> None:
        super().__init__(core, auth)
        self.max_page_bytes = max_page_bytes
        self.first_message_timeout_s = first_message_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.ttl_s = ttl_s

    @unary(Role.ENGINE)
    async def Register(self, request: pb.RegisterRequest, context: Any) -> pb.RegisterResponse:
        registration = Registration(
            service=request.service,
            instance_id=request.instance_id,
            address=request.address,
            weight=request.weight,
            capacity=request.capacity,
            labels=dict(request.labels),
            secret=request.secret,
        )
        registered = await self.core.register(registration, parse_peer(context.peer()))
        response = pb.RegisterResponse(
            instance=instance_to_pb(registered.view), secret=registered.secret
        )
        response.heartbeat_interval.FromNanoseconds(int(self.heartbeat_interval_s * 1e9))
        response.ttl.FromNanoseconds(int(self.ttl_s * 1e9))
        return response

    @unary(Role.ENGINE)
    async def Deregister(self, request: pb.DeregisterRequest, context: Any) -> Any:
        await self.core.deregister(validate_instance_id(request.instance_id), request.secret)
        return pb.DeregisterResponse()

    async def Heartbeat(
        self, request_iterator: AsyncIterator[pb.HeartbeatRequest], context: Any
    ) -> None:
        # Messages are read with context.read(), not request_iterator: the iterator is
        # an async generator around the same call, one more hop per beat at 10,000 a second.
        try:
            self.auth.check(Role.ENGINE, context.invocation_metadata())
            first = await asyncio.wait_for(context.read(), self.first_message_timeout_s)
            if first is grpc.aio.EOF:
                return
            instance_id = validate_instance_id(first.instance_id)
            # The whole first message is checked before the stream touches the instance:
            # a malformed one must not supersede, and then break, the owner's stream.
            self._status(first)
            attachment = self.core.attach(instance_id, first.secret)
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the first heartbeat must arrive within {self.first_message_timeout_s}s",
            )
        except Exception as exc:
            await _abort(context, exc, self.core.metrics)
        broken = True
        try:
            self._beat(instance_id, first)
            await context.write(pb.HeartbeatResponse())
            broken = await self._serve_stream(attachment, context)
        except RegistryError as exc:
            await _abort(context, exc, self.core.metrics)
        finally:
            self.core.detach(attachment, broken=broken)

    def _beat(self, instance_id: str, request: pb.HeartbeatRequest) -> None:
        self.core.heartbeat(instance_id, self._status(request), request.load)

    @staticmethod
    def _status(request: pb.HeartbeatRequest) -> EngineStatus:
        status = ENGINE_STATUS_FROM_PB.get(request.status)
        if status is None:
            raise InvalidArgumentError("status", f"unknown engine status {request.status}")
        return status

    async def _read_beats(self, attachment: Attachment, context: Any) -> None:
        """Apply beats until the stream ends. No timeout per beat (that cost a task and a
        timer per beat at 10,000 a second): the core's sweep watches for silence."""
        budget = self._beat_budget()
        clock, instance_id, read = self.core.clock, attachment.instance_id, context.read
        while (request := await read()) is not grpc.aio.EOF:
            now = clock()
            attachment.last_beat_at = now
            if budget.allow("", now):
                self._beat(instance_id, request)
            else:
                # One stream must not be able to flood the registry and delay every
                # watcher: beats past its budget are read and dropped.
                self.core.metrics.heartbeats_dropped.inc()

    def _beat_budget(self) -> KeyedRateLimiter:
        """A beat per interval is the norm; allow 4 times that (status changes are sent at
        once), and at least 10 a second."""
        rate = max(MIN_BEATS_PER_S, BEAT_HEADROOM / self.heartbeat_interval_s)
        return KeyedRateLimiter(rate, max(1, int(rate)), max_keys=1)

    async def _serve_stream(self, attachment: Attachment, context: Any) -> bool:
        """Relay directives until the stream ends; True when it ended by breaking.

        A newer stream for the instance, or silence (the core's sweep marks the stream
        idle), ends it by `superseded`: neither is a break. Silence is left to the
        lease, where self-preservation can tell a dead engine from our own lost network.
        """
        reader = asyncio.create_task(self._read_beats(attachment, context))
        superseded = asyncio.create_task(attachment.superseded.wait())
        directive = asyncio.create_task(attachment.directives.get())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {reader, superseded, directive}, return_when=asyncio.FIRST_COMPLETED
                )
                if directive in done:
                    await context.write(pb.HeartbeatResponse(directive=directive.result()))
                    directive = asyncio.create_task(attachment.directives.get())
                    continue
                if superseded in done:
                    return False
                # The stream ended or failed: evidence of death.
                exc = reader.exception()
                if isinstance(exc, RegistryError):
                    await _abort(context, exc, self.core.metrics)
                return True
        finally:
            for task in (reader, superseded, directive):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(reader, superseded, directive, return_exceptions=True)

    async def Watch(self, request: pb.WatchRequest, context: Any) -> None:
        try:
            self.auth.check(Role.READ, context.invocation_metadata())
            if request.alias:
                target = WatchTarget(alias=validate_name(request.alias, "alias"))
            else:
                service = validate_name(request.service, "service") if request.service else ""
                target = WatchTarget(service=service)
            watcher = self.core.hub.subscribe(target)
        except Exception as exc:
            await _abort(context, exc, self.core.metrics)
        self.core.metrics.watchers.inc()
        try:
            while True:
                events = await self.core.hub.next_events(watcher)
                if not events:
                    return
                for event in events:
                    await context.write(event)
                self.core.hub.written(watcher)
        finally:
            self.core.hub.unsubscribe(watcher)
            self.core.metrics.watchers.dec()

    @unary(Role.READ)
    async def Resolve(self, request: pb.ResolveRequest, context: Any) -> pb.ResolveResponse:
        page_size = _page_size(request.page_size)
        alias, after = self._resolve_target(request)
        catalog = self.core.catalog
        # A tenant's list may name an alias not created yet: it answers with nothing.
        views: list[InstanceView] = []
        more = False
        if request.alias or alias in catalog.aliases:
            views, more = catalog.resolve_page(alias, after, page_size)
        instances, more = self._fit(views, more)
        return pb.ResolveResponse(
            alias=alias,
            revision=catalog.revision,
            instances=instances,
            next_page_token=f"{alias}/{instances[-1].id}" if more else "",
        )

    def _fit(self, views: list[InstanceView], more: bool) -> tuple[list[pb.Instance], bool]:
        """The page's instances that fit `max_page_bytes` (True: more follow)."""
        pages = fit_pages([instance_to_pb(v) for v in views], len(views), self.max_page_bytes)
        if len(pages) > 1:
            return pages[0], True
        return (pages[0] if pages else []), more

    def _resolve_target(self, request: pb.ResolveRequest) -> tuple[str, str]:
        """(alias to resolve, id to resume after). A page token pins the alias that
        answered the first page, so a tenant's pages never mix two aliases."""
        catalog = self.core.catalog
        if request.alias:
            alias = validate_name(request.alias, "alias")
            allowed: tuple[str, ...] = (alias,)
        elif request.tenant and request.lang:
            tenant = validate_name(request.tenant, "tenant")
            lang = validate_lang(request.lang)
            if not request.page_token:
                return catalog.tenant_alias(tenant, lang), ""
            allowed = catalog.tenant_route(tenant, lang).aliases
        else:
            raise InvalidArgumentError("alias", "set alias, or both tenant and lang")
        if not request.page_token:
            return alias, ""
        pinned, _, after = request.page_token.partition("/")
        if pinned not in allowed or not after:
            raise InvalidArgumentError(
                "page_token", "is not a next_page_token of this alias or tenant route"
            )
        return pinned, after

    @unary(Role.READ)
    async def ListInstances(self, request: pb.ListInstancesRequest, context: Any) -> Any:
        service = validate_name(request.service, "service") if request.service else None
        page_size = _page_size(request.page_size)
        catalog = self.core.catalog
        # Pages run in id order; the token is the last id of the previous page, so a page
        # is neither repeated nor skipped when instances come and go in between.
        views, more = catalog.page(request.page_token, page_size, service=service)
        instances, more = self._fit(views, more)
        return pb.ListInstancesResponse(
            revision=catalog.revision,
            instances=instances,
            next_page_token=instances[-1].id if more else "",
        )

    @unary(Role.READ)
    async def ListAliases(self, request: pb.ListAliasesRequest, context: Any) -> Any:
        aliases = sorted(self.core.catalog.aliases.items())
        return pb.ListAliasesResponse(aliases=[alias_to_pb(a) for _, a in aliases])

    @unary(Role.READ)
    async def ListTenants(self, request: pb.ListTenantsRequest, context: Any) -> Any:
        tenants = sorted(self.core.catalog.tenants.items())
        return pb.ListTenantsResponse(tenants=[tenant_to_pb(t) for _, t in tenants])


class AdminServicer(_Base, pb_grpc.AdminServicer):
    """Admin methods; every one needs the admin token."""

    def __init__(self, core: RegistryCore, auth: TokenAuth) -> None:
        super().__init__(core, auth)
        self.ops = AdminOps(core)

    @unary(Role.ADMIN)
    async def SetWeight(self, request: pb.SetWeightRequest, context: Any) -> pb.Instance:
        view = await self.ops.set_weight(request.instance_id, request.weight, request.clear)
        return instance_to_pb(view)

    @unary(Role.ADMIN)
    async def Drain(self, request: pb.DrainRequest, context: Any) -> pb.Instance:
        return instance_to_pb(await self.ops.drain(request.instance_id))

    @unary(Role.ADMIN)
    async def Restore(self, request: pb.RestoreRequest, context: Any) -> pb.Instance:
        return instance_to_pb(await self.ops.restore(request.instance_id))

    @unary(Role.ADMIN)
    async def SetLabels(self, request: pb.SetLabelsRequest, context: Any) -> pb.Instance:
        view = await self.ops.set_labels(
            request.instance_id, dict(request.set), list(request.remove)
        )
        return instance_to_pb(view)

    @unary(Role.ADMIN)
    async def SendDirective(self, request: pb.SendDirectiveRequest, context: Any) -> pb.Instance:
        directive = pb.Directive()
        directive.CopyFrom(request.directive)
        return instance_to_pb(self.ops.send_directive(request.instance_id, directive))

    @unary(Role.ADMIN)
    async def PutAlias(self, request: pb.PutAliasRequest, context: Any) -> pb.Alias:
        alias = request.alias
        return alias_to_pb(await self.ops.put_alias(alias.name, alias.selector, alias.service))

    @unary(Role.ADMIN)
    async def DeleteAlias(self, request: pb.DeleteAliasRequest, context: Any) -> Any:
        await self.ops.delete_alias(request.name)
        return pb.DeleteAliasResponse()

    @unary(Role.ADMIN)
    async def PutTenant(self, request: pb.PutTenantRequest, context: Any) -> pb.TenantRoute:
        route = request.route
        record = await self.ops.put_tenant(route.tenant, route.lang, list(route.aliases))
        return tenant_to_pb(record)

    @unary(Role.ADMIN)
    async def DeleteTenant(self, request: pb.DeleteTenantRequest, context: Any) -> Any:
        await self.ops.delete_tenant(request.tenant, request.lang)
        return pb.DeleteTenantResponse()


class SchedulingServicer(_Base, pb_grpc.SchedulingServicer):
    """The scheduler's leadership, moves and pool status; writes need the admin token."""

    def __init__(self, core: RegistryCore, auth: TokenAuth) -> None:
        super().__init__(core, auth)
        self.ops = SchedulingOps(core)

    def _leadership(self, caller: str) -> pb.Leadership:
        return leadership_to_pb(
            self.ops.leader(), self.core.leadership.fence, caller, self.core.clock()
        )

    @unary(Role.ADMIN)
    async def AcquireLeadership(self, request: Any, context: Any) -> pb.Leadership:
        ttl_s = request.ttl.ToNanoseconds() / 1e9
        try:
            await self.ops.acquire(request.holder, ttl_s)
        except FailedPreconditionError:
            pass  # held by someone else: say who, with granted=false
        return self._leadership(request.holder)

    @unary(Role.ADMIN)
    async def ReleaseLeadership(self, request: Any, context: Any) -> pb.Leadership:
        await self.ops.release(request.holder)
        return self._leadership(request.holder)

    @unary(Role.READ)
    async def GetLeadership(self, request: Any, context: Any) -> pb.Leadership:
        return self._leadership("")

    @unary(Role.ADMIN)
    async def PutMove(self, request: pb.PutMoveRequest, context: Any) -> pb.Move:
        return move_to_pb(await self.ops.put_move(move_request_from_pb(request.move)))

    @unary(Role.READ)
    async def ListMoves(self, request: Any, context: Any) -> pb.ListMovesResponse:
        return pb.ListMovesResponse(moves=[move_to_pb(m) for m in self.ops.list_moves()])

    @unary(Role.ADMIN)
    async def PutPools(self, request: pb.PutPoolsRequest, context: Any) -> Any:
        await self.ops.put_pools(list(request.pools))
        return pb.PutPoolsResponse()

    @unary(Role.READ)
    async def ListPools(self, request: Any, context: Any) -> pb.ListPoolsResponse:
        published = self.core.pools
        response = pb.ListPoolsResponse(pools=published.pools, leader=published.leader)
        age_s = published.age_s(self.core.clock())
        if age_s is not None:
            response.age.FromNanoseconds(int(age_s * 1e9))
        return response
