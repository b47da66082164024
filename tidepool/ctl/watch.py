"""`ctl instances --watch` as lines: the registry's watch events turned into changes (pure).

The registry sends a snapshot, then UPSERT, DELETE and ROUTING events. Heartbeats
change an instance's load every fraction of a second, so an UPSERT only becomes a
line when something an operator acts on changed: state, weights, labels or
address. A snapshot after a reconnect is compared with what was known, so the
lines say what changed while the watch was away rather than repeating everything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from registry.client import SnapshotChunks, state_name
from tidepool.ctl.render import alias_json, instance_json, tenant_json
from tidepool.registry.v1 import registry_pb2 as pb

Keep = Callable[[pb.Instance], bool]
"""Whether an instance passes the command's filters (`--selector`, `--state`)."""

KIND_NAMES = {
    pb.WatchEvent.KIND_SNAPSHOT: "SNAPSHOT",
    pb.WatchEvent.KIND_UPSERT: "UPSERT",
    pb.WatchEvent.KIND_DELETE: "DELETE",
    pb.WatchEvent.KIND_ROUTING: "ROUTING",
}
HEADER = f"{'TIME':8}  {'KIND':8}  {'INSTANCE':24}  {'STATE':9}  {'WEIGHT':>7}  {'POOL':14}  REV"
LEGEND = "# WEIGHT is effective/registered (0 while drained); Ctrl-C stops"


def clock_text(now: float) -> str:
    """Local wall-clock time of a change, to the second."""
    return time.strftime("%H:%M:%S", time.localtime(now))


def watch_line(now: float, kind: str, instance: pb.Instance, revision: int) -> str:
    """One change: time, kind, instance, state, effective/registered weight, pool, revision."""
    weight = f"{instance.effective_weight}/{instance.weight}"
    pool = instance.labels.get("pool", "-")
    return (
        f"{clock_text(now):8}  {kind:8}  {instance.id:24}  {state_name(instance.state):9}  "
        f"{weight:>7}  {pool:14}  {revision}\n"
    )


def routing_line(now: float, event: pb.WatchEvent) -> str:
    aliases = ",".join(a.name for a in event.aliases) or "none"
    return (
        f"{clock_text(now):8}  {'ROUTING':8}  aliases {aliases}; "
        f"{len(event.tenants)} tenant routes  {event.revision}\n"
    )


def _shown_fields(instance: pb.Instance) -> tuple[object, ...]:
    """What a text line shows: a change elsewhere would print the same line twice."""
    return (instance.state, instance.weight, instance.effective_weight, instance.labels.get("pool"))


def _json_fields(instance: pb.Instance) -> tuple[object, ...]:
    """What a JSON line carries that an operator acts on; load and heartbeat times left out."""
    return (
        *_shown_fields(instance),
        instance.admin_drained,
        instance.weight_overridden,
        instance.address,
        tuple(sorted(instance.labels.items())),
    )


class WatchView:
    """What the watch has seen so far; `apply` turns each event into the lines to print."""

    def __init__(self, keep: Keep, *, as_json: bool = False) -> None:
        self._keep = keep
        self._json = as_json
        self._signature = _json_fields if as_json else _shown_fields
        self._known: dict[str, pb.Instance] = {}
        self._routing: tuple[object, ...] | None = None
        self._snapshots = 0
        self._chunks = SnapshotChunks()
        self.revision = 0

    def apply(self, event: pb.WatchEvent, now: float) -> list[str]:
        whole = self._chunks.add(event)
        if whole is None:
            return []
        event = whole
        self.revision = max(self.revision, event.revision)
        if event.kind == pb.WatchEvent.KIND_SNAPSHOT:
            return self._snapshot(event, now)
        if event.kind == pb.WatchEvent.KIND_UPSERT:
            return [line for i in event.instances for line in self._upsert(i, now, event.revision)]
        if event.kind == pb.WatchEvent.KIND_DELETE:
            return [line for i in event.instances for line in self._delete(i, now, event.revision)]
        if event.kind == pb.WatchEvent.KIND_ROUTING:
            return self._routing_change(event, now)
        return []

    def _snapshot(self, event: pb.WatchEvent, now: float) -> list[str]:
        first = self._snapshots == 0
        self._snapshots += 1
        lines: list[str] = []
        current = {i.id: i for i in event.instances}
        for gone in [i for key, i in self._known.items() if key not in current]:
            lines += self._delete(gone, now, event.revision)
        for instance in event.instances:
            kind = "SNAPSHOT" if first else "UPSERT"
            lines += self._upsert(instance, now, event.revision, kind)
        return lines + self._routing_change(event, now)

    def _shown(self, before: pb.Instance | None, after: pb.Instance) -> bool:
        """Filters apply to both sides, so an instance leaving the filter is seen to leave."""
        return self._keep(after) or (before is not None and self._keep(before))

    def _upsert(
        self, instance: pb.Instance, now: float, revision: int, kind: str = "UPSERT"
    ) -> list[str]:
        before = self._known.get(instance.id)
        self._known[instance.id] = instance
        if before is not None and self._signature(before) == self._signature(instance):
            return []
        if not self._shown(before, instance):
            return []
        return [self._line(now, kind, instance, revision)]

    def _delete(self, instance: pb.Instance, now: float, revision: int) -> list[str]:
        before = self._known.pop(instance.id, None)
        # A DELETE may carry only the id: show what was last known of it.
        shown = instance if before is None or instance.service else before
        if not self._shown(before, shown):
            return []
        return [self._line(now, "DELETE", shown, revision)]

    def _routing_change(self, event: pb.WatchEvent, now: float) -> list[str]:
        routing = (
            tuple(sorted((a.name, a.selector, a.service) for a in event.aliases)),
            tuple(sorted((t.tenant, t.lang, tuple(t.aliases)) for t in event.tenants)),
        )
        changed = self._routing is not None and routing != self._routing
        self._routing = routing
        if not changed:
            return []
        if self._json:
            value: dict[str, Any] = {
                "time": _iso(now),
                "kind": "routing",
                "revision": event.revision,
                "aliases": [alias_json(a) for a in event.aliases],
                "tenants": [tenant_json(t) for t in event.tenants],
            }
            return [json.dumps(value) + "\n"]
        return [routing_line(now, event)]

    def _line(self, now: float, kind: str, instance: pb.Instance, revision: int) -> str:
        if self._json:
            value = {
                "time": _iso(now),
                "kind": kind.lower(),
                "revision": revision,
                "instance": instance_json(instance),
            }
            return json.dumps(value) + "\n"
        return watch_line(now, kind, instance, revision)


def _iso(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
