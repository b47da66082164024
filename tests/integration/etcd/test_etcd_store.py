"""The etcd store against a real etcd member: every record round-trips, fences never repeat,
a failure is StoreUnavailableError naming etcd, and another replica's writes are seen."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from registry.errors import StoreUnavailableError
from registry.records import (
    AliasRecord,
    InstanceRecord,
    MoveRecord,
    RetiredOverrides,
    TenantRecord,
    frozen_labels,
)
from registry.store.etcd import EtcdStore
from registry.store.etcd_client import EtcdSettings
from tests.support.etcd_harness import EtcdCluster

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(60)]


def _store(cluster: EtcdCluster, prefix: str = "/tidepool") -> EtcdStore:
    return EtcdStore(EtcdSettings(tuple(cluster.endpoints.split(","))), prefix)


def _instance(instance_id: str = "e-1") -> InstanceRecord:
    return InstanceRecord(
        instance_id,
        "evaluate",
        "127.0.0.1:9001",
        100,
        4,
        frozen_labels({"lang": "zh", "tier": "idc"}),
        1.5,
        label_overrides={"pool": "zh-public", "gpu": None},
        weight_override=50,
        admin_drained=True,
        owner_digest="abc",
    )


async def test_every_record_kind_survives_a_new_store_on_the_same_prefix(
    cluster: EtcdCluster,
) -> None:
    store = _store(cluster)
    move = MoveRecord("m-1", "e-1", "zh-public", "en-public", "draining", "tide", 1.0, 2.0)
    retired = RetiredOverrides("e-9", {"pool": "x"}, 10, False, 3.0)
    await store.put_instance(_instance())
    await store.put_instance(_instance("e/odd id"))
    await store.put_alias(AliasRecord("zh-public", "lang=zh", "evaluate"))
    await store.put_tenant(TenantRecord("acme", "zh", ("zh-acme", "zh-public")))
    await store.put_move(move)
    await store.put_retired(retired)
    assert await store.next_fence() == 1
    await store.close()

    fresh = _store(cluster)
    snapshot = await fresh.load()
    await fresh.close()
    assert sorted(r.id for r in snapshot.instances) == ["e-1", "e/odd id"]
    assert next(r for r in snapshot.instances if r.id == "e-1") == _instance()
    assert snapshot.aliases == (AliasRecord("zh-public", "lang=zh", "evaluate"),)
    assert snapshot.tenants == (TenantRecord("acme", "zh", ("zh-acme", "zh-public")),)
    assert snapshot.moves == (move,)
    assert snapshot.retired == (retired,)
    assert snapshot.fence == 1


async def test_deletes_remove_only_their_record(cluster: EtcdCluster) -> None:
    store = _store(cluster)
    await store.put_instance(_instance("e-1"))
    await store.put_instance(_instance("e-2"))
    await store.put_alias(AliasRecord("a", "lang=zh", "evaluate"))
    await store.put_tenant(TenantRecord("acme", "zh", ("a",)))
    await store.delete_instance("e-1")
    await store.delete_tenant("acme", "zh")
    snapshot = await store.load()
    await store.close()
    assert [r.id for r in snapshot.instances] == ["e-2"]
    assert snapshot.tenants == ()
    assert len(snapshot.aliases) == 1


async def test_prefixes_keep_two_registries_apart(cluster: EtcdCluster) -> None:
    first, second = _store(cluster, "/one"), _store(cluster, "/one-two")
    await first.put_instance(_instance("e-1"))
    assert (await second.load()).instances == ()
    await first.close()
    await second.close()


async def test_concurrent_fences_from_two_replicas_never_repeat(cluster: EtcdCluster) -> None:
    stores = [_store(cluster) for _ in range(4)]
    fences = await asyncio.gather(*(s.next_fence() for s in stores for _ in range(10)))
    for store in stores:
        await store.close()
    assert sorted(fences) == list(range(1, 41))


async def test_a_write_with_etcd_down_is_unavailable_naming_etcd(cluster: EtcdCluster) -> None:
    store = _store(cluster)
    await store.put_instance(_instance("e-1"))
    cluster.stop()
    with pytest.raises(StoreUnavailableError, match="etcd"):
        await store.put_instance(_instance("e-2"))
    with pytest.raises(StoreUnavailableError, match="etcd"):
        await store.next_fence()
    await store.close()


async def test_a_damaged_value_names_its_key(cluster: EtcdCluster) -> None:
    cluster.etcdctl("put", "/tidepool/aliases/bad", "{not json")
    store = _store(cluster)
    with pytest.raises(StoreUnavailableError, match="/tidepool/aliases/bad"):
        await store.load()
    await store.close()


async def test_load_remembers_the_revision_and_each_key_revision(cluster: EtcdCluster) -> None:
    store = _store(cluster)
    await store.put_instance(_instance("e-1"))
    key = store.key("instances", "e-1")
    written = store.known.revisions[key]
    await store.load()
    assert store.loaded.revision >= written
    assert not store.known.is_new(key, written)
    assert store.known.is_new(key, written + 1)
    await store.close()


async def test_a_write_over_a_change_this_replica_has_not_seen_is_refused(
    cluster: EtcdCluster,
) -> None:
    """Two replicas edit one instance: the one that missed the other's change must not
    overwrite it with a record built from what it knew before."""
    first, second = _store(cluster), _store(cluster)
    await first.put_instance(_instance("e-1"))
    await second.load()
    await first.put_instance(replace(_instance("e-1"), weight_override=7))
    with pytest.raises(StoreUnavailableError, match="changed through another replica"):
        await second.put_instance(replace(_instance("e-1"), admin_drained=False))
    with pytest.raises(StoreUnavailableError, match="changed through another replica"):
        await second.delete_instance("e-1")
    await first.put_alias(AliasRecord("gone", "lang=zh", "speech"))
    await second.load()
    await first.delete_alias("gone")
    await second.delete_alias("gone")  # deleted first elsewhere: the same end, no error
    await second.load()  # what its mirror would have applied
    await second.put_instance(replace(_instance("e-1"), weight_override=7, admin_drained=False))
    (stored,) = (await first.load()).instances
    assert (stored.weight_override, stored.admin_drained) == (7, False)
    await asyncio.gather(first.close(), second.close())
