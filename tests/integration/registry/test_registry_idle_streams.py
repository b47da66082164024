"""A heartbeat stream that falls silent is closed by the sweep's one idle check (no timer
per beat), as a silence, not a break; under self-preservation, or when many streams are
silent at once (a registry behind on its reads), they are left open."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from registry.core import IDLE_CLOSE_MIN_STREAMS, IDLE_STREAM_TTLS
from tests.support.registry_harness import (
    FAST,
    Clients,
    RawEngine,
    clients,
    registration,
    running_registry,
    wait_for,
)

pytestmark = pytest.mark.timeout(30)

TTL_S = FAST["ttl_s"]
ALONE = {**FAST, "self_preservation_min_instances": 100}
"""One engine alone: self-preservation never holds (it needs 100 instances)."""


async def test_a_silent_stream_is_closed_after_its_lease_lapsed(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **ALONE) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="e-1"))
        engine = RawEngine(c, "e-1")
        await engine.attach()
        started = time.monotonic()
        status = await asyncio.wait_for(engine.call.code(), 10 * TTL_S)
        waited = time.monotonic() - started
        assert status == grpc.StatusCode.OK, f"the idle stream ended with {status}, not OK"
        assert waited >= IDLE_STREAM_TTLS * TTL_S - 0.05
        assert waited <= IDLE_STREAM_TTLS * TTL_S + 1.0
        assert server.core.attachments == {}
        # Expired by its TTL, not counted as a broken stream.
        expirations = server.core.metrics.expirations
        assert expirations.labels("ttl")._value.get() == 1
        assert expirations.labels("stream_broken")._value.get() == 0


async def test_beating_streams_are_left_open(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **ALONE) as server, clients(server) as c:
        await c.registry.Register(registration(9001, instance_id="e-1"))
        engine = RawEngine(c, "e-1")
        await engine.attach()
        deadline = time.monotonic() + 3 * IDLE_STREAM_TTLS * TTL_S
        while time.monotonic() < deadline:
            await engine.beat()
            await asyncio.sleep(FAST["heartbeat_interval_s"])  # the engine's own cadence
        assert not engine.call.done()
        assert "e-1" in server.core.attachments
        engine.break_stream()


async def test_silent_streams_stay_open_while_self_preservation_holds(tmp_path: Path) -> None:
    settings = {**FAST, "self_preservation_min_instances": 3}
    async with running_registry(tmp_path, **settings) as server, clients(server) as c:
        engines = []
        for index in range(4):
            await c.registry.Register(registration(9001 + index, instance_id=f"e-{index}"))
            engine = RawEngine(c, f"e-{index}")
            await engine.attach()
            engines.append(engine)
        # All four fall silent at once, as when the registry itself is cut off.
        await wait_for(
            lambda: server.core.leases.self_preservation, 5 * TTL_S, "self-preservation holds"
        )
        quiet_until = time.monotonic() + 2 * IDLE_STREAM_TTLS * TTL_S
        while time.monotonic() < quiet_until:
            assert all(not e.call.done() for e in engines), "a silent stream was closed"
            await asyncio.sleep(0.05)
        assert len(server.core.attachments) == 4
        for engine in engines:
            engine.break_stream()


async def _fleet(c: Clients, count: int) -> list[RawEngine]:
    engines = []
    for index in range(count):
        await c.registry.Register(registration(9001 + index, instance_id=f"e-{index:02d}"))
        engine = RawEngine(c, f"e-{index:02d}")
        await engine.attach()
        engines.append(engine)
    return engines


async def test_one_silent_stream_among_many_beating_is_closed(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **ALONE) as server, clients(server) as c:
        engines = await _fleet(c, IDLE_CLOSE_MIN_STREAMS)
        silent, beating = engines[0], engines[1:]
        deadline = time.monotonic() + 10 * TTL_S
        while not silent.call.done():
            assert time.monotonic() < deadline, "the one silent stream was never closed"
            await asyncio.gather(*(e.beat() for e in beating))
            await asyncio.sleep(FAST["heartbeat_interval_s"])  # the engines' own cadence
        assert all(not e.call.done() for e in beating)
        for engine in beating:
            engine.break_stream()


async def test_many_streams_silent_at_once_are_left_open(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **ALONE) as server, clients(server) as c:
        engines = await _fleet(c, IDLE_CLOSE_MIN_STREAMS)
        # Every engine silent, self-preservation off (ALONE): the leases lapse, but a
        # registry that hears nobody is more likely behind on its reads than facing a
        # fleet that died at once, so the streams stay.
        await wait_for(
            lambda: all(not lease.healthy for lease in server.core.leases.leases.values()),
            5 * TTL_S,
            "every lease lapsed",
        )
        quiet_until = time.monotonic() + 2 * IDLE_STREAM_TTLS * TTL_S
        while time.monotonic() < quiet_until:
            assert all(not e.call.done() for e in engines), "a silent stream was closed"
            await asyncio.sleep(0.05)
        for engine in engines:
            engine.break_stream()
