"""EvaluatorServicer without sockets: a fake gRPC context and a sleep the test controls."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import grpc
import pytest
from prometheus_client import CollectorRegistry

from engine_stub import load_model
from engine_stub.config import FaultConfig
from engine_stub.faults import FaultPlan
from engine_stub.metrics import EngineMetrics
from engine_stub.model import LoadedModel
from engine_stub.servicer import EvaluatorServicer
from engine_stub.slots import SlotPool
from tidepool.engine.v1 import evaluator_pb2 as pb

AUDIO = b"\x10\x00" * 16_000  # one second


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


class FakeContext:
    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise Aborted(code, details)


class GatedSleep:
    """Records each requested delay; returns at once unless closed, then waits to be opened."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await self.gate.wait()


async def run_until(condition: Callable[[], bool], max_steps: int = 1000) -> None:
    """Let other tasks run (no time passes) until `condition` holds; fail if it never does."""
    for _ in range(max_steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


class Crashed(Exception):
    pass


def crash(reason: str) -> None:
    raise Crashed(reason)


class Engine:
    def __init__(self, slots: int = 2, faults: FaultConfig | None = None, speed: float = 1.0):
        self.pool = SlotPool(slots)
        self.pool.accept()
        self.model = LoadedModel("zh")
        self.sleep = GatedSleep()
        self.metrics = EngineMetrics(CollectorRegistry())
        self.servicer = EvaluatorServicer(
            instance_id="e-1",
            pool=self.pool,
            model=self.model,
            faults=FaultPlan(faults or FaultConfig(), random.Random(1)),
            metrics=self.metrics,
            speed=speed,
            sleep=self.sleep,
            crash=crash,
        )

    async def evaluate(self, **fields: Any) -> Any:
        request = pb.EvaluateRequest(**{"audio": AUDIO, "text": "ni hao", "lang": "zh", **fields})
        return await self.servicer.Evaluate(request, FakeContext())

    async def stream(self, chunks: list[pb.EvaluateChunk]) -> Any:
        async def iterate() -> AsyncIterator[pb.EvaluateChunk]:
            for chunk in chunks:
                yield chunk

        return await self.servicer.EvaluateStream(iterate(), FakeContext())

    def count(self, method: str, code: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "tidepool_engine_requests_total", {"method": method, "code": code}
        )
        return value or 0.0


async def test_evaluate_returns_the_deterministic_scores() -> None:
    engine = Engine()
    response = await engine.evaluate()
    expected = load_model.score(AUDIO, "ni hao", "zh")
    assert response.overall == pytest.approx(expected.overall, abs=1e-3)
    assert response.accuracy == pytest.approx(expected.accuracy, abs=1e-3)
    assert response.fluency == pytest.approx(expected.fluency, abs=1e-3)
    assert response.completeness == pytest.approx(expected.completeness, abs=1e-3)
    assert (response.engine_id, response.lang, response.audio_ms) == ("e-1", "zh", 1000)
    assert engine.sleep.delays == [pytest.approx(0.045)]
    assert engine.count("Evaluate", "OK") == 1


async def test_speed_and_fault_latency_shape_the_delay() -> None:
    engine = Engine(speed=0.5, faults=FaultConfig(latency_s=0.1))
    await engine.evaluate()
    assert engine.sleep.delays == [pytest.approx(0.090 + 0.100)]


async def test_stream_scores_the_joined_chunks_like_unary() -> None:
    engine = Engine()
    half = len(AUDIO) // 2
    response = await engine.stream(
        [
            pb.EvaluateChunk(audio=AUDIO[:half], text="ni hao", lang="zh"),
            pb.EvaluateChunk(audio=AUDIO[half:]),
        ]
    )
    unary = await engine.evaluate()
    assert response == unary


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"audio": b""}, "audio"),
        ({"audio": b"\x00"}, "audio"),
        ({"lang": "fr"}, "lang"),
        ({"text": ""}, "text"),
        ({"text": "x" * 2001}, "text"),
        ({"sample_rate_hz": 100}, "sample_rate_hz"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(
    fields: dict[str, Any], field: str
) -> None:
    engine = Engine()
    with pytest.raises(Aborted) as caught:
        await engine.evaluate(**fields)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details.startswith(f"{field}: ")
    assert engine.pool.load().queued == 0


@pytest.mark.parametrize(
    ("chunks", "field"),
    [
        ([], "text"),
        ([pb.EvaluateChunk(audio=AUDIO, lang="zh")], "text"),
        ([pb.EvaluateChunk(audio=AUDIO, text="ni hao")], "lang"),
        ([pb.EvaluateChunk(text="ni hao", lang="zh")], "audio"),
    ],
)
async def test_bad_stream_is_invalid_argument_naming_the_field(
    chunks: list[pb.EvaluateChunk], field: str
) -> None:
    engine = Engine()
    with pytest.raises(Aborted) as caught:
        await engine.stream(chunks)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details.startswith(f"{field}: ")
    assert engine.pool.load() == engine.pool.load().__class__(0, 0, 2, 0)


async def test_other_language_is_failed_precondition() -> None:
    engine = Engine()
    with pytest.raises(Aborted) as caught:
        await engine.evaluate(lang="en")
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_draining_refuses_with_unavailable_saying_so() -> None:
    engine = Engine()
    engine.pool.refuse("draining")
    with pytest.raises(Aborted) as caught:
        await engine.evaluate()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "draining" in caught.value.details
    assert engine.count("Evaluate", "UNAVAILABLE") == 1


async def test_requests_beyond_the_slots_queue_and_are_reported_as_load() -> None:
    engine = Engine(slots=2)
    engine.sleep.gate.clear()
    calls = [asyncio.create_task(engine.evaluate()) for _ in range(5)]
    await run_until(lambda: len(engine.sleep.delays) == 2)
    load = engine.pool.load()
    assert (load.in_flight, load.queued, load.progress) == (2, 3, 0)
    engine.sleep.gate.set()
    await asyncio.gather(*calls)
    assert engine.pool.load().progress == 5


async def test_error_rate_one_fails_every_request_with_internal() -> None:
    engine = Engine(faults=FaultConfig(error_rate=1.0))
    with pytest.raises(Aborted) as caught:
        await engine.evaluate()
    assert (caught.value.code, caught.value.details) == (grpc.StatusCode.INTERNAL, "injected fault")
    assert engine.pool.load().progress == 1


async def test_hang_after_n_keeps_the_slot_even_when_the_client_gives_up() -> None:
    engine = Engine(slots=1, faults=FaultConfig(hang_after=1))
    await engine.evaluate()
    hung = asyncio.create_task(engine.evaluate())
    await run_until(lambda: engine.pool.load().in_flight == 1)
    hung.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hung
    load = engine.pool.load()
    assert (load.in_flight, load.progress) == (1, 1), "a stuck GPU makes no progress"


async def test_crash_after_n_serves_n_then_crashes() -> None:
    engine = Engine(faults=FaultConfig(crash_after=2))
    await engine.evaluate()
    await engine.evaluate()
    with pytest.raises(Crashed, match="injected crash after 2 requests"):
        await engine.evaluate()
