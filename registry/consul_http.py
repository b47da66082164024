"""Consul's read API on the registry's HTTP port: tokens, blocking queries, waiter budgets.

`X-Consul-Index` is the catalog's revision. A blocking query (`?index=N`) whose
index is still current waits, at most its `wait`, until the revision moves: the
watch hub calls `ConsulApi.observe` with every change, which wakes every
waiter at once. An index from before a registry restart (larger than the
current revision) is answered at once, so the client starts over, as Consul
clients do when an index goes backwards. Waiters are capped per client IP and
in total; one more is refused with 429 rather than queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from registry import consul
from registry.auth import BEARER, Role, TokenAuth
from registry.catalog import Catalog, Change
from registry.errors import (
    InvalidArgumentError,
    PermissionDeniedError,
    RateLimitedError,
    RegistryError,
    UnauthenticatedError,
)
from tidepool.runtime.channel import AUTHORIZATION
from tidepool.runtime.status_http import HttpRequest, HttpResponse

log = logging.getLogger("tidepool.registry.consul")

PREFIX = "/v1/"
PROMETHEUS_SD_PATH = "/prometheus/targets"
"""Prometheus `http_sd_configs` endpoint, for builds without Consul discovery."""
NODE_NAME = "tidepool-registry"
READ_ONLY = (
    "tidepool's Consul API is read-only: register, drain and relabel engines with "
    "tidepool's own API (the engine SDK, `tidepool ctl`, the Admin gRPC service)\n"
)
HTTP_STATUS: dict[type[RegistryError], str] = {
    InvalidArgumentError: "400 Bad Request",
    UnauthenticatedError: "403 Forbidden",
    PermissionDeniedError: "403 Forbidden",
    RateLimitedError: "429 Too Many Requests",
}
"""Registry errors as HTTP statuses (Consul answers 403 for every ACL refusal)."""


class RevisionSignal:
    """Wakes every waiter when the catalog's revision moves (one event per revision)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout_s: float) -> bool:
        """True when a change arrived within `timeout_s`."""
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)
        return event.is_set()


@dataclass
class WaiterBudget:
    """Blocking queries held now, per client IP and in total, each with a cap."""

    per_client: int
    total: int
    held: dict[str, int] = field(default_factory=dict)

    def acquire(self, client: str) -> None:
        if sum(self.held.values()) >= self.total:
            raise RateLimitedError(
                f"the registry already holds {self.total} blocking queries; retry later"
            )
        if self.held.get(client, 0) >= self.per_client:
            raise RateLimitedError(
                f"client {client} already holds {self.per_client} blocking queries; retry later"
            )
        self.held[client] = self.held.get(client, 0) + 1

    def release(self, client: str) -> None:
        left = self.held.get(client, 0) - 1
        if left > 0:
            self.held[client] = left
        else:
            self.held.pop(client, None)


@dataclass
class ConsulApi:
    """Answers `/v1/...` reads from the catalog; mount `handle` under `PREFIX` and at
    `PROMETHEUS_SD_PATH`."""

    catalog: Catalog
    auth: TokenAuth
    datacenter: str = "dc1"
    max_waiters_per_client: int = 64
    max_waiters: int = 4096
    clock: Callable[[], float] = field(default=lambda: asyncio.get_running_loop().time())
    book: consul.IndexBook = field(default_factory=consul.IndexBook)
    signal: RevisionSignal = field(default_factory=RevisionSignal)
    waiters: WaiterBudget = field(init=False)
    _cached: tuple[int, list[consul.ServiceInstance]] = (-1, [])

    def __post_init__(self) -> None:
        self.waiters = WaiterBudget(self.max_waiters_per_client, self.max_waiters)

    def observe(self, changes: list[Change]) -> None:
        """A watch-hub listener: keep per-instance indexes, wake blocked queries."""
        self.book.observe(changes)
        self.signal.notify()

    @property
    def index(self) -> int:
        return max(1, self.catalog.revision)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return HttpResponse(
                "405 Method Not Allowed", READ_ONLY.encode(), headers=(("Allow", "GET, HEAD"),)
            )
        try:
            query = consul.parse_query(request.query, request.headers)
            self.auth.check(Role.READ, _as_metadata(query.token))
            if query.dc is not None and query.dc != self.datacenter:
                # Consul's own words for a datacenter it cannot reach.
                return HttpResponse("500 Internal Server Error", b"No path to datacenter\n")
            return await self._read(request, query)
        except RegistryError as exc:
            status = HTTP_STATUS.get(type(exc), "500 Internal Server Error")
            return HttpResponse(status, f"{_explain(exc)}\n".encode())

    async def _read(self, request: HttpRequest, query: consul.ConsulQuery) -> HttpResponse:
        path = request.path
        if path == PROMETHEUS_SD_PATH:
            return self._json(consul.prometheus_targets(self._instances()))
        if path == "/v1/agent/self":
            return self._json(consul.agent_self(self.datacenter, NODE_NAME))
        render = self._renderer(path)
        if render is None:
            return HttpResponse(
                "404 Not Found",
                b"tidepool answers Consul's /v1/catalog/services, /v1/catalog/service/<name>, "
                b"/v1/health/service/<name> and /v1/agent/self (and /prometheus/targets)\n",
            )
        await self._block(query, request.peer)
        return self._json(render(query))

    def _renderer(self, path: str) -> Callable[[consul.ConsulQuery], Any] | None:
        if path == "/v1/catalog/services":
            return lambda _query: consul.catalog_services(self._instances())
        for prefix, health in (("/v1/catalog/service/", False), ("/v1/health/service/", True)):
            name = unquote(path.removeprefix(prefix))
            if path.startswith(prefix) and name and "/" not in name:
                return functools.partial(self._service, name, health=health)
        return None

    def _service(self, name: str, query: consul.ConsulQuery, *, health: bool) -> Any:
        chosen = consul.select(self._instances(), name, query, health=health)
        if health:
            return consul.health_service(chosen, self.datacenter)
        return consul.catalog_service(chosen, self.datacenter)

    def _instances(self) -> list[consul.ServiceInstance]:
        # Everything shown moves the revision, so one build serves every reader of it
        # (a change wakes all blocked queries at once).
        revision, instances = self._cached
        if revision != self.catalog.revision:
            instances = consul.service_instances(self.catalog.views(), self.book)
            self._cached = (self.catalog.revision, instances)
        return instances

    async def _block(self, query: consul.ConsulQuery, client: str) -> None:
        """Hold the request while its index is the current one, at most `wait`."""
        if query.index is None or query.index != self.index:
            return
        self.waiters.acquire(client)
        try:
            deadline = self.clock() + query.wait_s
            while query.index == self.index:
                left = deadline - self.clock()
                if left <= 0:
                    return
                await self.signal.wait(left)
        finally:
            self.waiters.release(client)

    def _json(self, body: Any) -> HttpResponse:
        return HttpResponse(
            "200 OK",
            json.dumps(body, separators=(",", ":")).encode(),
            "application/json",
            headers=(
                ("X-Consul-Index", str(self.index)),
                ("X-Consul-KnownLeader", "true"),
                ("X-Consul-LastContact", "0"),
                ("X-Consul-Effective-Consistency", "leader"),
            ),
        )


def _as_metadata(token: str | None) -> list[tuple[str, str]]:
    return [] if token is None else [(AUTHORIZATION, BEARER + token)]


def _explain(exc: RegistryError) -> str:
    how = "send the registry's read (or admin) token as the X-Consul-Token header or ?token="
    if isinstance(exc, UnauthenticatedError | PermissionDeniedError):
        return f"Permission denied: {exc}; {how}"
    return str(exc)
