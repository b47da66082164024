"""Carrying decisions out against the registry and the provider (the I/O half of a tick).

Actions of a move are sent once per leadership (a new leader re-sends what the
recorded state still needs), so a repeated tick never queues a second
`switch_model` for the same step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field

from scheduler.actions import Action, Drain, Restore, ScaleDown, SwitchModel
from scheduler.errors import FencedError, SchedulerError
from scheduler.fleet import Fleet, MoveView
from scheduler.metrics import SchedulerMetrics
from scheduler.moves import step_move
from scheduler.plan import Plan
from scheduler.policy import Policy
from scheduler.providers import Provider
from scheduler.registry_client import SchedulerRegistry

log = logging.getLogger("tidepool.scheduler")
TenantLists = dict[tuple[str, str], tuple[str, ...]]


@dataclass
class Applier:
    """Owns what a leader has sent this term, and the engines it is giving back."""

    registry: SchedulerRegistry
    policy: Policy
    metrics: SchedulerMetrics
    provider: Provider | None = None
    sent: set[tuple[str, Action]] = field(default_factory=set)
    retiring: dict[str, float] = field(default_factory=dict)
    """Provider engines drained for give-back, with when the drain started."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def new_term(self) -> None:
        self.sent.clear()

    async def act(self, key: str, action: Action) -> None:
        if (key, action) in self.sent:
            return
        if isinstance(action, Drain):
            await self.registry.drain(action.instance_id)
        elif isinstance(action, Restore):
            await self.registry.restore(action.instance_id)
        elif isinstance(action, SwitchModel):
            await self.registry.switch_model(action.instance_id, action.lang)
        else:
            await self.registry.set_pool(action.instance_id, action.pool, action.home)
        self.sent.add((key, action))

    async def step_moves(self, fleet: Fleet, now: float) -> list[MoveView]:
        """Advance every unfinished move one step; the moves as recorded afterwards."""
        result = []
        for move in fleet.moves:
            if move.finished:
                result.append(move)
                continue
            step = step_move(move, fleet, self.policy, now)
            try:
                for action in step.actions:
                    await self.act(f"{move.id}/{step.state}", action)
                if step.changes(move):
                    move = await self.registry.update_move(
                        move, step.state, step.reason, step.from_lang, step.to_lang
                    )
                    self._log_step(move)
            except FencedError:
                raise
            except SchedulerError as exc:
                self.metrics.errors.labels("move").inc()
                log.warning("move %s (%s): %s", move.id, move.state, exc)
            result.append(move)
        return result

    def _log_step(self, move: MoveView) -> None:
        log.info(
            "move %s %s %s -> %s: %s (%s)",
            move.id,
            move.instance_id,
            move.from_pool,
            move.to_pool,
            move.state,
            move.reason,
        )
        if move.finished:
            self.metrics.moves_finished.labels(move.state).inc()

    async def apply(
        self,
        plan: Plan,
        fleet: Fleet,
        tenants_now: dict[tuple[str, str], tuple[str, ...]],
        now: float,
    ) -> None:
        for admission in plan.admissions:
            await self._guarded(
                "admit",
                self.registry.set_pool(admission.instance_id, admission.pool, admission.home),
            )
        for intent in plan.moves:
            engine = fleet.engines[intent.instance_id]
            target = self.policy.pool(intent.to_pool)
            to_lang = target.lang if target else engine.lang
            await self._guarded(
                "move",
                self.registry.create_move(
                    intent.instance_id, intent.to_pool, intent.reason, engine.lang, to_lang
                ),
            )
        for up in plan.scale_up:
            if self.provider is not None:
                await self._guarded("provider", self._start(up.pool, up.lang, up.tier, up.count))
        for down in plan.scale_down:
            await self._guarded("scale_down", self._retire(down, now))
        for tenant in plan.tenants:
            if tenants_now.get((tenant.tenant, tenant.lang)) != tenant.aliases:
                await self._guarded(
                    "tenant", self.registry.put_tenant(tenant.tenant, tenant.lang, tenant.aliases)
                )

    async def _guarded(self, kind: str, call: Awaitable[object]) -> None:
        try:
            await call
        except FencedError:
            raise
        except SchedulerError as exc:
            self.metrics.errors.labels(kind).inc()
            log.warning("%s failed: %s", kind, exc)

    async def _start(self, pool: str, lang: str, tier: str, count: int) -> None:
        assert self.provider is not None
        ids = await self.provider.start(pool, lang, tier, count)
        log.info("provider %s: started %s for %s", self.provider.name, ", ".join(ids), pool)

    async def _retire(self, down: ScaleDown, now: float) -> None:
        await self.registry.drain(down.instance_id)
        self.retiring.setdefault(down.instance_id, now)

    def give_back(self, fleet: Fleet, now: float) -> None:
        """Stop retiring engines once idle (or after the drain timeout), in the background."""
        if self.provider is None:
            return
        for instance_id, since in list(self.retiring.items()):
            engine = fleet.engines.get(instance_id)
            done = engine is None or engine.idle
            if done or now - since >= self.policy.loop.drain_timeout_s:
                del self.retiring[instance_id]
                task = asyncio.create_task(self._stop(instance_id))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _stop(self, instance_id: str) -> None:
        assert self.provider is not None
        try:
            await self.provider.stop(instance_id)
            log.info("provider %s: gave back %s", self.provider.name, instance_id)
        except SchedulerError as exc:
            self.metrics.errors.labels("provider").inc()
            log.warning("giving back %s failed: %s", instance_id, exc)

    async def close(self) -> None:
        for task in list(self.tasks):
            await asyncio.gather(task, return_exceptions=True)
