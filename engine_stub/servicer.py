"""EvaluatorServicer: the engine's gRPC API, scoring on simulated GPU slots.

The order of a request: validate (INVALID_ARGUMENT), admit (UNAVAILABLE while
draining or switching), check the loaded model (FAILED_PRECONDITION), pick
injected faults, wait for a slot, "compute", answer. Errors become statuses
here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from engine_stub import load_model
from engine_stub.errors import EngineError, InjectedFaultError, InvalidInputError
from engine_stub.faults import Fault, FaultPlan
from engine_stub.metrics import EngineMetrics
from engine_stub.model import LoadedModel
from engine_stub.slots import Job, SlotPool
from tidepool.engine.v1 import evaluator_pb2, evaluator_pb2_grpc

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


def crash_now(reason: str) -> NoReturn:
    """Die at once, as a crashed GPU process does: no cleanup, no deregistration."""
    sys.stderr.write(f"tidepool engine-stub: {reason}\n")
    sys.stderr.flush()
    os._exit(1)


@dataclass(frozen=True)
class _Input:
    audio: bytes
    text: str
    lang: str
    rate_hz: int


class EvaluatorServicer(evaluator_pb2_grpc.EvaluatorServicer):
    """Scores recordings: unary `Evaluate` and client-streaming `EvaluateStream`."""

    def __init__(
        self,
        *,
        instance_id: str,
        pool: SlotPool,
        model: LoadedModel,
        faults: FaultPlan,
        metrics: EngineMetrics,
        speed: float = 1.0,
        sleep: Sleep = asyncio.sleep,
        crash: Callable[[str], None] = crash_now,
    ) -> None:
        self._instance_id = instance_id
        self._pool = pool
        self._model = model
        self._faults = faults
        self._metrics = metrics
        self._speed = speed
        self._sleep = sleep
        self._crash = crash

    async def Evaluate(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        try:
            rate = load_model.sample_rate(request.sample_rate_hz)
            load_model.check_header(request.text, request.lang)
            load_model.check_audio(len(request.audio), rate)
            with self._pool.admit() as job:
                self._model.check(request.lang)
                item = _Input(request.audio, request.text, request.lang, rate)
                response = await self._score(job, item)
        except EngineError as exc:
            await self._fail(context, "Evaluate", started, exc)
        self._record("Evaluate", started, "OK")
        return response

    async def EvaluateStream(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        started = time.perf_counter()
        try:
            first = await anext(request_iterator, None)
            if first is None:
                raise InvalidInputError("text", "the stream carried no chunks")
            rate = load_model.sample_rate(first.sample_rate_hz)
            load_model.check_header(first.text, first.lang)
            # Admitted before the rest arrives: a drain must wait for a stream already begun.
            with self._pool.admit() as job:
                self._model.check(first.lang)
                audio = await _gather_audio(first.audio, request_iterator, rate)
                load_model.check_audio(len(audio), rate)
                response = await self._score(job, _Input(audio, first.text, first.lang, rate))
        except EngineError as exc:
            await self._fail(context, "EvaluateStream", started, exc)
        self._record("EvaluateStream", started, "OK")
        return response

    async def _score(self, job: Job, item: _Input) -> Any:
        fault = self._faults.next()
        if fault is not Fault.NONE:
            self._metrics.faults.labels(kind=fault.value).inc()
        if fault is Fault.CRASH:
            self._crash(f"injected crash after {self._faults.requests - 1} requests")
        await job.start()
        if fault is Fault.HANG:
            job.hold()
            log.warning("injected hang: request %d will never finish", self._faults.requests)
            await asyncio.Event().wait()
        duration_ms = load_model.audio_ms(len(item.audio), item.rate_hz)
        delay = load_model.latency_s(duration_ms, self._speed) + self._faults.extra_latency_s
        await self._sleep(delay)
        if fault is Fault.ERROR:
            raise InjectedFaultError()
        scores = load_model.score(item.audio, item.text, item.lang)
        return evaluator_pb2.EvaluateResponse(
            overall=scores.overall,
            accuracy=scores.accuracy,
            fluency=scores.fluency,
            completeness=scores.completeness,
            engine_id=self._instance_id,
            lang=item.lang,
            audio_ms=duration_ms,
        )

    async def _fail(self, context: Any, method: str, started: float, exc: EngineError) -> NoReturn:
        self._record(method, started, exc.code.name)
        await context.abort(exc.code, str(exc))
        raise AssertionError("context.abort returned")  # it always raises

    def _record(self, method: str, started: float, code: str) -> None:
        self._metrics.requests.labels(method=method, code=code).inc()
        self._metrics.request_seconds.labels(method=method).observe(time.perf_counter() - started)


async def _gather_audio(first: bytes, rest: AsyncIterator[Any], rate_hz: int) -> bytes:
    """The whole recording; stops reading as soon as it is too long."""
    limit = load_model.max_audio_bytes(rate_hz)
    parts, size = [first], len(first)
    async for chunk in rest:
        parts.append(chunk.audio)
        size += len(chunk.audio)
        if size > limit:
            load_model.check_audio(size, rate_hz)
    return b"".join(parts)
