"""What the engine stub does on drain, resume and switch_model directives."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from engine_stub.metrics import EngineMetrics
from engine_stub.model import LoadedModel
from engine_stub.slots import SlotPool
from tidepool.runtime.rules import LANGS

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Notify = Callable[[bool], Awaitable[None]]
"""Told True when the engine takes work again, False when it stops (health, metrics)."""


async def _ignore(accepting: bool) -> None:
    return None


class StubDirectiveHandler:
    """Drains the slot pool, resumes it, and "loads" another model with a delay.

    Implements `registry.sdk.DirectiveHandler`.
    """

    def __init__(
        self,
        pool: SlotPool,
        model: LoadedModel,
        *,
        load_s: float,
        drain_timeout_s: float,
        sleep: Sleep = asyncio.sleep,
        notify: Notify = _ignore,
        metrics: EngineMetrics | None = None,
    ) -> None:
        self._pool = pool
        self._model = model
        self._load_s = load_s
        self._drain_timeout_s = drain_timeout_s
        self._sleep = sleep
        self._notify = notify
        self._metrics = metrics

    async def on_drain(self) -> None:
        self._pool.refuse("draining")
        await self._notify(False)

    async def on_resume(self) -> None:
        self._pool.accept()
        await self._notify(True)

    async def on_switch_model(self, model: str) -> None:
        if model not in LANGS:
            raise ValueError(f"switch_model: unknown model {model!r}; expected zh or en")
        if model == self._model.lang:
            return
        self._pool.refuse(f"switching model to {model}")
        await self._notify(False)
        # A stuck request must not block the move for ever: give up waiting at the drain timeout.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._drain_timeout_s):
                await self._pool.wait_idle()
        log.info("loading model %s (%.1fs)", model, self._load_s)
        await self._sleep(self._load_s)
        self._model.replace(model)
        if self._metrics is not None:
            self._metrics.model_switches.inc()
