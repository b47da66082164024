"""JSON bodies of the durable records: one encoding, shared by the embedded and etcd stores."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from registry.records import (
    AliasRecord,
    InstanceRecord,
    MoveRecord,
    RetiredOverrides,
    TenantRecord,
    frozen_labels,
)


def instance_to_json(record: InstanceRecord) -> str:
    return json.dumps(
        {
            "id": record.id,
            "service": record.service,
            "address": record.address,
            "weight": record.weight,
            "capacity": record.capacity,
            "engine_labels": dict(record.engine_labels),
            "registered_at": record.registered_at,
            "label_overrides": dict(record.label_overrides),
            "weight_override": record.weight_override,
            "admin_drained": record.admin_drained,
            "owner_digest": record.owner_digest,
        },
        sort_keys=True,
    )


def instance_from_json(body: str | bytes) -> InstanceRecord:
    data: dict[str, Any] = json.loads(body)
    return InstanceRecord(
        id=data["id"],
        service=data["service"],
        address=data["address"],
        weight=data["weight"],
        capacity=data["capacity"],
        engine_labels=frozen_labels(data["engine_labels"]),
        registered_at=data["registered_at"],
        label_overrides=dict(data["label_overrides"]),
        weight_override=data["weight_override"],
        admin_drained=data["admin_drained"],
        owner_digest=data.get("owner_digest", ""),
    )


def alias_to_json(alias: AliasRecord) -> str:
    return json.dumps({"name": alias.name, "selector": alias.selector, "service": alias.service})


def alias_from_json(body: str | bytes) -> AliasRecord:
    return AliasRecord(**json.loads(body))


def tenant_to_json(tenant: TenantRecord) -> str:
    return json.dumps(
        {"tenant": tenant.tenant, "lang": tenant.lang, "aliases": list(tenant.aliases)}
    )


def tenant_from_json(body: str | bytes) -> TenantRecord:
    data = json.loads(body)
    return TenantRecord(data["tenant"], data["lang"], tuple(data["aliases"]))


def move_to_json(move: MoveRecord) -> str:
    return json.dumps(dataclasses.asdict(move), sort_keys=True)


def move_from_json(body: str | bytes) -> MoveRecord:
    return MoveRecord(**json.loads(body))


def retired_to_json(retired: RetiredOverrides) -> str:
    return json.dumps(dataclasses.asdict(retired), sort_keys=True)


def retired_from_json(body: str | bytes) -> RetiredOverrides:
    data: dict[str, Any] = json.loads(body)
    return RetiredOverrides(
        id=data["id"],
        label_overrides=dict(data["label_overrides"]),
        weight_override=data["weight_override"],
        admin_drained=bool(data["admin_drained"]),
        retired_at=float(data["retired_at"]),
    )
