"""The JSON of `GET /v1/endpoints`: every pool's endpoints, and the share each got.

Pure: the caller gathers the table's `PoolDetail`s, the registry view and the
counters, and passes `now` (monotonic) and `wall_now` (epoch seconds, only to
print when an ejection ends). Like Envoy's `/clusters`, plus what no proxy we
know shows: each endpoint's *configured* share (its weight over the weights of
the endpoints the balancer may pick) next to the share it *received* over the
last minute, and the largest gap per pool, so an operator sees at once when the
weights are not being honoured (slow start, ejections, panic, a skewed picker).

The shape (documented in the README's router section) is lists of objects with
fixed keys, in a stable order, so `jq` and scripts need no knowledge of names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

from registry.client import state_name
from router.endpoint import Endpoint
from router.table import PoolDetail
from router.view import InstanceInfo

QUERY_KEYS = ("alias",)
SHARE_DIGITS = 4
WEIGHT_DIGITS = 2
GONE = "gone"
"""`state` of an endpoint the registry no longer lists (kept as a last resort)."""


class EndpointsQueryError(ValueError):
    """A bad query string: the message names the parameter and the rule."""


def parse_query(query: str) -> str | None:
    """The `alias` filter of `?alias=NAME`, or None; EndpointsQueryError otherwise."""
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise EndpointsQueryError(
            f"malformed query string {query[:64]!r}: expected alias=NAME"
        ) from None
    unknown = sorted(params.keys() - set(QUERY_KEYS))
    if unknown:
        raise EndpointsQueryError(
            f"unknown parameter {unknown[0][:64]!r}: only {', '.join(QUERY_KEYS)} is accepted"
        )
    values = params.get("alias")
    if values is None:
        return None
    if len(values) != 1 or not values[0]:
        raise EndpointsQueryError("alias: give one non-empty alias name")
    return values[0]


def endpoints_view(
    details: Sequence[PoolDetail],
    instances: Mapping[str, InstanceInfo],
    in_flight: Mapping[str, int],
    errors: Mapping[str, Mapping[str, int]],
    last_errors: Mapping[str, tuple[str, float]],
    *,
    now: float,
    wall_now: float,
    attempts: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The document for `details` (already filtered); `errors` is alias -> engine -> count;
    `attempts` is engine -> its attempt timeout and counts (`Forwarder.attempt_view`)."""
    window = details[0].window_s if details else 0
    clock = _Clock(now, wall_now)
    extra = attempts or {}
    return {
        "window_s": window,
        "aliases": [
            _pool(d, instances, in_flight, errors.get(d.alias, {}), last_errors, clock, extra)
            for d in details
        ],
    }


class _Clock:
    """Monotonic times as operators read them: an age, or a UTC wall-clock time."""

    __slots__ = ("now", "wall_now")

    def __init__(self, now: float, wall_now: float) -> None:
        self.now = now
        self.wall_now = wall_now

    def age(self, monotonic: float) -> float:
        return round(max(self.now - monotonic, 0.0), 3)

    def wall(self, monotonic: float) -> str:
        at = self.wall_now + (monotonic - self.now)
        stamp = dt.datetime.fromtimestamp(at, tz=dt.UTC).isoformat(timespec="milliseconds")
        return stamp.replace("+00:00", "Z")


def _pool(
    detail: PoolDetail,
    instances: Mapping[str, InstanceInfo],
    in_flight: Mapping[str, int],
    errors: Mapping[str, int],
    last_errors: Mapping[str, tuple[str, float]],
    clock: _Clock,
    attempts: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    configured, received = detail.configured, detail.received
    rows = []
    for endpoint in detail.endpoints:
        row = _endpoint(endpoint, detail, instances.get(endpoint.id), last_errors, clock)
        row["in_flight"] = in_flight.get(endpoint.id, 0)
        row["errors"] = errors.get(endpoint.id, 0)
        row["picks"] = detail.picks.get(endpoint.id, 0)
        row["configured_share"] = round(configured.get(endpoint.id, 0.0), SHARE_DIGITS)
        row["received_share"] = round(received.get(endpoint.id, 0.0), SHARE_DIGITS)
        row.update(attempts.get(endpoint.id, {}))
        rows.append(row)
    return {
        "alias": detail.alias,
        "panic": detail.panic,
        "last_resort": detail.last_resort,
        "picks": sum(detail.picks.values()),
        "share_gap": round(detail.share_gap, SHARE_DIGITS),
        "endpoints": rows,
    }


def _endpoint(
    endpoint: Endpoint,
    detail: PoolDetail,
    info: InstanceInfo | None,
    last_errors: Mapping[str, tuple[str, float]],
    clock: _Clock,
) -> dict[str, Any]:
    state = state_name(info.state) if info is not None else GONE
    picked_weight = detail.pickable.get(endpoint.id)
    last = last_errors.get(endpoint.id)
    ejection = _ejection(endpoint, detail, state, last, clock)
    return {
        "engine": endpoint.id,
        "address": endpoint.address,
        "state": state,
        "registered_weight": info.registered_weight if info is not None else None,
        "effective_weight": endpoint.weight,
        "slow_start_weight": None if picked_weight is None else round(picked_weight, WEIGHT_DIGITS),
        "pickable": picked_weight is not None,
        "ejected": ejection is not None,
        "ejection": ejection,
        "last_error": None if last is None else {"code": last[0], "age_s": clock.age(last[1])},
    }


def _ejection(
    endpoint: Endpoint,
    detail: PoolDetail,
    state: str,
    last_error: tuple[str, float] | None,
    clock: _Clock,
) -> dict[str, Any] | None:
    """Why the endpoint is out: passive (this router saw it fail) before active (the
    registry's word); None when it is in, draining (weight 0 is not an ejection) or
    routed to anyway because the pool is in panic."""
    until = detail.ejected_until.get(endpoint.id)
    if until is not None:
        if last_error is not None:
            seen = f"{last_error[0]} {clock.age(last_error[1]):.1f} s ago"
        else:
            seen = "a failed call"
        return {
            "kind": "passive",
            "reason": f"this router saw {seen}",
            "until": clock.wall(until),
            "remaining_s": round(until - clock.now, 3),
            "ejections": detail.ejections.get(endpoint.id, 1),
        }
    if not endpoint.healthy and endpoint.weight > 0 and endpoint.id not in detail.pickable:
        return {"kind": "active", "reason": f"the registry says {state}"}
    return None
