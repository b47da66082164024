"""EmbeddedStore: durable records round-trip and survive closing and reopening the file."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from registry.errors import StoreUnavailableError
from registry.records import (
    AliasRecord,
    InstanceRecord,
    StoreSnapshot,
    TenantRecord,
    frozen_labels,
)
from registry.store import EmbeddedStore

RECORD = InstanceRecord(
    id="e-1",
    service="speech",
    address="[2001:db8::1]:9000",
    weight=100,
    capacity=8,
    engine_labels=frozen_labels({"lang": "zh", "tier": "idc"}),
    registered_at=1_700_000_000.25,
    label_overrides={"pool": "zh-acme", "tier": None},
    weight_override=40,
    admin_drained=True,
)
ALIAS = AliasRecord("zh-acme", "lang=zh,pool=zh-acme", "speech")
TENANT = TenantRecord("acme", "zh", ("zh-acme", "zh-public"))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EmbeddedStore]:
    opened = EmbeddedStore(tmp_path)
    yield opened
    await opened.close()


async def _reopened(path: Path) -> StoreSnapshot:
    again = EmbeddedStore(path)
    try:
        return await again.load()
    finally:
        await again.close()


async def test_empty_store_loads_nothing(store: EmbeddedStore) -> None:
    assert await store.load() == StoreSnapshot()


async def test_records_round_trip_with_overrides_intact(store: EmbeddedStore) -> None:
    await store.put_instance(RECORD)
    await store.put_alias(ALIAS)
    await store.put_tenant(TENANT)
    snapshot = await store.load()
    assert snapshot == StoreSnapshot((RECORD,), (ALIAS,), (TENANT,))
    (loaded,) = snapshot.instances
    # The removal override (None) must survive: it hides an engine label.
    assert loaded.labels == {"lang": "zh", "pool": "zh-acme"}
    assert loaded.configured_weight == 40


async def test_records_survive_closing_and_reopening(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    await store.put_instance(RECORD)
    await store.put_alias(ALIAS)
    await store.put_tenant(TENANT)
    await store.close()
    assert store.path.exists()
    assert await _reopened(tmp_path) == StoreSnapshot((RECORD,), (ALIAS,), (TENANT,))


async def test_writes_are_visible_to_another_connection_before_close(
    store: EmbeddedStore, tmp_path: Path
) -> None:
    # As after a kill -9: what a put returned from is already on disk.
    await store.put_alias(ALIAS)
    assert (await _reopened(tmp_path)).aliases == (ALIAS,)


async def test_put_replaces_and_delete_removes(store: EmbeddedStore, tmp_path: Path) -> None:
    await store.put_instance(RECORD)
    await store.put_alias(ALIAS)
    await store.put_tenant(TENANT)
    changed = AliasRecord(ALIAS.name, "pool=zh-acme", "speech")
    await store.put_alias(changed)
    await store.put_tenant(TenantRecord("acme", "zh", ("zh-public",)))
    await store.put_tenant(TenantRecord("acme", "en", ("en-public",)))
    snapshot = await store.load()
    assert snapshot.aliases == (changed,)
    assert sorted((t.lang, t.aliases) for t in snapshot.tenants) == [
        ("en", ("en-public",)),
        ("zh", ("zh-public",)),
    ]
    await store.delete_instance("e-1")
    await store.delete_alias("zh-acme")
    await store.delete_tenant("acme", "zh")
    await store.delete_instance("never-there")  # deleting the absent is not an error
    assert await _reopened(tmp_path) == StoreSnapshot(
        tenants=(TenantRecord("acme", "en", ("en-public",)),)
    )


async def test_store_from_another_schema_version_is_refused(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    await store.put_alias(ALIAS)
    await store.close()
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    db.close()
    again = EmbeddedStore(tmp_path)
    with pytest.raises(StoreUnavailableError, match="schema version 99"):
        await again.load()
    await again.close()
