"""The pool status the scheduler leader last published (`PutPools`), and its etcd form.

On the embedded store it lives in memory only (a restarted registry shows none
until the leader's next tick). On etcd every replica must answer `ListPools`
the same, so the status is also one key, `PREFIX/pools`, written by the
leader's fenced `PutPools` and applied by every replica's mirror. The key holds
the publication's wall-clock time, so a replica that learns of it later still
reports its true age (as far as the replicas' clocks agree).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import json_format

from registry.errors import InvalidArgumentError
from registry.validation import validate_lang, validate_name
from tidepool.registry.v1 import registry_pb2 as pb

MAX_AGE_S = 10 * 365 * 86400.0
"""A clamp on a damaged or far-off publication time (an age must stay a number)."""


MAX_POOLS = 256
_RATIOS = ("utilization", "target_utilization", "high_watermark", "low_watermark")
"""PoolStatus fields that are shares of capacity: finite and never negative."""


def validate_pools(pools: Sequence[pb.PoolStatus]) -> None:
    """A publication every client can show: at most `MAX_POOLS` named pools (each once)
    of a known language, with ratios that are numbers. Why check what only the scheduler
    leader sends: it holds an admin token, not a proof of sanity, and on etcd it is
    stored for every replica to serve."""
    if len(pools) > MAX_POOLS:
        raise InvalidArgumentError("pools", f"at most {MAX_POOLS} pools, got {len(pools)}")
    seen: dict[str, int] = {}
    for index, pool in enumerate(pools):
        field = f"pools[{index}]"
        validate_name(pool.name, f"{field}.name")
        if pool.name in seen:
            raise InvalidArgumentError(
                f"{field}.name", f"repeats pool {pool.name!r} (also pools[{seen[pool.name]}])"
            )
        seen[pool.name] = index
        validate_lang(pool.lang, f"{field}.lang")
        for name in _RATIOS:
            value = getattr(pool, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidArgumentError(
                    f"{field}.{name}", f"must be a finite number, 0 or more, got {value}"
                )


@dataclass(frozen=True)
class PublishedPools:
    pools: tuple[pb.PoolStatus, ...] = ()
    leader: str = ""
    published_at: float | None = None
    """The registry's monotonic clock at publication (None: never published)."""

    def age_s(self, now: float) -> float | None:
        return None if self.published_at is None else max(0.0, now - self.published_at)


def shape(published: PublishedPools) -> tuple[object, ...]:
    """What an operator sees change: pools, sizes, bounds and the leader; not utilisation,
    which moves every tick."""
    return (
        published.leader,
        tuple(
            (p.name, p.lang, p.size, p.ready, p.moving_in, p.moving_out, p.desired, p.min, p.max)
            for p in published.pools
        ),
    )


def encode(published: PublishedPools, wall_now: float, now: float) -> bytes:
    """The body of the `pools` key: the leader, the wall-clock publication time, the pools."""
    age = published.age_s(now) or 0.0
    return json.dumps(
        {
            "leader": published.leader,
            "published_wall": wall_now - age,
            "pools": [json_format.MessageToDict(p) for p in published.pools],
        },
        sort_keys=True,
    ).encode()


def decode(body: bytes, wall_now: float, now: float) -> PublishedPools:
    """A `pools` key as this replica's status: its age carried over to the local clock.

    ValueError names what is wrong with a damaged body."""
    try:
        data = json.loads(body)
        pools = tuple(
            json_format.ParseDict(p, pb.PoolStatus(), ignore_unknown_fields=True)
            for p in data["pools"]
        )
        age = min(max(0.0, wall_now - float(data["published_wall"])), MAX_AGE_S)
        return PublishedPools(pools, str(data["leader"]), now - age)
    except (KeyError, TypeError, ValueError, json_format.ParseError) as exc:
        raise ValueError(f"not a pool status: {exc!r}") from None
