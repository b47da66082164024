"""How ctl listings look: the documented JSON shapes and the human tables (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from registry.client import state_name
from tidepool.registry.v1 import registry_pb2 as pb

INSTANCE_HEADERS = (
    "ID", "STATE", "WEIGHT", "POOL", "LANG", "TIER", "BUSY", "QUEUED", "GPU", "AGE", "SEEN",
)  # fmt: skip
WIDE_HEADERS = ("SERVICE", "ADDRESS", "LABELS")


def json_text(value: object) -> str:
    """A `--json` answer: indented, keys in the documented order."""
    return json.dumps(value, indent=2, sort_keys=False) + "\n"


def instance_json(instance: pb.Instance) -> dict[str, Any]:
    """One instance in the `ctl instances --json` shape documented in the README."""
    load, gpu = instance.load, instance.load.gpu
    return {
        "id": instance.id,
        "service": instance.service,
        "address": instance.address,
        "weight": instance.weight,
        "effective_weight": instance.effective_weight,
        "capacity": instance.capacity,
        "labels": dict(sorted(instance.labels.items())),
        "state": state_name(instance.state),
        "admin_drained": instance.admin_drained,
        "load": {
            "in_flight": load.in_flight,
            "queued": load.queued,
            "slots": load.slots,
            "progress": load.progress,
            "gpu": {
                "present": gpu.present,
                "name": gpu.name,
                "utilization_percent": gpu.utilization_percent,
                "memory_used_bytes": gpu.memory_used_bytes,
                "memory_total_bytes": gpu.memory_total_bytes,
            },
        },
        "last_heartbeat_at": (
            instance.last_heartbeat_at.ToJsonString()
            if instance.HasField("last_heartbeat_at")
            else None
        ),
    }


def alias_json(alias: pb.Alias) -> dict[str, Any]:
    return {"name": alias.name, "selector": alias.selector, "service": alias.service}


def tenant_json(route: pb.TenantRoute) -> dict[str, Any]:
    return {"tenant": route.tenant, "lang": route.lang, "aliases": list(route.aliases)}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces."""
    cells = [list(headers)] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in cells
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


INSTANCES_LEGEND = (
    "# WEIGHT effective/registered (0 while drained); BUSY in-flight/capacity; "
    "AGE since registered; SEEN since last heartbeat"
)


def _since(stamp: Timestamp, now: float) -> str:
    if stamp.seconds == 0 and stamp.nanos == 0:
        return "-"
    return age_text(now - (stamp.seconds + stamp.nanos / 1e9))


def _other_labels(labels: Mapping[str, str]) -> str:
    """Labels without the ones that have their own column."""
    rest = [f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("lang", "tier", "pool")]
    return ",".join(rest) or "-"


def instance_row(i: pb.Instance, now: float, *, wide: bool = False) -> tuple[object, ...]:
    load, labels = i.load, i.labels
    row: tuple[object, ...] = (
        i.id,
        state_name(i.state),
        f"{i.effective_weight}/{i.weight}",
        labels.get("pool", "-"),
        labels.get("lang", "-"),
        labels.get("tier", "-"),
        f"{load.in_flight}/{i.capacity}",
        load.queued,
        f"{load.gpu.utilization_percent}%" if load.gpu.present else "-",
        _since(i.registered_at, now),
        _since(i.last_heartbeat_at, now),
    )
    if wide:
        row += (i.service, i.address, _other_labels(labels))
    return row


def instances_table(
    instances: Sequence[pb.Instance], now: float, *, wide: bool = False, legend: bool = True
) -> str:
    """The instances listing: a legend line, then one row per instance."""
    headers = INSTANCE_HEADERS + (WIDE_HEADERS if wide else ())
    text = table(headers, [instance_row(i, now, wide=wide) for i in instances])
    return f"{INSTANCES_LEGEND}\n{text}" if legend else text


def aliases_table(aliases: Sequence[pb.Alias]) -> str:
    return table(
        ("ALIAS", "SERVICE", "SELECTOR"), [(a.name, a.service, a.selector) for a in aliases]
    )


def tenants_table(routes: Sequence[pb.TenantRoute]) -> str:
    return table(
        ("TENANT", "LANG", "ALIASES"), [(r.tenant, r.lang, ",".join(r.aliases)) for r in routes]
    )


def age_text(seconds: float) -> str:
    """A short age for tables: 42s, 7m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def clip(text: str, width: int) -> str:
    """`text` cut to `width` columns, a `~` marking the cut (ASCII: any terminal shows it)."""
    if len(text) <= width:
        return text
    if width <= 0:
        return ""
    return text[: width - 1] + "~"


def clip_middle(text: str, width: int) -> str:
    """`text` cut to `width` by dropping its middle: ids differ at both ends."""
    if len(text) <= width or width < 5:
        return clip(text, width)
    head = (width - 1) // 2
    tail = width - 1 - head
    return f"{text[:head]}~{text[-tail:]}"
