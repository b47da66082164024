"""Passive ejection, panic mode and the last-resort rule for one pool.

Pure: every method takes `now` (monotonic seconds); nothing here sleeps or does I/O.

How the resolver uses this module, per pool (alias), on every change:

    view = last_resort(view.endpoints, endpoints_from_watch, departures)
    detector.set_pool(e.id for e in view.endpoints)
    chosen = select_candidates(view.endpoints, detector.ejected(now), panic_threshold_percent)
    picker = make_picker(kind, chosen.candidates, now=now, previous=picker, ...)
    # metrics: view.last_resort, chosen.panic

and rebuilds the same way when `detector.report_failure(...)` returns True (an
ejection: at once), at `detector.next_readmission_at(now)` (an ejection ends) and at
`picker.refresh_at` (slow start). On a connect failure or UNAVAILABLE from an engine
the proxy calls `report_failure`; on a good answer, `report_success`. Endpoints that
leave `detector.ejected(now)` count as recovered: give them `joined_at=now` so slow
start ramps them again.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final, NamedTuple

from router.endpoint import Endpoint


@dataclass(frozen=True)
class OutlierConfig:
    """Passive ejection and panic settings."""

    base_ejection_s: float = 2.0
    """Length of a first ejection."""
    max_ejection_s: float = 60.0
    """Cap on the length of an ejection, however often the endpoint failed."""
    multiplier: float = 2.0
    """Each ejection lasts this many times the previous one, up to the cap."""
    decay_interval_s: float = 10.0
    """Each such span out of ejection forgets one past ejection."""
    max_ejection_percent: float = 50.0
    """Never eject more than this share of the pool, in percent."""
    panic_threshold_percent: float = 50.0
    """Below this share of healthy endpoints, route over the whole pool; 0 disables."""
    consecutive_timeouts: int = 3
    """Attempt timeouts in a row, with no answer from the endpoint in between, that eject
    it (Envoy's consecutive gateway failures); 0 disables."""

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"router outlier: {name} must be {rule}, got {getattr(self, name)}")

        if not 0 < self.base_ejection_s < math.inf:
            raise bad("base_ejection_s", "above 0")
        if not self.base_ejection_s <= self.max_ejection_s < math.inf:
            raise bad("max_ejection_s", f"at least base_ejection_s ({self.base_ejection_s})")
        if not 1 <= self.multiplier < math.inf:
            raise bad("multiplier", "1 or more")
        if not 0 < self.decay_interval_s < math.inf:
            raise bad("decay_interval_s", "above 0")
        if not 0 <= self.max_ejection_percent <= 100:
            raise bad("max_ejection_percent", "within 0..100")
        if not 0 <= self.panic_threshold_percent <= 100:
            raise bad("panic_threshold_percent", "within 0..100")
        if self.consecutive_timeouts < 0:
            raise bad("consecutive_timeouts", "0 or more")

    def ejection_s(self, ejections: int) -> float:
        """How long the `ejections`-th ejection in a row lasts (1 for the first)."""
        steps = min(max(ejections, 1), self.saturating_ejections) - 1
        return min(self.base_ejection_s * self.multiplier**steps, self.max_ejection_s)

    @property
    def saturating_ejections(self) -> int:
        """The ejection count from which every ejection lasts `max_ejection_s`."""
        if self.multiplier == 1 or self.base_ejection_s >= self.max_ejection_s:
            return 1
        return 1 + math.ceil(math.log(self.max_ejection_s / self.base_ejection_s, self.multiplier))


@dataclass
class _Record:
    ejections: int
    ejected_until: float
    quiet_since: float
    """When the last ejection ended or the last decay step was taken."""
    silent: bool = False
    """Ejected for answering nothing at all (frozen): out until `report_alive`."""


