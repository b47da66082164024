"""EngineAgent: what an engine runs to join the registry, report load and obey directives.

Lifecycle: construct, `await start()` once the model is loaded (registration is
readiness), then the agent heartbeats in background tasks it owns; `await
shutdown()` drains, deregisters and closes. Transient registry failures are
retried with jittered backoff under the same instance id; permanent ones
surface as `RegistrationError`. No `grpc.RpcError` leaves this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address
from types import MappingProxyType
from typing import Any, Protocol

import grpc

from registry.sdk.errors import (
    AgentError,
    AgentStateError,
    InstanceNotFoundError,
    InstanceOwnedError,
    RegistrationError,
    RegistryUnavailableError,
    translate,
    translate_status,
)
from registry.sdk.gpu import GpuSample, GpuSampler, NvmlSampler, sample_gpu
from tidepool.registry.v1 import registry_pb2, registry_pb2_grpc
from tidepool.runtime.backoff import Backoff, RandomSource
from tidepool.runtime.channel import auth_metadata, open_channel, sleep_until_reconnected
from tidepool.runtime.options import parse_host_port
from tidepool.runtime.rules import INSTANCE_ID, INSTANCE_ID_RULE, METRICS_PORT_LABEL, WEIGHT_MAX

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL_S = 5.0
"""Used when a registry answers without an interval (it always should)."""
IDLE_POLL_S = 0.05
"""How often shutdown looks at the load while waiting for in-flight work to finish."""
SEEN_DIRECTIVES = 256
"""Directive ids remembered to ignore repeats (a registry re-sends after a reconnect)."""

Kind = registry_pb2.Directive.Kind


class EngineStatus(enum.IntEnum):
    """What the engine says it is doing; values are the proto's `EngineStatus`."""

    SERVING = 1
    DRAINING = 2
    SWITCHING = 3


@dataclass(frozen=True)
class LoadReport:
    """Current load; `progress` counts finished work items and only ever grows."""

    in_flight: int
    queued: int
    slots: int
    progress: int


class LoadSource(Protocol):
    """The engine's own request accounting, read at every heartbeat (must not block)."""

    def load(self) -> LoadReport: ...


class DirectiveHandler(Protocol):
    """What the engine does when the registry sends a directive."""

    async def on_drain(self) -> None:
        """Stop taking new work (in-flight work finishes)."""

    async def on_resume(self) -> None:
        """Take new work again."""

    async def on_switch_model(self, model: str) -> None:
        """Stop taking work, finish in-flight, load `model`; return once it is loaded.

        The agent reports SWITCHING meanwhile, then sets the `lang` label, calls
        `on_resume()` and reports SERVING.
        """


