"""A tiny HTTP endpoint serving /metrics, /healthz and /readyz for every tidepool process.

It is hand-written on asyncio streams rather than pulling in a web framework:
fixed GET paths, bounded request size and read time, one request per
connection. A component may add plain GET routes (`routes`) and asynchronous
handlers for a path prefix (`prefix_routes`, which see every method and the
headers; the registry's Consul API answers long polls through one). Handler
tasks are owned by the server: `stop()` cancels those still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("tidepool.status_http")
MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 2.0

ReadyCheck = Callable[[], tuple[bool, str]]
Route = Callable[[str], tuple[str, bytes, str]]
"""A further GET path: given the query string, returns (status line, body, content type)."""


@dataclass(frozen=True)
class HttpRequest:
    """One parsed request head: method, path, raw query, lowercased headers and peer IP."""

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    peer: str = ""


@dataclass(frozen=True)
class HttpResponse:
    """What a handler answers; `headers` are extra (name, value) pairs."""

    status: str
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


AsyncRoute = Callable[[HttpRequest], Awaitable[HttpResponse]]
"""A handler for every request under a path prefix, whatever the method."""


def parse_request_head(head: bytes, peer: str = "") -> HttpRequest | None:
    """Parse a request line and headers (up to the blank line); None when malformed."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            return None
        headers[name.strip().lower()] = value.strip()
    path, _, query = parts[1].partition("?")
    return HttpRequest(parts[0], path, query, headers, peer)


def render_response(response: HttpResponse, *, head_only: bool = False) -> bytes:
    """The bytes on the wire: status line, headers, and the body unless `head_only`."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in response.headers)
    return (
        f"HTTP/1.1 {response.status}\r\nContent-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n{extra}Connection: close\r\n\r\n".encode()
        + (b"" if head_only else response.body)
    )


class StatusServer:
    """Serves Prometheus metrics and liveness/readiness probes on one HTTP port."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: CollectorRegistry,
        ready: ReadyCheck,
        routes: Mapping[str, Route] | None = None,
        prefix_routes: Mapping[str, AsyncRoute] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._metrics = metrics
        self._ready = ready
        self._routes = dict(routes or {})
        self._prefix_routes = dict(prefix_routes or {})
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[object]] = set()

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        if self._server is None:
            return self._port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, limit=MAX_REQUEST_BYTES
        )

    async def stop(self) -> None:
        """Stop accepting, cancel handlers still running (long polls), then close."""
        if self._server is not None:
            self._server.close()
            handlers = list(self._handlers)
            for task in handlers:
                task.cancel()
            if handlers:
                await asyncio.wait(handlers, timeout=STOP_TIMEOUT_S)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=STOP_TIMEOUT_S)
            self._server = None

    async def _respond(
        self, request: HttpRequest, reader: asyncio.StreamReader
    ) -> HttpResponse | None:
        for prefix, handler in self._prefix_routes.items():
            if request.path.startswith(prefix):
                return await _unless_hung_up(handler(request), reader)
        return self._route(request.method, request.path, request.query)

    def _route(self, method: str, path: str, query: str) -> HttpResponse:
        if method not in ("GET", "HEAD"):
            return HttpResponse("405 Method Not Allowed", b"only GET is served\n")
        if path == "/metrics":
            return HttpResponse("200 OK", generate_latest(self._metrics), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            return HttpResponse("200 OK", b"ok\n")
        if path == "/readyz":
            ready, reason = self._ready()
            status = "200 OK" if ready else "503 Service Unavailable"
            return HttpResponse(
                status, (reason or ("ready" if ready else "not ready")).encode() + b"\n"
            )
        route = self._routes.get(path)
        if route is not None:
            return HttpResponse(*route(query))
        known = ", ".join(["/metrics", "/healthz", "/readyz", *self._routes, *self._prefix_routes])
        return HttpResponse("404 Not Found", f"try {known}\n".encode())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        response: HttpResponse | None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            peer = writer.get_extra_info("peername")
            request = parse_request_head(head, str(peer[0]) if peer else "")
            if request is None:
                response = HttpResponse("400 Bad Request", b"malformed request\n")
            else:
                response = await self._respond(request, reader)
            if response is not None:
                head_only = request is not None and request.method == "HEAD"
                writer.write(render_response(response, head_only=head_only))
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ConnectionError:
            pass
        finally:
            if task is not None:
                self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _unless_hung_up(
    answer: Awaitable[HttpResponse], reader: asyncio.StreamReader
) -> HttpResponse | None:
    """The handler's answer, or None once the client hangs up first.

    A long poll would otherwise hold its slot (and the per-client waiter budget)
    for a client that has gone away until its wait ran out.
    """
    answering = asyncio.ensure_future(answer)
    hangup = asyncio.ensure_future(_until_eof(reader))
    try:
        await asyncio.wait({answering, hangup}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hangup.cancel()
        if not answering.done():
            answering.cancel()
        await asyncio.gather(answering, hangup, return_exceptions=True)
    if answering.cancelled():
        return None
    error = answering.exception()
    if error is not None:
        log.error("HTTP handler failed", exc_info=error)
        return HttpResponse("500 Internal Server Error", b"internal error, see the server log\n")
    return answering.result()


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Read and drop anything sent after the head (one request per connection) until EOF."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(4096):
            pass
