"""What the decision code asks the runner to do; the runner turns each into registry calls.

Plain values, so the decision code stays pure and the day simulator can apply
the same actions to its simulated fleet.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Drain:
    """Weight to 0 and no new work (admin drain)."""

    instance_id: str


@dataclass(frozen=True)
class Restore:
    """Undo the drain: the engine takes work again."""

    instance_id: str


@dataclass(frozen=True)
class SwitchModel:
    instance_id: str
    lang: str


@dataclass(frozen=True)
class SetPool:
    """Label the engine into `pool`; `home` is where it returns when its pool needs it."""

    instance_id: str
    pool: str
    home: str = ""


Action = Drain | Restore | SwitchModel | SetPool


@dataclass(frozen=True)
class MoveIntent:
    """A new move the plan wants started."""

    instance_id: str
    from_pool: str
    to_pool: str
    reason: str


@dataclass(frozen=True)
class ScaleUp:
    pool: str
    lang: str
    tier: str
    count: int
    reason: str


@dataclass(frozen=True)
class ScaleDown:
    instance_id: str
    pool: str
    tier: str
    reason: str


@dataclass(frozen=True)
class TenantList:
    tenant: str
    lang: str
    aliases: tuple[str, ...]