def new_instance_id(hostname: str | None = None) -> str:
    """A fresh instance id: the host name (cleaned) and 12 random hex digits."""
    raw = socket.gethostname() if hostname is None else hostname
    host = re.sub(r"[^A-Za-z0-9._-]", "-", raw).lstrip("._-")[:64] or "engine"
    return f"{host}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class AgentConfig:
    """How an engine registers. Durations are in seconds."""

    registry: str
    """Registry gRPC address, host:port."""
    address: str
    """Advertised ip:port routers connect to; a literal IP the registry sees us from."""
    token: str | None = None
    """Engine token, sent as a bearer credential."""
    service: str = "speech"
    weight: int = 100
    """Static weight, 0..1000."""
    capacity: int = 1
    """Concurrent slots."""
    labels: Mapping[str, str] = field(default_factory=dict)
    instance_id: str | None = None
    """Stable identity; None: the agent makes one at construction."""
    drain_timeout_s: float = 30.0
    reconnect_min_s: float = 0.1
    """First retry delay after the registry is lost (fully jittered, doubling)."""
    reconnect_max_s: float = 1.0
    """Cap on the retry delay; a retry also goes as soon as the channel reconnects, so a
    restarted registry sees every engine back within about a second of answering."""
    rpc_timeout_s: float = 5.0
    root_certificates: bytes | None = None
    """PEM roots for TLS to the registry; None: plaintext."""
    metrics_port: int | None = None
    """The engine's Prometheus /metrics port, registered as the `metrics_port` label so the
    registry's Consul API publishes it as service `tidepool-engine-metrics` (same host)."""

    def __post_init__(self) -> None:
        _need(_is_host_port(self.registry), "registry", "must be host:port", self.registry)
        _need(_is_advertisable(self.address), "address", "must be a literal ip:port", self.address)
        _need(bool(self.service), "service", "must not be empty", self.service)
        _need(0 <= self.weight <= WEIGHT_MAX, "weight", "must be 0..1000", self.weight)
        _need(self.capacity >= 1, "capacity", "must be 1 or more", self.capacity)
        _need(_labels_ok(self.labels), "labels", "need non-empty keys, str values", self.labels)
        id_ok = self.instance_id is None or bool(INSTANCE_ID.fullmatch(self.instance_id))
        _need(id_ok, "instance_id", INSTANCE_ID_RULE, self.instance_id)
        _need(
            self.drain_timeout_s >= 0, "drain_timeout_s", "must be 0 or more", self.drain_timeout_s
        )
        _need(self.reconnect_min_s > 0, "reconnect_min_s", "must be above 0", self.reconnect_min_s)
        max_ok = self.reconnect_max_s >= self.reconnect_min_s
        _need(max_ok, "reconnect_max_s", "must be >= reconnect_min_s", self.reconnect_max_s)
        _need(self.rpc_timeout_s > 0, "rpc_timeout_s", "must be above 0", self.rpc_timeout_s)
        port_ok = self.metrics_port is None or 0 < self.metrics_port < 65536
        _need(port_ok, "metrics_port", "must be 1..65535", self.metrics_port)
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))


def _need(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"AgentConfig.{name}: {rule}, got {value!r}")


def _labels_ok(labels: Mapping[str, str]) -> bool:
    return all(isinstance(k, str) and k and isinstance(v, str) for k, v in labels.items())


def _is_host_port(text: str) -> bool:
    try:
        parse_host_port(text)
    except ValueError:
        return False
    return True


