"""The Store protocol: what the registry needs from durable storage."""

from __future__ import annotations

from typing import Protocol

from registry.records import (
    AliasRecord,
    InstanceRecord,
    MoveRecord,
    RetiredOverrides,
    StoreSnapshot,
    TenantRecord,
)


class Store(Protocol):
    """Durable records. Each method either fully applies or raises StoreUnavailableError."""

    async def load(self) -> StoreSnapshot: ...

    async def put_instance(self, record: InstanceRecord) -> None: ...

    async def delete_instance(self, instance_id: str) -> None: ...

    async def put_alias(self, alias: AliasRecord) -> None: ...

    async def delete_alias(self, name: str) -> None: ...

    async def put_tenant(self, tenant: TenantRecord) -> None: ...

    async def delete_tenant(self, tenant: str, lang: str) -> None: ...

    async def put_retired(self, retired: RetiredOverrides) -> None: ...

    async def delete_retired(self, instance_id: str) -> None: ...

    async def put_move(self, move: MoveRecord) -> None: ...

    async def delete_move(self, move_id: str) -> None: ...

    async def next_fence(self) -> int:
        """Durably increment and return the fencing number (never the same twice)."""
        ...

    async def close(self) -> None: ...
