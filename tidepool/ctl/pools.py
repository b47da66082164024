"""How `ctl pools` looks: the published pool status as JSON, a table and notes (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tidepool.ctl.render import age_text, table
from tidepool.registry.v1 import registry_pb2 as pb

STALE_AFTER_S = 10.0
"""Older pool status than this gets a note: the scheduler ticks every second or so."""
NO_STATUS_NOTE = "no pool status: is `tidepool scheduler run` running against this registry?"


def pool_json(pool: pb.PoolStatus) -> dict[str, Any]:
    """One pool in the `ctl pools --json` shape documented in the README."""
    return {
        "name": pool.name,
        "lang": pool.lang,
        "size": pool.size,
        "ready": pool.ready,
        "moving_in": pool.moving_in,
        "moving_out": pool.moving_out,
        "utilization": round(pool.utilization, 3),
        "desired": pool.desired,
        "min": pool.min,
        "max": pool.max,
    }


def percent(utilization: float) -> str:
    return f"{round(utilization * 100)}%"


def pools_table(pools: Sequence[pb.PoolStatus]) -> str:
    headers = ("POOL", "LANG", "SIZE", "READY", "IN", "OUT", "UTIL", "DESIRED", "MIN", "MAX")
    rows = [
        (
            p.name,
            p.lang,
            p.size,
            p.ready,
            p.moving_in,
            p.moving_out,
            percent(p.utilization),
            p.desired,
            p.min,
            p.max,
        )
        for p in pools
    ]
    return table(headers, rows)


def published(response: pb.ListPoolsResponse) -> bool:
    """Whether any scheduler ever published pool status to this registry (since it started)."""
    return bool(response.HasField("age"))


def age_s(response: pb.ListPoolsResponse) -> float:
    return float(response.age.ToNanoseconds()) / 1e9


def stale_note(response: pb.ListPoolsResponse) -> str | None:
    """A line saying the status is old and who published it, or None while it is fresh."""
    if not published(response) or age_s(response) <= STALE_AFTER_S:
        return None
    leader = response.leader or "no leader"
    return (
        f"note: pool status is {age_text(age_s(response))} old (published by {leader}); "
        "is the scheduler still running?"
    )


def pools_text(response: pb.ListPoolsResponse) -> str:
    """`ctl pools` without --json: the table, or a note when there is nothing to show."""
    if not published(response):
        return NO_STATUS_NOTE + "\n"
    text = pools_table(response.pools)
    note = stale_note(response)
    return text + (note + "\n" if note else "")
