"""The probe that lets an engine ejected as silent back in: a PING on a new HTTP/2 connection.

Real sockets on loopback: a grpc server answers the PING; a port that accepts TCP
and then reads nothing (what a frozen engine's kernel does) does not.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from router.relay.upstream import probe
from tests.support.router_harness import RefusingPort


@pytest.fixture
async def engine() -> AsyncIterator[str]:
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@pytest.fixture
def frozen() -> Iterator[str]:
    """Accepts connections (the kernel does, for a stopped process) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


async def test_a_live_engine_answers_the_probe(engine: str) -> None:
    assert await probe(engine, timeout_s=2.0)


async def test_a_frozen_engine_does_not_and_the_probe_ends_at_its_timeout(frozen: str) -> None:
    started = time.monotonic()
    assert not await probe(frozen, timeout_s=0.3)
    assert time.monotonic() - started < 1.0


async def test_a_refused_connection_is_no_answer() -> None:
    with RefusingPort() as port:
        assert not await probe(port.address, timeout_s=1.0)
