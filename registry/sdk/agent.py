"""EngineAgent: what an engine runs to join the registry, report load and obey directives.

Lifecycle: construct, `await start()` once the model is loaded (registration is
readiness), then the agent heartbeats in background tasks it owns; `await
shutdown()` drains, deregisters and closes. Transient registry failures are
retried with jittered backoff under the same instance id; permanent ones
surface as `RegistrationError`. No `grpc.RpcError` leaves this module.

The agent owns the lifecycle, registration and re-attachment; the pieces it
drives live beside it: `config` (what to register), `load` (what a beat
reports), `session` (one heartbeat stream) and `directives` (what the registry
asks for).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from types import MappingProxyType
from typing import Any

import grpc

from registry.sdk.config import AgentConfig, new_instance_id
from registry.sdk.directives import DirectiveHandler, Directives
from registry.sdk.errors import (
    AgentError,
    AgentStateError,
    InstanceNotFoundError,
    InstanceOwnedError,
    RegistrationError,
    RegistryUnavailableError,
    translate,
)
from registry.sdk.gpu import GpuSample, GpuSampler, NvmlSampler, sample_gpu
from registry.sdk.load import EngineStatus, LoadReport, LoadSource, heartbeat_request
from registry.sdk.session import HeartbeatSession, cancel_all
from tidepool.registry.v1 import registry_pb2, registry_pb2_grpc
from tidepool.runtime.backoff import Backoff, RandomSource
from tidepool.runtime.channel import auth_metadata, open_channel, sleep_until_reconnected
from tidepool.runtime.replicas import ReplicaRotation, parse_addresses
from tidepool.runtime.rules import METRICS_PORT_LABEL

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL_S = 5.0
"""Used when a registry answers without an interval (it always should)."""
IDLE_POLL_S = 0.05
"""How often shutdown looks at the load while waiting for in-flight work to finish."""


class EngineAgent:
    """Registers one engine instance and keeps it attached to the registry."""

    def __init__(
        self,
        config: AgentConfig,
        load_source: LoadSource,
        handler: DirectiveHandler,
        gpu_sampler: GpuSampler | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: RandomSource | None = None,
    ) -> None:
        self._config = config
        self._load_source = load_source
        self._handler = handler
        self._gpu_sampler: GpuSampler = gpu_sampler if gpu_sampler is not None else NvmlSampler()
        self._clock = clock
        self._rng = rng
        self._instance_id = config.instance_id or new_instance_id()
        self._secret = ""  # proof that this process owns the id; Register hands it out
        self._labels: dict[str, str] = dict(config.labels)
        if config.metrics_port is not None:
            self._labels[METRICS_PORT_LABEL] = str(config.metrics_port)
        self._metadata = auth_metadata(config.token)
        self._status = EngineStatus.SERVING
        self._gpu = GpuSample.absent("not sampled yet")
        self._last_load = LoadReport(0, 0, config.capacity, 0)
        self._interval_s = DEFAULT_HEARTBEAT_INTERVAL_S
        self._replicas = ReplicaRotation(parse_addresses(config.registry), self._new_backoff())
        """With several registries (`A,B,C`): a lost one sends us to the next at once."""
        self._channels: dict[str, Any] = {}
        self._channel: Any = None
        self._stub: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._directives = Directives(handler, self)
        self._wake = asyncio.Event()
        self._register_lock = asyncio.Lock()
        self._shutdown_lock = asyncio.Lock()
        self._started = False
        self._stopping = False
        self._closed = False
        self._failure: AgentError | None = None
        self._failed = asyncio.Event()
        self._attachments = 0
        self.registered = asyncio.Event()
        """Set once the registry accepted the instance (readiness)."""
        self.attached = asyncio.Event()
        """Set while a heartbeat stream is acknowledged; cleared when it breaks."""

    # ---- read-only state --------------------------------------------------

    @property
    def instance_id(self) -> str:
        return self._instance_id

    @property
    def status(self) -> EngineStatus:
        return self._status

    @property
    def labels(self) -> Mapping[str, str]:
        return MappingProxyType(dict(self._labels))

    @property
    def attachments(self) -> int:
        """How many times a heartbeat stream was acknowledged (re-attachments included)."""
        return self._attachments

    async def wait_failed(self) -> AgentError:
        """Return once the agent has given up for good (a permanent registry refusal)."""
        await self._failed.wait()
        assert self._failure is not None
        return self._failure

    # ---- lifecycle --------------------------------------------------------

    async def start(self, timeout_s: float | None = None) -> None:
        """Register (retrying transient failures, up to `timeout_s` if given) and heartbeat.

        Raises `RegistrationError` when the registry refuses for good, and
        `RegistryUnavailableError` when `timeout_s` passes first.
        """
        if self._started:
            raise AgentStateError("EngineAgent.start: already started")
        self._started = True
        self._use_current_replica()
        deadline = None if timeout_s is None else self._clock() + timeout_s
        try:
            self._gpu = await sample_gpu(self._gpu_sampler)
            await self._register_retrying(deadline)
        except BaseException:
            self._closed = True
            await self._close_channel()
            raise
        self.registered.set()
        log.info("registered %s as %s", self._instance_id, self._config.address)
        self._spawn(self._keep_attached(), "heartbeat")
        self._spawn(self._directives.obey_forever(), "directives")
        self._spawn(self._sample_gpu_forever(), "gpu")

    def set_status(self, status: EngineStatus) -> None:
        """Report `status` now (an immediate heartbeat); ignored once shutting down."""
        if self._stopping and status != EngineStatus.DRAINING:
            return
        if status != self._status:
            self._status = status
            self._wake.set()

    async def update_labels(
        self, changes: Mapping[str, str | None], timeout_s: float | None = None
    ) -> None:
        """Set labels (None removes one) by re-registering; all or nothing.

        Before `start()` the change is only kept for registration. Transient
        failures are retried until `timeout_s` (None: until done).
        """
        if self._closed and self._started:
            raise AgentStateError("EngineAgent.update_labels: the agent is shut down")
        previous = dict(self._labels)
        for key, value in changes.items():
            if value is None:
                self._labels.pop(key, None)
            else:
                self._labels[key] = value
        if not self.registered.is_set():
            return
        deadline = None if timeout_s is None else self._clock() + timeout_s
        try:
            await self._register_retrying(deadline)
        except BaseException:
            self._labels = previous
            raise

    async def shutdown(self) -> None:
        """Graceful stop: DRAINING at once, wait for in-flight work, deregister, close."""
        async with self._shutdown_lock:
            if self._closed or not self._started:
                self._closed = True
                return
            self._stopping = True
            self.set_status(EngineStatus.DRAINING)
            await cancel_all([t for t in self._tasks if t.get_name().endswith("-directives")])
            try:
                await self._handler.on_drain()
            except Exception:
                log.exception("on_drain failed during shutdown")
            await self._wait_idle()
            # Deregister while the heartbeat stream is still up: closing it first would
            # look like a crash (unhealthy) to the registry and to every router.
            await self._deregister()
            await self._cancel_tasks()
            await self._close_channel()
            self._closed = True

    # ---- registration -----------------------------------------------------

    def _new_backoff(self) -> Backoff:
        return Backoff(self._config.reconnect_min_s, self._config.reconnect_max_s, rng=self._rng)

    def _use_current_replica(self) -> None:
        """Point the stub at the replica the rotation names (channels are opened once)."""
        address = self._replicas.current
        channel = self._channels.get(address)
        if channel is None:
            channel = open_channel(address, root_certificates=self._config.root_certificates)
            self._channels[address] = channel
        self._channel = channel
        self._stub = registry_pb2_grpc.RegistryStub(channel)

    def _next_replica(self) -> float:
        """The current replica failed: move on; returns seconds to wait before trying."""
        delay = self._replicas.failed()
        self._use_current_replica()
        return delay

    async def _register_retrying(self, deadline: float | None) -> None:
        backoff = self._new_backoff()
        while True:
            try:
                await self._register_once()
                self._replicas.succeeded()
                return
            except (RegistryUnavailableError, InstanceNotFoundError) as exc:
                if isinstance(exc, RegistryUnavailableError):
                    delay = self._next_replica()
                else:
                    delay = backoff.next_delay()
                if deadline is not None and self._clock() + delay >= deadline:
                    raise RegistryUnavailableError(
                        f"gave up registering: {exc}", code=exc.code, details=exc.details
                    ) from None
                log.warning("%s; retrying at %s in %.2fs", exc, self._replicas.current, delay)
                await sleep_until_reconnected(self._channel, delay)

    async def _register_once(self) -> None:
        request = registry_pb2.RegisterRequest(
            service=self._config.service,
            instance_id=self._instance_id,
            address=self._config.address,
            weight=self._config.weight,
            capacity=self._config.capacity,
            labels=self._labels,
            secret=self._secret,
        )
        async with self._register_lock:
            try:
                response = await self._stub.Register(
                    request, metadata=self._metadata, timeout=self._config.rpc_timeout_s
                )
            except grpc.RpcError as exc:
                raise translate(exc, "register", self._replicas.current) from None
        self._secret = response.secret
        interval = _seconds(response.heartbeat_interval)
        self._interval_s = interval if interval > 0 else DEFAULT_HEARTBEAT_INTERVAL_S

    async def _deregister(self) -> None:
        request = registry_pb2.DeregisterRequest(instance_id=self._instance_id, secret=self._secret)
        try:
            await self._stub.Deregister(
                request, metadata=self._metadata, timeout=self._config.rpc_timeout_s
            )
            log.info("deregistered %s", self._instance_id)
        except grpc.RpcError as exc:
            # Best effort: the registry expires us at the TTL anyway.
            log.warning("%s", translate(exc, "deregister", self._replicas.current))

    # ---- heartbeat stream -------------------------------------------------

    async def _keep_attached(self) -> None:
        backoff = self._new_backoff()
        while True:
            try:
                await self._heartbeat_stream(backoff)
            except InstanceNotFoundError:
                if self._stopping:
                    return  # we deregistered ourselves
                # A restarted registry that lost us: same id, so pool labels are recovered.
                log.warning("registry forgot %s; registering again", self._instance_id)
                await self._register_retrying(deadline=None)
            except InstanceOwnedError as exc:
                if self._stopping:
                    return
                # Our secret no longer owns the id (it lapsed and was claimed): claim it again.
                log.warning("%s; registering again", exc)
                await self._register_retrying(deadline=None)
            except RegistryUnavailableError as exc:
                log.warning("heartbeat stream lost: %s", exc)
                await sleep_until_reconnected(self._channel, self._next_replica())
                continue
            except RegistrationError as exc:
                self._fail(exc)
                return
            await sleep_until_reconnected(self._channel, backoff.next_delay())

    async def _heartbeat_stream(self, backoff: Backoff) -> None:
        session = HeartbeatSession(
            self._stub,
            self._metadata,
            registry=self._replicas.current,
            rpc_timeout_s=self._config.rpc_timeout_s,
            request=self._heartbeat_request,
            interval_s=lambda: self._interval_s,
            wake=self._wake,
            on_response=self._accept,
        )

        def attached() -> None:
            self._attachments += 1
            self.attached.set()
            backoff.reset()
            self._replicas.succeeded()

        try:
            await session.run(attached)
        finally:
            self.attached.clear()

    def _accept(self, response: Any) -> None:
        if response.HasField("directive"):
            self._directives.put(response.directive)

    def _heartbeat_request(self) -> Any:
        try:
            self._last_load = self._load_source.load()
        except Exception:
            log.exception("load source failed; reporting the last load")
        return heartbeat_request(
            self._instance_id, self._secret, self._status, self._last_load, self._gpu
        )

    async def _sample_gpu_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self._gpu = await sample_gpu(self._gpu_sampler, min(1.0, self._interval_s / 2))

    # ---- shutdown and task ownership --------------------------------------

    async def _wait_idle(self) -> None:
        deadline = self._clock() + self._config.drain_timeout_s
        while True:
            load = self._load_source.load()
            if load.in_flight + load.queued == 0:
                return
            if self._clock() >= deadline:
                log.warning("drain timed out with work left (%s); leaving anyway", load)
                return
            await asyncio.sleep(IDLE_POLL_S)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=f"tidepool-agent-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            failure = (
                exc if isinstance(exc, AgentError) else AgentError(f"{task.get_name()}: {exc!r}")
            )
            self._fail(failure)

    def _fail(self, exc: AgentError) -> None:
        log.error("engine agent gave up: %s", exc)
        if self._failure is None:
            self._failure = exc
        self._failed.set()

    async def _cancel_tasks(self) -> None:
        await cancel_all(list(self._tasks))

    async def _close_channel(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()
        self._channel = None


def _seconds(duration: Any) -> float:
    return float(duration.seconds) + float(duration.nanos) / 1e9
