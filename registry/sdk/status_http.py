"""A tiny HTTP endpoint serving /metrics, /healthz and /readyz for every tidepool process.

It is hand-written on asyncio streams rather than pulling in a web framework:
three fixed GET paths, bounded request size and read time, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_S = 5.0

ReadyCheck = Callable[[], tuple[bool, str]]
Route = Callable[[str], tuple[str, bytes, str]]
"""A further GET path: given the query string, returns (status line, body, content type)."""


@dataclass(frozen=True)
class _Response:
    status: str
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


class StatusServer:
    """Serves Prometheus metrics and liveness/readiness probes on one HTTP port."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: CollectorRegistry,
        ready: ReadyCheck,
        routes: Mapping[str, Route] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._metrics = metrics
        self._ready = ready
        self._routes = dict(routes or {})
        self._server: asyncio.Server | None = None

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
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)
            self._server = None

    def _route(self, method: str, path: str) -> _Response:
        if method not in ("GET", "HEAD"):
            return _Response("405 Method Not Allowed", b"only GET is served\n")
        path, _, query = path.partition("?")
        if path == "/metrics":
            return _Response("200 OK", generate_latest(self._metrics), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            return _Response("200 OK", b"ok\n")
        if path == "/readyz":
            ready, reason = self._ready()
            status = "200 OK" if ready else "503 Service Unavailable"
            return _Response(
                status, (reason or ("ready" if ready else "not ready")).encode() + b"\n"
            )
        route = self._routes.get(path)
        if route is not None:
            return _Response(*route(query))
        known = ", ".join(["/metrics", "/healthz", "/readyz", *self._routes])
        return _Response("404 Not Found", f"try {known}\n".encode())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) != 3:
                response = _Response("400 Bad Request", b"malformed request line\n")
            else:
                response = self._route(parts[0], parts[1])
            body = b"" if parts and parts[0] == "HEAD" else response.body
            writer.write(
                f"HTTP/1.1 {response.status}\r\nContent-Type: {response.content_type}\r\n"
                f"Content-Length: {len(response.body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
