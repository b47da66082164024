"""The engine-stub process: serve gRPC, load the model, register, serve until told to stop.

Startup is ordered so that registration means readiness: bind the ports, "load"
the model (not ready, not registered), accept work, register through the SDK,
then print the ready line. SIGTERM or SIGINT drains and deregisters (the SDK's
`run_until_signal`), then the gRPC server stops and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from engine_stub.config import EngineStubConfig, parse_config
from engine_stub.directives import StubDirectiveHandler
from engine_stub.faults import FaultPlan
from engine_stub.metrics import EngineMetrics
from engine_stub.model import LoadedModel
from engine_stub.servicer import EvaluatorServicer, Sleep
from engine_stub.slots import SlotPool
from registry.sdk import AgentConfig, AgentError, EngineAgent, new_instance_id, run_until_signal
from tidepool.engine.v1 import evaluator_pb2, evaluator_pb2_grpc
from tidepool.runtime.channel import channel_options
from tidepool.runtime.options import ConfigError, format_host_port, parse_host_port
from tidepool.runtime.process_main import process_main
from tidepool.runtime.signals import ShutdownSignals, unless_signalled
from tidepool.runtime.status_http import StatusServer

log = logging.getLogger(__name__)

COMPONENT = "engine-stub"
READY_PREFIX = f"tidepool {COMPONENT} ready"
EVALUATOR_SERVICE: str = evaluator_pb2.DESCRIPTOR.services_by_name["Evaluator"].full_name
STOP_GRACE_S = 2.0
"""After the drain: how long stragglers (hung requests) get before they are cancelled."""


class ListenError(OSError):
    """A listen address could not be bound."""


@dataclass
class EngineStub:
    """The assembled engine: its gRPC server and the parts tests and main() reach into."""

    config: EngineStubConfig
    instance_id: str
    server: Any
    port: int
    pool: SlotPool
    model: LoadedModel
    servicer: EvaluatorServicer
    handler: StubDirectiveHandler
    health: Any
    metrics: EngineMetrics
    registered: bool = field(default=False)

    @property
    def advertise(self) -> str:
        """The address registered for routers: --advertise, filled in with the bound port."""
        text = self.config.advertise or self.config.listen
        try:
            host, port = parse_host_port(text)
        except ValueError:
            host, port = text, 0  # --advertise gave a bare IP
        return format_host_port(host, port or self.port)

    def ready(self) -> tuple[bool, str]:
        """For /readyz: ready once registered and while taking work."""
        if not self.registered:
            return False, self.pool.refusal or "registering"
        if not self.pool.accepting:
            return False, self.pool.refusal or "not accepting work"
        return True, f"ready: model {self.model.lang}"

    async def set_serving(self, serving: bool) -> None:
        await _set_health(self.health, serving)

    async def load_model(self, sleep: Sleep = asyncio.sleep) -> None:
        """Simulate loading the first model; the engine refuses work until it is done."""
        log.info("loading model %s (%.1fs)", self.model.lang, self.config.model_load_s)
        await sleep(self.config.model_load_s)
        # Take work from now on; health turns SERVING only once registered (readiness).
        self.pool.accept()


def build_server(
    config: EngineStubConfig,
    *,
    metrics_registry: CollectorRegistry | None = None,
    sleep: Sleep = asyncio.sleep,
) -> EngineStub:
    """Assemble the engine and bind its gRPC port (call inside the event loop; not started)."""
    instance_id = config.instance_id or new_instance_id()
    metrics = EngineMetrics(metrics_registry)
    pool = SlotPool(config.slots)
    metrics.watch_load(pool)
    metrics.accepting.set_function(lambda: float(pool.accepting))
    model = LoadedModel(config.lang)
    faults = FaultPlan(config.faults, random.Random(config.seed))
    servicer = EvaluatorServicer(
        instance_id=instance_id,
        pool=pool,
        model=model,
        faults=faults,
        metrics=metrics,
        speed=config.speed,
        sleep=sleep,
    )
    health_servicer = health.aio.HealthServicer()
    handler = _directive_handler(config, pool, model, health_servicer, metrics, sleep)
    server = grpc.aio.server(options=channel_options())
    evaluator_pb2_grpc.add_EvaluatorServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return EngineStub(
        config=config,
        instance_id=instance_id,
        server=server,
        port=_bind(server, config),
        pool=pool,
        model=model,
        servicer=servicer,
        handler=handler,
        health=health_servicer,
        metrics=metrics,
    )


def _directive_handler(
    config: EngineStubConfig,
    pool: SlotPool,
    model: LoadedModel,
    health_servicer: Any,
    metrics: EngineMetrics,
    sleep: Sleep,
) -> StubDirectiveHandler:
    async def notify(serving: bool) -> None:
        await _set_health(health_servicer, serving)

    return StubDirectiveHandler(
        pool,
        model,
        load_s=config.model_load_s,
        drain_timeout_s=config.drain_timeout_s,
        sleep=sleep,
        notify=notify,
        metrics=metrics,
    )


async def _set_health(health_servicer: Any, serving: bool) -> None:
    serving_status = health_pb2.HealthCheckResponse.SERVING
    status = serving_status if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", EVALUATOR_SERVICE):
        await health_servicer.set(service, status)


def _bind(server: Any, config: EngineStubConfig) -> int:
    try:
        if config.tls_cert is not None and config.tls_key is not None:
            pair = (_read(config.tls_key, "--tls-key"), _read(config.tls_cert, "--tls-cert"))
            port = server.add_secure_port(config.listen, grpc.ssl_server_credentials([pair]))
        else:
            port = server.add_insecure_port(config.listen)
    except RuntimeError as exc:  # grpc raises RuntimeError when it cannot bind
        raise ListenError(f"--listen: cannot listen on {config.listen}: {exc}") from None
    if not port:
        raise ListenError(f"--listen: cannot listen on {config.listen}")
    return int(port)


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot read {path!r}: {exc.strerror}") from None


def agent_config(
    config: EngineStubConfig, stub: EngineStub, metrics_port: int | None = None
) -> AgentConfig:
    """How the stub registers: its flags, the bound address, the model's labels and the
    metrics port (published by the registry's Consul API for Prometheus)."""
    ca = _read(config.registry_ca, "--registry-ca") if config.registry_ca else None
    return AgentConfig(
        registry=config.registry,
        address=stub.advertise,
        token=config.token,
        service=config.service,
        weight=config.weight,
        capacity=config.slots,
        labels=config.registry_labels(),
        instance_id=stub.instance_id,
        drain_timeout_s=config.drain_timeout_s,
        root_certificates=ca,
        metrics_port=metrics_port,
    )


async def run(config: EngineStubConfig, *, out: TextIO | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the exit code. Raises AgentError if registration is refused."""
    with ShutdownSignals() as signals:
        stub = build_server(config)
        await stub.set_serving(False)
        await stub.server.start()
        http_host, http_port = parse_host_port(config.http_listen)
        status = StatusServer(http_host, http_port, stub.metrics.registry, stub.ready)
        try:
            try:
                await status.start()
            except OSError as exc:
                raise ListenError(
                    f"--http-listen: cannot listen on {config.http_listen}: {exc.strerror}"
                ) from None
            http = format_host_port(http_host, status.port)
            return await _serve(stub, signals, http, status.port, out or sys.stdout)
        finally:
            await status.stop()
            await stub.health.enter_graceful_shutdown()
            await stub.server.stop(STOP_GRACE_S)


async def _serve(
    stub: EngineStub, signals: ShutdownSignals, http: str, metrics_port: int, out: TextIO
) -> int:
    agent = EngineAgent(agent_config(stub.config, stub, metrics_port), stub.pool, stub.handler)
    if not await unless_signalled(stub.load_model(), signals):
        return 0
    if not await unless_signalled(agent.start(), signals):
        return 0
    stub.registered = True
    await stub.set_serving(True)
    out.write(f"{READY_PREFIX} grpc={stub.advertise} http={http} id={stub.instance_id}\n")
    out.flush()
    if await run_until_signal(agent, signals) != 0:
        raise await agent.wait_failed()  # refused for good while running (a revoked token)
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of `tidepool engine-stub`; returns the exit status."""
    return process_main(COMPONENT, parse_config, run, argv, environ, (AgentError,))