def _is_advertisable(text: str) -> bool:
    try:
        host, port = parse_host_port(text)
        return port > 0 and not ip_address(host).is_unspecified
    except ValueError:
        return False


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
        self._channel: Any = None
        self._stub: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._directives: asyncio.Queue[Any] = asyncio.Queue()
        self._seen: deque[str] = deque(maxlen=SEEN_DIRECTIVES)
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
        self._channel = open_channel(
            self._config.registry, root_certificates=self._config.root_certificates
        )
        self._stub = registry_pb2_grpc.RegistryStub(self._channel)
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
        self._spawn(self._obey_directives(), "directives")
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
            await _cancel([t for t in self._tasks if t.get_name().endswith("-directives")])
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

    async def _register_retrying(self, deadline: float | None) -> None:
        backoff = self._new_backoff()
        while True:
            try:
                await self._register_once()
                return
            except (RegistryUnavailableError, InstanceNotFoundError) as exc:
                delay = backoff.next_delay()
                if deadline is not None and self._clock() + delay >= deadline:
                    raise RegistryUnavailableError(
                        f"gave up registering: {exc}", code=exc.code, details=exc.details
                    ) from None
                log.warning("%s; retrying in %.2fs", exc, delay)
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
                raise translate(exc, "register", self._config.registry) from None
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
            log.warning("%s", translate(exc, "deregister", self._config.registry))

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
            except RegistrationError as exc:
                self._fail(exc)
                return
            await sleep_until_reconnected(self._channel, backoff.next_delay())

    async def _heartbeat_stream(self, backoff: Backoff) -> None:
        call = self._stub.Heartbeat(metadata=self._metadata)
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout(self._config.rpc_timeout_s):
                await self._write(call)
                ack = await call.read()
            if ack is grpc.aio.EOF:
                raise await self._ended(call)
            self._attachments += 1
            self.attached.set()
            backoff.reset()
            self._accept(ack)
            await _first_to_stop(self._read_directives(call), self._write_heartbeats(call))
        except grpc.RpcError as exc:
            raise translate(exc, "heartbeat", self._config.registry) from None
        except TimeoutError:
            raise RegistryUnavailableError("heartbeat stream stopped moving") from None
        finally:
            self.attached.clear()
            call.cancel()

    async def _write_heartbeats(self, call: Any) -> None:
        while True:
            # Clear before building the request: a status change during the write wakes us again.
            self._wake.clear()
            async with asyncio.timeout(self._config.rpc_timeout_s):
                await self._write(call)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()

    async def _write(self, call: Any) -> None:
        try:
            await call.write(self._heartbeat_request())
        except asyncio.InvalidStateError:
            raise await self._ended(call) from None

    async def _read_directives(self, call: Any) -> None:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                raise await self._ended(call)
            self._accept(response)

    async def _ended(self, call: Any) -> AgentError:
        """Why a stream the registry closed ended (an OK close is still a lost stream)."""
        code = await call.code()
        if code == grpc.StatusCode.OK:
            return RegistryUnavailableError("heartbeat stream closed by the registry")
        details = await call.details()
        return translate_status(code, details or "", "heartbeat", self._config.registry)

    def _accept(self, response: Any) -> None:
        if response.HasField("directive"):
            self._directives.put_nowait(response.directive)

    def _heartbeat_request(self) -> Any:
        try:
            self._last_load = self._load_source.load()
        except Exception:
            log.exception("load source failed; reporting the last load")
        load, gpu = self._last_load, self._gpu
        return registry_pb2.HeartbeatRequest(
            instance_id=self._instance_id,
            secret=self._secret,
            status=f"ENGINE_STATUS_{self._status.name}",
            load=registry_pb2.Load(
                in_flight=load.in_flight,
                queued=load.queued,
                slots=load.slots,
                progress=load.progress,
                gpu=registry_pb2.GpuStats(
                    present=gpu.present,
                    name=gpu.name,
                    utilization_percent=gpu.utilization_percent,
                    memory_used_bytes=gpu.memory_used_bytes,
                    memory_total_bytes=gpu.memory_total_bytes,
                ),
            ),
        )

    async def _sample_gpu_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self._gpu = await sample_gpu(self._gpu_sampler, min(1.0, self._interval_s / 2))

    # ---- directives -------------------------------------------------------

    async def _obey_directives(self) -> None:
        while True:
            directive = await self._directives.get()
            if directive.id and directive.id in self._seen:
                continue
            if directive.id:
                self._seen.append(directive.id)
            try:
                await self._obey(directive)
            except AgentError as exc:
                log.error("directive %s failed: %s", directive.id or directive.kind, exc)
            except Exception:
                log.exception("directive %s failed", directive.id or directive.kind)

    async def _obey(self, directive: Any) -> None:
        log.info("directive %s", directive)
        if directive.kind == Kind.KIND_DRAIN:
            self.set_status(EngineStatus.DRAINING)
            await self._handler.on_drain()
        elif directive.kind == Kind.KIND_RESUME:
            await self._handler.on_resume()
            self.set_status(EngineStatus.SERVING)
        elif directive.kind == Kind.KIND_SWITCH_MODEL:
            await self._switch_model(directive.model)
        else:
            log.warning("ignoring unknown directive kind %s", directive.kind)

    async def _switch_model(self, model: str) -> None:
        previous = self._status
        self.set_status(EngineStatus.SWITCHING)
        try:
            await self._handler.on_switch_model(model)
        except Exception:
            log.exception("switching to model %r failed; keeping the old one", model)
            await self._return_to(previous)
            return
        await self.update_labels({"lang": model})
        await self._return_to(EngineStatus.SERVING)

    async def _return_to(self, status: EngineStatus) -> None:
        if status == EngineStatus.SERVING:
            await self._handler.on_resume()
        self.set_status(status)

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
        await _cancel(list(self._tasks))

    async def _close_channel(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


def _seconds(duration: Any) -> float:
    return float(duration.seconds) + float(duration.nanos) / 1e9


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _first_to_stop(*coros: Coroutine[Any, Any, None]) -> None:
    """Run `coros` together until one returns or raises; cancel the rest.

    Re-raises the error of the earliest-listed coroutine that failed, so callers
    list first the one whose errors say most (the stream reader carries the status).
    """
    tasks = [asyncio.create_task(coro) for coro in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await _cancel(tasks)
    for task in tasks:
        if task in done and not task.cancelled():
            error = task.exception()
            if error is not None:
                raise error
