"""SchedulerRunner: the control loop. Every interval it keeps (or seeks) the leadership and,
while leading, reads the fleet, steps the moves, plans and applies the plan.

A standby only asks for the leadership; it takes over once the leader's lease
lapses (kill -9) or is released (SIGTERM), and resumes the moves it finds.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from scheduler.apply import Applier
from scheduler.errors import FencedError, SchedulerError
from scheduler.fleet import Fleet
from scheduler.metrics import SchedulerMetrics
from scheduler.plan import Plan, plan
from scheduler.policy import Policy
from scheduler.pools import Memory, PoolState
from scheduler.providers import Provider
from scheduler.registry_client import SchedulerRegistry
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.runtime.rules import POOL_LABEL

log = logging.getLogger("tidepool.scheduler")


@dataclass
class SchedulerRunner:
    policy: Policy
    registry: SchedulerRegistry
    holder: str
    metrics: SchedulerMetrics = field(default_factory=SchedulerMetrics)
    provider: Provider | None = None
    dry_run: bool = False
    clock: Callable[[], float] = time.time
    role: str = "starting"
    last_contact: float | None = None
    """Monotonic time of the last successful registry exchange (for /readyz)."""

    def __post_init__(self) -> None:
        self.memory = Memory.for_policy(self.policy)
        self.applier = Applier(self.registry, self.policy, self.metrics, self.provider)
        self.role_changed = asyncio.Event()
        self._printed: set[str] = set()
        self._failing = False

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every `interval_s` until `stop` is set; then release the leadership."""
        interval_s = self.policy.loop.interval_s
        while not stop.is_set():
            started = time.monotonic()
            with self.metrics.tick_seconds.time():
                await self.tick()
            spent = time.monotonic() - started
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, interval_s - spent))
            except TimeoutError:
                pass
        await self.shutdown()

    async def tick(self) -> None:
        try:
            if self.dry_run:
                await self._dry_tick()
            elif await self._keep_leadership():
                await self._lead()
            if self._failing:
                log.warning("the registry answers again")
            self._failing = False
            self.last_contact = time.monotonic()
        except FencedError as exc:
            log.warning("lost the leadership: %s", exc)
            self._become("standby", None)
        except SchedulerError as exc:
            self.metrics.errors.labels("registry").inc()
            # One line when the trouble starts, not one a tick while it lasts.
            if not self._failing:
                log.warning(
                    "tick failed: %s (retrying every %gs)", exc, self.policy.loop.interval_s
                )
            self._failing = True

    async def _keep_leadership(self) -> bool:
        lease = await self.registry.acquire(self.holder, self.policy.loop.leader_ttl_s)
        if lease.granted:
            self._become("leader", lease.fence)
        else:
            self._become("standby", None)
        return bool(lease.granted)

    def _become(self, role: str, fence: int | None) -> None:
        if role == self.role and fence == self.registry.fence:
            return
        previous, self.role = self.role, role
        self.registry.fence = fence
        self.metrics.leader.set(1 if role == "leader" else 0)
        self.metrics.fence.set(fence or 0)
        if role == "leader":
            self.applier.new_term()
            self.memory = Memory.for_policy(self.policy)
        if previous != "starting":
            log.warning("role %s -> %s (fence %s)", previous, role, fence)
        self.role_changed.set()

    async def _observe(self) -> Fleet:
        engines = await self.registry.engines()
        fleet = Fleet.of(engines, await self.registry.moves())
        if self.provider is not None:
            self.provider.registered(fleet.engines)
        return fleet

    def _plan(self, fleet: Fleet, now: float) -> Plan:
        starting = self.provider.starting() if self.provider else {}
        running = self.provider.running() if self.provider else 0
        return plan(self.policy, fleet, self.memory, now, starting=starting, running=running)

    async def _lead(self) -> None:
        now = self.clock()
        fleet = await self._observe()
        await self._ensure_aliases()
        moves = await self.applier.step_moves(fleet, now)
        fleet = Fleet(fleet.engines, tuple(moves))
        decided = self._plan(fleet, now)
        await self.applier.apply(decided, fleet, await self.registry.tenants(), now)
        self.applier.give_back(fleet, now)
        await self.registry.put_pools(pool_status(decided.pools))
        self._record(decided, fleet)

    async def _ensure_aliases(self) -> None:
        wanted = {p.name: f"{POOL_LABEL}={p.name}" for p in self.policy.pools}
        for tenant in self.policy.tenants:
            for alias in tenant.aliases:
                wanted.setdefault(alias, f"{POOL_LABEL}={alias}")
        existing = await self.registry.aliases()
        policy_pools = {p.name for p in self.policy.pools}
        for name, selector in wanted.items():
            current = existing.get(name)
            if current is None or (name in policy_pools and current != selector):
                await self.registry.put_alias(name, selector)
                log.info("alias %s: %s", name, selector)

    def _record(self, decided: Plan, fleet: Fleet) -> None:
        for decision in decided.decisions:
            self.metrics.decisions.labels(decision.kind, decision.pool).inc()
            level = logging.DEBUG if decision.kind == "hold" else logging.INFO
            log.log(level, "decision: %s", decision)
        self.metrics.moves_in_flight.set(len(fleet.active_moves()))
        for state in decided.pools.values():
            self.metrics.pool_utilization.labels(state.name).set(state.utilization)
            for kind, value in (("size", state.size), ("ready", state.ready)):
                self.metrics.pool_size.labels(state.name, kind).set(value)
            self.metrics.pool_size.labels(state.name, "desired").set(state.desired)

    async def _dry_tick(self) -> None:
        """Plan against the live fleet and print what would be done; write nothing.

        Nothing is carried out, so the same decisions come back every tick: each is
        printed when it first appears, not again while it stays the same.
        """
        self.role = "dry-run"
        fleet = await self._observe()
        decided = self._plan(fleet, self.clock())
        lines = {f"dry-run: would {d}" for d in decided.decisions if d.kind != "hold"}
        for line in sorted(lines - self._printed):
            sys.stdout.write(line + "\n")
        self._printed = lines
        sys.stdout.flush()

    async def shutdown(self) -> None:
        """Hand the leadership back so a standby takes over at once; stop provider engines."""
        await self.applier.close()
        if self.role == "leader":
            try:
                self.registry.fence = None
                await self.registry.release(self.holder)
                log.warning("released the leadership")
            except SchedulerError as exc:
                log.warning("could not release the leadership: %s", exc)
        if self.provider is not None:
            await self.provider.close()


def pool_status(states: Mapping[str, PoolState]) -> list[pb.PoolStatus]:
    return [
        pb.PoolStatus(
            name=s.name,
            lang=s.policy.lang,
            size=s.size,
            ready=s.ready,
            moving_in=s.moving_in,
            moving_out=s.moving_out,
            utilization=s.utilization,
            desired=s.desired,
            min=s.policy.min,
            max=s.policy.max,
            target_utilization=s.policy.target_utilization,
            high_watermark=s.policy.high_watermark,
            low_watermark=s.policy.low_watermark,
        )
        for s in states.values()
    ]