class OutlierDetector:
    """Router-local ejection of endpoints that failed, with a growing backoff.

    One failure ejects at once, for `ejection_s(n)` where n counts recent ejections
    (it grows by one per ejection, capped where the length saturates, and shrinks by
    one per `decay_interval_s` spent out of ejection). An ejection is refused when it
    would put more than `max_ejection_percent` of the pool out at once. An endpoint
    comes back on its own when its backoff has passed; the registry's health is
    applied separately, by `select_candidates`.
    """

    def __init__(self, config: OutlierConfig, pool: Iterable[str] = ()) -> None:
        self._config = config
        self._pool: frozenset[str] = frozenset(pool)
        self._records: dict[str, _Record] = {}
        self._timeouts: dict[str, tuple[int, float]] = {}
        """Attempt timeouts in a row per id, and when the run began."""

    @property
    def config(self) -> OutlierConfig:
        return self._config

    def set_pool(self, ids: Iterable[str]) -> None:
        """The pool's endpoints are now `ids`; forget everything about the others."""
        self._pool = frozenset(ids)
        for endpoint_id in [i for i in self._records if i not in self._pool]:
            del self._records[endpoint_id]
        for endpoint_id in [i for i in self._timeouts if i not in self._pool]:
            del self._timeouts[endpoint_id]

    def report_failure(self, endpoint_id: str, now: float) -> bool:
        """A connect failure or UNAVAILABLE: eject at once unless the cap forbids it.

        True when this call ejected the endpoint (rebuild the picker); False when it
        is not in the pool, is already ejected, or the cap is reached.
        """
        if endpoint_id not in self._pool or self.is_ejected(endpoint_id, now):
            return False
        allowed = math.floor(len(self._pool) * self._config.max_ejection_percent / 100)
        if len(self.ejected(now)) + 1 > allowed:
            return False
        record = self._records.get(endpoint_id)
        if record is None:
            record = self._records[endpoint_id] = _Record(0, -math.inf, now)
        else:
            self._decay(record, now)
        record.ejections = min(record.ejections + 1, self._config.saturating_ejections)
        record.ejected_until = now + self._config.ejection_s(record.ejections)
        record.quiet_since = record.ejected_until
        return True

    def report_timeout(self, endpoint_id: str, now: float, answered_at: float) -> bool:
        """An attempt on the endpoint ran past its attempt timeout; `answered_at` is when the
        endpoint last answered anything. True when this ejected it.

        Why "no answer in between" and not merely "in a row": an engine that is slow
        but working keeps answering other calls, and ejecting it would only crowd the
        rest of a slow fleet; a frozen one answers nothing at all.
        """
        limit = self._config.consecutive_timeouts
        if limit == 0 or endpoint_id not in self._pool:
            return False
        count, since = self._timeouts.get(endpoint_id, (0, now))
        if count == 0 or answered_at >= since:
            count, since = 0, now
        count += 1
        if count < limit:
            self._timeouts[endpoint_id] = (count, since)
            return False
        self._timeouts.pop(endpoint_id, None)
        return self.report_silent(endpoint_id, now)

    def report_silent(self, endpoint_id: str, now: float) -> bool:
        """The endpoint answers nothing, not even a PING (frozen): eject it until it
        answers again (`report_alive`), at most `max_ejection_s`. True if this ejected it.

        Why not the usual backoff: a frozen engine re-admitted after a couple of
        seconds would swallow calls again until found out again; a prober that
        asks it (a PING on a new connection) knows the moment it is back.
        """
        ejected = self.report_failure(endpoint_id, now)
        record = self._records.get(endpoint_id)
        if record is None or not self.is_ejected(endpoint_id, now):
            return ejected
        record.silent = True
        record.ejected_until = max(record.ejected_until, now + self._config.max_ejection_s)
        record.quiet_since = record.ejected_until
        return ejected

    def report_alive(self, endpoint_id: str, now: float) -> bool:
        """A silent endpoint answered a probe: its ejection ends now. True if it did."""
        record = self._records.get(endpoint_id)
        if record is None or not record.silent or not self.is_ejected(endpoint_id, now):
            return False
        record.silent = False
        record.ejected_until = record.quiet_since = now
        return True

    def is_silent(self, endpoint_id: str, now: float) -> bool:
        """Whether the endpoint is ejected as silent at `now` (a prober should ask it)."""
        record = self._records.get(endpoint_id)
        return record is not None and record.silent and now < record.ejected_until

    def report_success(self, endpoint_id: str, now: float) -> None:
        """A good answer: let past ejections decay, and forget them once all have."""
        record = self._records.get(endpoint_id)
        if record is None:
            return
        self._decay(record, now)
        if record.ejections == 0:
            del self._records[endpoint_id]

    def _decay(self, record: _Record, now: float) -> None:
        if now < record.ejected_until:
            return
        steps = min(
            int((now - record.quiet_since) // self._config.decay_interval_s), record.ejections
        )
        if steps > 0:
            record.ejections -= steps
            record.quiet_since += steps * self._config.decay_interval_s

    def is_ejected(self, endpoint_id: str, now: float) -> bool:
        """Whether the endpoint is passively ejected at `now`."""
        record = self._records.get(endpoint_id)
        return record is not None and now < record.ejected_until

    def ejected_until(self, endpoint_id: str, now: float) -> float | None:
        """When the endpoint's passive ejection ends, or None if it is not ejected at `now`."""
        record = self._records.get(endpoint_id)
        return record.ejected_until if record is not None and now < record.ejected_until else None

    def ejected(self, now: float) -> frozenset[str]:
        """The ids ejected at `now`."""
        return frozenset(i for i, r in self._records.items() if now < r.ejected_until)

    def ejections(self, endpoint_id: str) -> int:
        """Recent ejections counted for the endpoint (as of its last report)."""
        record = self._records.get(endpoint_id)
        return 0 if record is None else record.ejections

    def next_readmission_at(self, now: float) -> float | None:
        """When the earliest current ejection ends (rebuild then), or None."""
        ends = [r.ejected_until for r in self._records.values() if now < r.ejected_until]
        return min(ends) if ends else None


class Selection(NamedTuple):
    """The endpoints to balance over, and whether panic mode chose them."""

    candidates: tuple[Endpoint, ...]
    panic: bool


def select_candidates(
    endpoints: Sequence[Endpoint],
    ejected: Collection[str],
    panic_threshold_percent: float,
) -> Selection:
    """Keep the healthy, not ejected endpoints with weight above 0 (in order).

    When they are fewer than `panic_threshold_percent` of the endpoints with weight
    above 0, spread the load over those instead (panic: rather than crush the
    survivors), leaving out only the endpoints this router saw fail itself (passive
    ejection is first-hand; the registry's word may be a partition), unless that
    leaves none. Weight 0 (drained) is never returned, not even in panic; drained
    endpoints do not count toward the share either, so draining cannot cause panic.
    """
    routable = tuple(e for e in endpoints if e.weight > 0)
    healthy = tuple(e for e in routable if e.healthy and e.id not in ejected)
    if len(healthy) * 100 < panic_threshold_percent * len(routable):
        answering = tuple(e for e in routable if e.id not in ejected)
        return Selection(answering or routable, True)
    return Selection(healthy, False)


class Departure(StrEnum):
    """Why an endpoint left a pool's view (as far as the resolver can tell)."""

    DEREGISTERED = "deregistered"
    """The engine deregistered: final."""
    DRAINED = "drained"
    """Drained by an admin or by itself (weight 0, DRAINING, SWITCHING): final."""
    MOVED = "moved"
    """Relabelled into another pool: final (it may serve another model now)."""
    EXPIRED = "expired"
    """Lease lapsed, stream broke, stalled, reaped, or vanished from a snapshot after
    a registry outage: the engine may still answer, so it can be kept as last resort."""


FINAL_DEPARTURES: Final = frozenset({Departure.DEREGISTERED, Departure.DRAINED, Departure.MOVED})


class PoolView(NamedTuple):
    """A pool's endpoints after the last-resort rule."""

    endpoints: tuple[Endpoint, ...]
    last_resort: bool
    """True while endpoints the registry gave up on are kept because nothing else is left."""


def last_resort(
    previous: Sequence[Endpoint],
    current: Sequence[Endpoint],
    departures: Mapping[str, Departure] | None = None,
) -> PoolView:
    """Apply "no registry event alone empties a pool" to a new view from the watch.

    `previous` is the view this returned last time (so last resort persists across
    events), `current` the pool as the watch now says, and `departures` the reason
    for each id of `previous` that is missing from `current`; a missing reason
    counts as `EXPIRED`. While `current` has a healthy endpoint with weight above 0
    it is returned as is. Otherwise the endpoints that still have weight but failed
    (unhealthy in `current`, or gone from it for a reason that is not final) are kept,
    marked healthy so they are routed to whatever the panic threshold; the proxy's
    passive ejection is then the only thing between them and traffic. When there is
    nothing to keep (every departure final), the pool is allowed to empty.
    """
    if any(e.routable for e in current):
        return PoolView(tuple(current), False)
    reasons = departures or {}
    present = {e.id for e in current}
    view = [replace(e, healthy=True) if e.weight > 0 else e for e in current]
    view += [
        e if e.healthy else replace(e, healthy=True)
        for e in previous
        if e.id not in present
        and e.weight > 0
        and reasons.get(e.id, Departure.EXPIRED) not in FINAL_DEPARTURES
    ]
    if not any(e.weight > 0 for e in view):
        return PoolView(tuple(current), False)
    return PoolView(tuple(view), True)
