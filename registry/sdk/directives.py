"""Directives from the registry (drain, resume, switch model), obeyed one at a time, each once.

A registry re-sends a directive after a reconnect, so ids already obeyed are
remembered and skipped. A failed directive is logged and the engine keeps
serving: a model switch that fails returns to the status it left.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from registry.sdk.errors import AgentError
from registry.sdk.load import EngineStatus
from tidepool.registry.v1 import registry_pb2

log = logging.getLogger(__name__)

SEEN_DIRECTIVES = 256
"""Directive ids remembered to ignore repeats (a registry re-sends after a reconnect)."""

Kind = registry_pb2.Directive.Kind


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


class StatusOwner(Protocol):
    """The agent, as far as directives need it: its status and its labels."""

    @property
    def status(self) -> EngineStatus: ...

    def set_status(self, status: EngineStatus) -> None: ...

    async def update_labels(
        self, changes: Mapping[str, str | None], timeout_s: float | None = None
    ) -> None: ...


class Directives:
    """The queue of directives received, and the loop that obeys them in order."""

    def __init__(self, handler: DirectiveHandler, owner: StatusOwner) -> None:
        self._handler = handler
        self._owner = owner
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._seen: deque[str] = deque(maxlen=SEEN_DIRECTIVES)

    def put(self, directive: Any) -> None:
        self._queue.put_nowait(directive)

    async def obey_forever(self) -> None:
        while True:
            directive = await self._queue.get()
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
            self._owner.set_status(EngineStatus.DRAINING)
            await self._handler.on_drain()
        elif directive.kind == Kind.KIND_RESUME:
            await self._handler.on_resume()
            self._owner.set_status(EngineStatus.SERVING)
        elif directive.kind == Kind.KIND_SWITCH_MODEL:
            await self._switch_model(directive.model)
        else:
            log.warning("ignoring unknown directive kind %s", directive.kind)

    async def _switch_model(self, model: str) -> None:
        previous = self._owner.status
        self._owner.set_status(EngineStatus.SWITCHING)
        try:
            await self._handler.on_switch_model(model)
        except Exception:
            log.exception("switching to model %r failed; keeping the old one", model)
            await self._return_to(previous)
            return
        await self._owner.update_labels({"lang": model})
        await self._return_to(EngineStatus.SERVING)

    async def _return_to(self, status: EngineStatus) -> None:
        if status == EngineStatus.SERVING:
            await self._handler.on_resume()
        self._owner.set_status(status)
