"""StubDirectiveHandler: drain, resume and model switch on the slot pool."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from engine_stub.directives import StubDirectiveHandler
from engine_stub.metrics import EngineMetrics
from engine_stub.model import LoadedModel
from engine_stub.slots import SlotPool


class Harness:
    def __init__(self, drain_timeout_s: float = 30.0) -> None:
        self.pool = SlotPool(2)
        self.pool.accept()
        self.model = LoadedModel("zh")
        self.slept: list[float] = []
        self.notified: list[bool] = []
        self.metrics = EngineMetrics(CollectorRegistry())
        self.handler = StubDirectiveHandler(
            self.pool,
            self.model,
            load_s=2.5,
            drain_timeout_s=drain_timeout_s,
            sleep=self._sleep,
            notify=self._notify,
            metrics=self.metrics,
        )

    async def _sleep(self, delay: float) -> None:
        self.slept.append(delay)

    async def _notify(self, serving: bool) -> None:
        self.notified.append(serving)


async def test_drain_refuses_new_work_and_resume_takes_it_again() -> None:
    harness = Harness()
    await harness.handler.on_drain()
    assert harness.pool.refusal == "draining"
    await harness.handler.on_resume()
    assert harness.pool.accepting
    assert harness.notified == [False, True]


async def test_switch_waits_for_in_flight_work_then_loads_the_model() -> None:
    harness = Harness()
    job = harness.pool.admit()
    await job.start()
    switch = asyncio.create_task(harness.handler.on_switch_model("en"))
    await asyncio.sleep(0)
    assert harness.pool.refusal == "switching model to en"
    assert not switch.done()
    assert harness.model.lang == "zh", "in-flight work finishes on the old model"
    job.finish()
    await asyncio.wait_for(switch, 1)
    assert harness.model.lang == "en"
    assert harness.slept == [2.5]
    assert not harness.pool.accepting, "the agent resumes once the lang label is updated"
    assert harness.metrics.registry.get_sample_value("tidepool_engine_model_switches_total") == 1


async def test_switch_to_the_loaded_model_does_nothing() -> None:
    harness = Harness()
    await harness.handler.on_switch_model("zh")
    assert harness.pool.accepting
    assert harness.slept == []


async def test_switch_gives_up_waiting_for_a_stuck_request_at_the_drain_timeout() -> None:
    harness = Harness(drain_timeout_s=0)
    job = harness.pool.admit()
    await job.start()
    job.hold()
    await harness.handler.on_switch_model("en")
    assert harness.model.lang == "en"


async def test_unknown_model_is_refused_and_nothing_changes() -> None:
    harness = Harness()
    with pytest.raises(ValueError, match="unknown model 'fr'"):
        await harness.handler.on_switch_model("fr")
    assert harness.pool.accepting
    assert harness.model.lang == "zh"
