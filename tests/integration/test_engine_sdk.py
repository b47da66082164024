"""EngineAgent over real gRPC on 127.0.0.1: a scripted registry for the failure paths,
the real registry (in-process and as a process) for directives and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from registry.sdk import (
    AgentConfig,
    EngineAgent,
    EngineStatus,
    LoadReport,
    NvmlSampler,
    RegistrationError,
    RegistryUnavailableError,
)
from tests.support.fake_nvml import FakeGpu, FakeNvml
from tests.support.processes import ProcessSet, python_args, wait_until_async
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc
from tidepool.runtime.channel import channel_options

TOKEN = "engine-secret"
WAIT_S = 10.0


# ---- a scripted registry -------------------------------------------------------


@dataclass
class ScriptedRegistry(pb_grpc.RegistryServicer):
    """A registry whose answers the test scripts; it records every call it gets."""

    interval_s: float = 0.05
    token: str = TOKEN
    register_failures: list[grpc.StatusCode] = field(default_factory=list)
    heartbeat_failures: list[grpc.StatusCode] = field(default_factory=list)
    known: set[str] = field(default_factory=set)
    registers: list[Any] = field(default_factory=list)
    heartbeats: list[Any] = field(default_factory=list)
    deregisters: list[str] = field(default_factory=list)
    streams: int = 0
    outbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    hang_up: asyncio.Event = field(default_factory=asyncio.Event)

    async def _authorise(self, context: Any) -> None:
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {self.token}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad engine token")

    async def Register(self, request: Any, context: Any) -> Any:
        await self._authorise(context)
        self.registers.append(request)
        if self.register_failures:
            await context.abort(self.register_failures.pop(0), "scripted failure")
        self.known.add(request.instance_id)
        return pb.RegisterResponse(
            instance=pb.Instance(id=request.instance_id),
            heartbeat_interval=timedelta(seconds=self.interval_s),
            ttl=timedelta(seconds=self.interval_s * 3),
        )

    async def Heartbeat(self, request_iterator: Any, context: Any) -> None:
        await self._authorise(context)
        requests = aiter(request_iterator)
        first = await anext(requests)
        if self.heartbeat_failures:
            await context.abort(self.heartbeat_failures.pop(0), "scripted failure")
        if first.instance_id not in self.known:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{first.instance_id} not found")
        self.heartbeats.append(first)
        self.streams += 1
        await context.write(pb.HeartbeatResponse())
        reader = asyncio.create_task(self._record(requests))
        try:
            await self._relay(context, reader)
        finally:
            reader.cancel()

    async def _record(self, requests: AsyncIterator[Any]) -> None:
        async for request in requests:
            self.heartbeats.append(request)

    async def _relay(self, context: Any, reader: asyncio.Task[None]) -> None:
        while not reader.done():
            directive = asyncio.create_task(self.outbox.get())
            hang_up = asyncio.create_task(self.hang_up.wait())
            try:
                done, _ = await asyncio.wait(
                    {reader, directive, hang_up}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                directive.cancel()
                hang_up.cancel()
            if hang_up in done:
                self.hang_up.clear()
                await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted hang-up")
            if directive in done and not directive.cancelled():
                await context.write(pb.HeartbeatResponse(directive=directive.result()))

    async def Deregister(self, request: Any, context: Any) -> Any:
        await self._authorise(context)
        self.deregisters.append(request.instance_id)
        self.known.discard(request.instance_id)
        return pb.DeregisterResponse()

    def last_status(self) -> int | None:
        return self.heartbeats[-1].status if self.heartbeats else None


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedRegistry, str]]:
    registry = ScriptedRegistry()
    server = grpc.aio.server(options=channel_options())
    pb_grpc.add_RegistryServicer_to_server(registry, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield registry, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


# ---- the engine side ---------------------------------------------------------------


@dataclass
class FakeLoad:
    in_flight: int = 0
    queued: int = 0
    progress: int = 0

    def load(self) -> LoadReport:
        return LoadReport(self.in_flight, self.queued, 4, self.progress)


@dataclass
class RecordingHandler:
    calls: list[str] = field(default_factory=list)
    switch_gate: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.switch_gate.set()

    async def on_drain(self) -> None:
        self.calls.append("drain")

    async def on_resume(self) -> None:
        self.calls.append("resume")

    async def on_switch_model(self, model: str) -> None:
        self.calls.append(f"switch:{model}")
        await self.switch_gate.wait()


@dataclass
class Engine:
    agent: EngineAgent
    load: FakeLoad
    handler: RecordingHandler


def make_engine(registry: str, **changes: Any) -> Engine:
    settings: dict[str, Any] = {
        "registry": registry,
        "address": "127.0.0.1:9001",
        "token": TOKEN,
        "capacity": 4,
        "labels": {"lang": "zh", "tier": "idc"},
        "instance_id": "e-1",
        "reconnect_min_s": 0.02,
        "reconnect_max_s": 0.2,
        "rpc_timeout_s": 2.0,
        "drain_timeout_s": 5.0,
    }
    settings.update(changes)
    load, handler = FakeLoad(), RecordingHandler()
    sampler = NvmlSampler(FakeNvml([FakeGpu(name="NVIDIA A10", utilization_percent=55)]))
    return Engine(EngineAgent(AgentConfig(**settings), load, handler, sampler), load, handler)


@contextlib.asynccontextmanager
async def started(engine: Engine) -> AsyncIterator[Engine]:
    await engine.agent.start(timeout_s=WAIT_S)
    try:
        yield engine
    finally:
        await engine.agent.shutdown()


def agent_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t.get_name().startswith("tidepool-agent-")}


# ---- against the scripted registry ------------------------------------------------------


async def test_start_registers_then_heartbeats_load_gpu_and_status(
    scripted: tuple[ScriptedRegistry, str],
) -> None:
    registry, address = scripted
    engine = make_engine(address, weight=60)
    engine.load.in_flight, engine.load.progress = 2, 17
    async with started(engine):
        assert engine.agent.registered.is_set()
        (request,) = registry.registers
        assert (request.service, request.instance_id, request.address) == (
            "speech",
            "e-1",
            "127.0.0.1:9001",
        )
        assert (request.weight, request.capacity) == (60, 4)
        assert dict(request.labels) == {"lang": "zh", "tier": "idc"}
        await wait_until_async(lambda: len(registry.heartbeats) >= 3, WAIT_S, "no heartbeats")
        beat = registry.heartbeats[-1]
        assert beat.status == pb.ENGINE_STATUS_SERVING
        assert (beat.load.in_flight, beat.load.slots, beat.load.progress) == (2, 4, 17)
        assert beat.load.gpu.present
        assert (beat.load.gpu.name, beat.load.gpu.utilization_percent) == ("NVIDIA A10", 55)
        engine.load.in_flight = 0  # or shutdown would wait out the drain timeout


async def test_start_retries_transient_failures(scripted: tuple[ScriptedRegistry, str]) -> None:
    registry, address = scripted
    registry.register_failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED]
    async with started(make_engine(address)):
        assert len(registry.registers) == 3


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT],
)
async def test_permanent_refusal_raises_registration_error_and_leaves_nothing_running(
    scripted: tuple[ScriptedRegistry, str], code: grpc.StatusCode
) -> None:
    registry, address = scripted
    if code == grpc.StatusCode.UNAUTHENTICATED:
        registry.token = "another"
    else:
        registry.register_failures = [code]
    engine = make_engine(address)
    with pytest.raises(RegistrationError) as caught:
        await engine.agent.start(timeout_s=WAIT_S)
    assert caught.value.code == code.name
    assert f"register at registry {address} failed: {code.name}" in str(caught.value)
    assert len(registry.registers) <= 1, "a permanent refusal must not be retried"
    assert not agent_tasks()
    await engine.agent.shutdown()  # harmless after a failed start


async def test_start_gives_up_at_its_timeout_when_nothing_listens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = make_engine(f"127.0.0.1:{port}")
    with pytest.raises(RegistryUnavailableError, match="gave up registering"):
        await engine.agent.start(timeout_s=0.5)
    assert not agent_tasks()


async def test_forgotten_instance_registers_again_with_the_same_id(
    scripted: tuple[ScriptedRegistry, str],
) -> None:
    registry, address = scripted
    async with started(make_engine(address)) as engine:
        await wait_until_async(lambda: registry.streams == 1, WAIT_S, "never attached")
        registry.known.clear()  # as a restarted registry that lost its memory
        registry.hang_up.set()
        await wait_until_async(lambda: engine.agent.attachments == 2, WAIT_S, "no re-attach")
        assert [r.instance_id for r in registry.registers] == ["e-1", "e-1"]
        assert registry.streams == 2


async def test_broken_stream_reconnects_keeping_its_identity(
    scripted: tuple[ScriptedRegistry, str],
) -> None:
    registry, address = scripted
    async with started(make_engine(address)) as engine:
        for expected in (2, 3):
            registry.hang_up.set()
            await wait_until_async(
                lambda n=expected: engine.agent.attachments == n, WAIT_S, "no re-attachment"
            )
        assert len(registry.registers) == 1, "a broken stream re-attaches without registering"
        assert {beat.instance_id for beat in registry.heartbeats} == {"e-1"}


async def test_drain_and_resume_directives_reach_the_handler_and_the_status(
    scripted: tuple[ScriptedRegistry, str],
) -> None:
    registry, address = scripted
    async with started(make_engine(address)) as engine:
        await registry.outbox.put(pb.Directive(kind=pb.Directive.KIND_DRAIN, id="d-1"))
        await wait_until_async(
            lambda: registry.last_status() == pb.ENGINE_STATUS_DRAINING, WAIT_S, "no DRAINING"
        )
        assert engine.handler.calls == ["drain"]
        await registry.outbox.put(pb.Directive(kind=pb.Directive.KIND_DRAIN, id="d-1"))
        await registry.outbox.put(pb.Directive(kind=pb.Directive.KIND_RESUME, id="d-2"))
        await wait_until_async(
            lambda: registry.last_status() == pb.ENGINE_STATUS_SERVING, WAIT_S, "no SERVING"
        )
        assert engine.handler.calls == ["drain", "resume"], "a repeated directive id is ignored"


async def test_switch_model_reports_switching_relabels_then_serves(
    scripted: tuple[ScriptedRegistry, str],
) -> None:
    registry, address = scripted
    async with started(make_engine(address)) as engine:
        engine.handler.switch_gate.clear()
        directive = pb.Directive(kind=pb.Directive.KIND_SWITCH_MODEL, model="en", id="s-1")
        await registry.outbox.put(directive)
        await wait_until_async(
            lambda: registry.last_status() == pb.ENGINE_STATUS_SWITCHING, WAIT_S, "no SWITCHING"
        )
        assert engine.agent.status == EngineStatus.SWITCHING
        engine.handler.switch_gate.set()
        await wait_until_async(
            lambda: registry.last_status() == pb.ENGINE_STATUS_SERVING, WAIT_S, "no SERVING"
        )
        assert dict(registry.registers[-1].labels) == {"lang": "en", "tier": "idc"}
        assert registry.registers[-1].instance_id == "e-1"
        assert engine.handler.calls == ["switch:en", "resume"]
        assert engine.agent.labels["lang"] == "en"


async def test_directives_do_not_hold_up_heartbeats(
    scripted: tuple[ScriptedRegistry, str],
) -> None:
    registry, address = scripted
    async with started(make_engine(address)) as engine:
        engine.handler.switch_gate.clear()
        await registry.outbox.put(pb.Directive(kind=pb.Directive.KIND_SWITCH_MODEL, model="en"))
        await wait_until_async(lambda: engine.handler.calls == ["switch:en"], WAIT_S, "no switch")
        seen = len(registry.heartbeats)
        await wait_until_async(
            lambda: len(registry.heartbeats) >= seen + 3, WAIT_S, "heartbeats stopped"
        )
        engine.handler.switch_gate.set()


async def test_shutdown_sends_draining_at_once_waits_for_in_flight_then_deregisters(
    scripted: tuple[ScriptedRegistry, str],
) -> None:
    registry, address = scripted
    registry.interval_s = 30.0  # only an immediate heartbeat can carry DRAINING in time
    engine = make_engine(address)
    await engine.agent.start(timeout_s=WAIT_S)
    await wait_until_async(lambda: registry.streams == 1, WAIT_S, "never attached")
    engine.load.in_flight = 1
    stopping = asyncio.create_task(engine.agent.shutdown())
    await wait_until_async(
        lambda: registry.last_status() == pb.ENGINE_STATUS_DRAINING, WAIT_S, "no DRAINING"
    )
    assert engine.handler.calls == ["drain"]
    assert not stopping.done()
    assert registry.deregisters == [], "deregistered before in-flight work finished"
    engine.load.in_flight = 0
    await asyncio.wait_for(stopping, WAIT_S)
    assert registry.deregisters == ["e-1"]
    assert not agent_tasks()


async def test_shutdown_leaves_at_the_drain_timeout_when_work_never_finishes(
    scripted: tuple[ScriptedRegistry, str],
) -> None:
    registry, address = scripted
    engine = make_engine(address, drain_timeout_s=0.2)
    await engine.agent.start(timeout_s=WAIT_S)
    engine.load.in_flight = 3
    await asyncio.wait_for(engine.agent.shutdown(), WAIT_S)
    assert registry.deregisters == ["e-1"]


async def test_update_labels_re_registers_and_rolls_back_on_refusal(
    scripted: tuple[ScriptedRegistry, str],
) -> None:
    registry, address = scripted
    async with started(make_engine(address)) as engine:
        await engine.agent.update_labels({"region": "sh", "tier": None})
        assert dict(registry.registers[-1].labels) == {"lang": "zh", "region": "sh"}
        registry.register_failures = [grpc.StatusCode.INVALID_ARGUMENT]
        with pytest.raises(RegistrationError):
            await engine.agent.update_labels({"bad key": "x"})
        assert dict(engine.agent.labels) == {"lang": "zh", "region": "sh"}


async def test_a_permanent_heartbeat_refusal_is_reported_by_wait_failed(
    scripted: tuple[ScriptedRegistry, str],
) -> None:
    registry, address = scripted
    async with started(make_engine(address)) as engine:
        await wait_until_async(lambda: registry.streams == 1, WAIT_S, "never attached")
        registry.heartbeat_failures = [grpc.StatusCode.PERMISSION_DENIED]
        registry.hang_up.set()
        failure = await asyncio.wait_for(engine.agent.wait_failed(), WAIT_S)
        assert isinstance(failure, RegistrationError)
        assert failure.code == "PERMISSION_DENIED"


# ---- against the real registry ---------------------------------------------------------

REGISTRY_READY = "tidepool registry ready"


def _registry_args(listen: str, data_dir: Path) -> list[str]:
    return python_args(
        "registry.server",
        *("--listen", listen, "--http-listen", "127.0.0.1:0", "--data-dir", str(data_dir)),
        *("--engine-token", TOKEN, "--read-token", "reader", "--admin-token", "admin"),
        *("--heartbeat-interval-s", "0.2", "--ttl-s", "1", "--restart-grace-s", "5"),
    )


@pytest.fixture
def processes() -> Iterator[ProcessSet]:
    with ProcessSet() as running:
        yield running


async def _instance(address: str, instance_id: str) -> Any:
    async with grpc.aio.insecure_channel(address) as channel:
        listed = await pb_grpc.RegistryStub(channel).ListInstances(
            pb.ListInstancesRequest(), metadata=(("authorization", "Bearer reader"),), timeout=2
        )
    return next((i for i in listed.instances if i.id == instance_id), None)


async def test_engine_reattaches_with_its_id_after_the_registry_restarts(
    processes: ProcessSet, tmp_path: Path
) -> None:
    first = processes.start(_registry_args("127.0.0.1:0", tmp_path), REGISTRY_READY)
    address = first.grpc
    async with started(make_engine(address)) as engine:
        await wait_until_async(lambda: engine.agent.attachments == 1, WAIT_S, "never attached")
        first.kill()
        await wait_until_async(
            lambda: not engine.agent.attached.is_set(), WAIT_S, "stream survived a dead registry"
        )
        second = processes.start(_registry_args(address, tmp_path), REGISTRY_READY)
        assert second.grpc == address
        await wait_until_async(
            lambda: engine.agent.attachments >= 2,
            WAIT_S,
            lambda: f"never re-attached; registry stderr:\n{second.stderr()[-2000:]}",
        )

        async def ready_again() -> bool:
            instance = await _instance(address, "e-1")
            return instance is not None and instance.state == pb.INSTANCE_STATE_READY

        await wait_until_async(ready_again, WAIT_S, "the restarted registry never saw e-1 READY")
        assert engine.agent.instance_id == "e-1"


async def test_real_registry_directives_reach_the_agent(tmp_path: Path) -> None:
    harness = pytest.importorskip("tests.support.registry_harness")
    settings = {
        "heartbeat_interval_s": 0.1,
        "ttl_s": 1.0,
        "engine_token": TOKEN,
        "admin_token": "a",
        "read_token": "reader",
    }
    async with harness.running_registry(tmp_path, **settings) as server:
        async with started(make_engine(server.grpc_address)) as engine:
            await wait_until_async(lambda: engine.agent.attachments == 1, WAIT_S, "no attach")
            async with grpc.aio.insecure_channel(server.grpc_address) as channel:
                admin = pb_grpc.AdminStub(channel)
                directive = pb.Directive(kind=pb.Directive.KIND_SWITCH_MODEL, model="en")
                await admin.SendDirective(
                    pb.SendDirectiveRequest(instance_id="e-1", directive=directive),
                    metadata=(("authorization", "Bearer a"),),
                )
            await wait_until_async(
                lambda: engine.agent.labels.get("lang") == "en", WAIT_S, "lang never became en"
            )
            await wait_until_async(
                lambda: engine.agent.status == EngineStatus.SERVING, WAIT_S, "not SERVING"
            )
            instance = await _instance(server.grpc_address, "e-1")
            assert instance.labels["lang"] == "en"
