"""Providers: where extra engines come from when moves cannot cover a pool's deficit.

A provider sits behind one small interface so the scheduler can drive any
source of GPUs the same way:

    start(pool, lang, tier, count) -> instance ids   # engines that will register
    stop(instance_id)                                # give one back (it drains first)
    starting() -> {pool: count}                      # asked for, not yet registered
    running() -> int                                 # engines it runs now
    close()

Engines a provider starts register with labels `pool=POOL`, `home=POOL` and
`provider=NAME`, so the scheduler gives back only what a provider started.
`local` starts `tidepool engine-stub` processes on this machine (for
`tidepool up` and the tests); they get SIGTERM if the scheduler dies. A
Kubernetes provider would implement the same calls by scaling a Deployment
per pool and tier (start: patch replicas up with the labels in the pod
template; stop: delete the named pod after its drain) and report `starting`
from pods not yet Ready; it is not built.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from scheduler.errors import ProviderError
from scheduler.policy import ProviderPolicy
from tidepool.runtime.children import TIDEPOOL, Child, start_child

log = logging.getLogger("tidepool.scheduler.provider")
STOP_TIMEOUT_S = 40.0
"""SIGTERM (the engine drains and deregisters), then SIGKILL after this long."""


class Provider(Protocol):
    name: str

    async def start(self, pool: str, lang: str, tier: str, count: int) -> list[str]: ...

    async def stop(self, instance_id: str) -> None: ...

    def starting(self) -> dict[str, int]: ...

    def running(self) -> int: ...

    def registered(self, instance_ids: Iterable[str]) -> None:
        """Tell the provider which of its engines the registry now lists."""
        ...

    async def close(self) -> None: ...


@dataclass
class _Started:
    pool: str
    process: Child
    registered: bool = False


@dataclass
class LocalProvider:
    """Starts `tidepool engine-stub` processes on 127.0.0.1; stops them with SIGTERM."""

    policy: ProviderPolicy
    registry: str
    engine_token: str | None = None
    name: str = "local"
    _engines: dict[str, _Started] = field(default_factory=dict)

    async def start(self, pool: str, lang: str, tier: str, count: int) -> list[str]:
        started = []
        for _ in range(count):
            instance_id = f"{self.name}-{tier}-{uuid.uuid4().hex[:8]}"
            try:
                argv = [*TIDEPOOL, *self._argv(instance_id, pool, lang, tier)]
                process = start_child(f"engine {instance_id}", argv, on_stdout=_discard)
            except OSError as exc:
                raise ProviderError(f"local: cannot start an engine: {exc}") from exc
            self._engines[instance_id] = _Started(pool, process)
            started.append(instance_id)
        return started

    def _argv(self, instance_id: str, pool: str, lang: str, tier: str) -> list[str]:
        policy = self.policy
        argv = [
            "engine-stub",
            "--registry", self.registry,
            "--instance-id", instance_id,
            "--lang", lang,
            "--tier", tier,
            "--pool", pool,
            "--labels", f"home={pool},provider={self.name}",
            "--weight", str(policy.weight_for(tier)),  # type: ignore[arg-type]
            "--slots", str(policy.slots),
            "--speed", str(policy.speed),
            "--model-load-s", str(policy.model_load_s),
        ]  # fmt: skip
        if self.engine_token:
            argv += ["--token", self.engine_token]
        return argv

    async def stop(self, instance_id: str) -> None:
        started = self._engines.pop(instance_id, None)
        if started is None:
            raise ProviderError(f"local: {instance_id} was not started by this provider")
        await started.process.stop_async(STOP_TIMEOUT_S)

    def starting(self) -> dict[str, int]:
        self._reap()
        counts: dict[str, int] = {}
        for started in self._engines.values():
            if not started.registered:
                counts[started.pool] = counts.get(started.pool, 0) + 1
        return counts

    def running(self) -> int:
        self._reap()
        return len(self._engines)

    def owns(self, instance_id: str) -> bool:
        return instance_id in self._engines

    def registered(self, instance_ids: Iterable[str]) -> None:
        for instance_id in instance_ids:
            started = self._engines.get(instance_id)
            if started is not None:
                started.registered = True

    def _reap(self) -> None:
        for instance_id, started in list(self._engines.items()):
            code = started.process.returncode
            if code is not None:
                log.warning("local engine %s exited with status %s", instance_id, code)
                del self._engines[instance_id]

    async def close(self) -> None:
        engines, self._engines = list(self._engines.values()), {}
        await asyncio.gather(*(e.process.stop_async(STOP_TIMEOUT_S) for e in engines))


def _discard(line: str) -> None:
    """An engine's output is not the scheduler's to print (its log says what happens)."""
