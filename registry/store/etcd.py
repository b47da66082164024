"""The etcd store: the registry's durable records as JSON values under one key prefix.

Every method is one etcd request (a put, a delete or a transaction), so it is
applied whole or not at all; any failure becomes `StoreUnavailableError` naming
etcd. Keys (PREFIX is `--etcd-prefix`, ids percent-encoded):

    PREFIX/instances/ID     PREFIX/aliases/NAME     PREFIX/tenants/TENANT/LANG
    PREFIX/retired/ID       PREFIX/moves/ID         PREFIX/fence
    PREFIX/attached/ID      (under the etcd lease of the replica an engine is attached to)
    PREFIX/leader           (the scheduler's leader lease, under an etcd lease of its own)
    PREFIX/pools            (the pool status the leader last published)

A write made for the scheduler leader (the call presents `x-tidepool-fence`) is a
transaction that compares the leader key's create revision with the one the key
had when that fence was handed out: a deposed leader's write changes nothing.

The store remembers the etcd revision of its load and of each of its own writes,
so the replica's mirror (`registry/etcd_mirror.py`) can tell a change it already
applied from one made through another replica.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import quote, unquote

from registry.errors import FailedPreconditionError, StoreUnavailableError
from registry.fencing import PRESENTED_FENCE
from registry.records import (
    AliasRecord,
    InstanceRecord,
    MoveRecord,
    RetiredOverrides,
    StoreSnapshot,
    TenantRecord,
)
from registry.store import codec
from registry.store.etcd_client import EtcdClient, EtcdError, EtcdSettings, prefix_end
from tidepool.etcd.v3 import rpc_pb2 as etcd

T = TypeVar("T")
FENCE_ATTEMPTS = 32
"""Compare-and-swap rounds `next_fence` tries before giving up (each loses only to another
replica's increment, so this many in a row means a storm, not bad luck)."""

KINDS = ("instances", "aliases", "tenants", "retired", "moves", "attached")
SINGLE_KEYS = ("fence", "leader", "pools")


def encode(part: str) -> str:
    return quote(part, safe="")


@dataclass
class Loaded:
    """What `load` saw besides the records: the revision, and the attachment keys."""

    revision: int = 0
    attached: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    """Instance id -> (value, mod revision) of its `attached` key."""
    leader: tuple[bytes, int] | None = None
    """The leader key's value and create revision, when a scheduler leads."""
    pools: bytes | None = None
    """The `pools` key's value, once a leader published its pool status."""


@dataclass
class KeyRevisions:
    """What this replica's memory reflects of each key: the latest etcd revision that touched
    it (its own writes and its mirror's events), and its mod revision then (0: deleted)."""

    revisions: dict[bytes, int] = field(default_factory=dict)
    mod: dict[bytes, int] = field(default_factory=dict)

    def note(self, key: bytes, revision: int, *, deleted: bool = False) -> None:
        if revision > self.revisions.get(key, 0):
            self.revisions[key] = revision
            self.mod[key] = 0 if deleted else revision

    def is_new(self, key: bytes, revision: int, *, deleted: bool = False) -> bool:
        """True when `revision` is later than anything known for `key` (then noted)."""
        if revision <= self.revisions.get(key, 0):
            return False
        self.note(key, revision, deleted=deleted)
        return True


class EtcdStore:
    """Store implementation on an etcd cluster (etcd 3.4 or later)."""

    def __init__(self, settings: EtcdSettings, prefix: str = "/tidepool") -> None:
        self.client = EtcdClient(settings)
        self.settings = settings
        self.prefix = prefix.rstrip("/")
        self.loaded = Loaded()
        self.known = KeyRevisions()
        self.leader_created: dict[int, int] = {}
        """Fence -> create revision of the leader key that fence was handed out with."""

    # --- keys ---------------------------------------------------------------------------

    def key(self, kind: str, *parts: str) -> bytes:
        return "/".join([self.prefix, kind, *(encode(p) for p in parts)]).encode()

    @property
    def root(self) -> bytes:
        return (self.prefix + "/").encode()

    @property
    def fence_key(self) -> bytes:
        return (self.prefix + "/fence").encode()

    @property
    def leader_key(self) -> bytes:
        return (self.prefix + "/leader").encode()

    @property
    def pools_key(self) -> bytes:
        return (self.prefix + "/pools").encode()

    def split(self, key: bytes) -> tuple[str, list[str]] | None:
        """(kind, decoded parts) of a key under the prefix, or None for a key of no kind."""
        if not key.startswith(self.root):
            return None
        kind, _, rest = key[len(self.root) :].decode().partition("/")
        if kind in SINGLE_KEYS and not rest:
            return kind, []
        if kind not in KINDS or not rest:
            return None
        return kind, [unquote(p) for p in rest.split("/")]

    def unavailable(self, exc: EtcdError) -> StoreUnavailableError:
        endpoints = ",".join(self.settings.endpoints)
        return StoreUnavailableError(
            f"etcd ({endpoints}) did not confirm the change: {exc}; retry when etcd is back"
        )

    # --- reads ----------------------------------------------------------------------------

    async def load(self) -> StoreSnapshot:
        try:
            response = await self.client.range(self.root, prefix_end(self.root))
        except EtcdError as exc:
            raise StoreUnavailableError(f"etcd: cannot load {self.prefix}/: {exc}") from None
        return self.decode(response.kvs, response.header.revision)

    def decode(self, kvs: Sequence[etcd.KeyValue], revision: int) -> StoreSnapshot:
        """Every record under the prefix as a snapshot; `self.loaded` gets the rest."""
        found: dict[str, list[object]] = {kind: [] for kind in KINDS}
        fence = 0
        attached: dict[str, tuple[bytes, int]] = {}
        leader: tuple[bytes, int] | None = None
        pools: bytes | None = None
        for kv in kvs:
            self.known.note(kv.key, kv.mod_revision)
            place = self.split(kv.key)
            if place is None:
                continue
            kind, parts = place
            if kind == "fence":
                fence = self._parse(kv.key, kv.value, int)
            elif kind == "attached":
                attached[parts[0]] = (kv.value, kv.mod_revision)
            elif kind == "leader":
                leader = (kv.value, kv.create_revision)
            elif kind == "pools":
                pools = kv.value
            else:
                found[kind].append(self._parse(kv.key, kv.value, DECODERS[kind]))
        listed = {kv.key for kv in kvs}
        for key in [k for k in self.known.mod if k not in listed]:
            self.known.note(key, revision, deleted=True)  # gone while we were not watching
        self.loaded = Loaded(revision, attached, leader, pools)
        return StoreSnapshot(
            tuple(found["instances"]),  # type: ignore[arg-type]
            tuple(found["aliases"]),  # type: ignore[arg-type]
            tuple(found["tenants"]),  # type: ignore[arg-type]
            tuple(found["moves"]),  # type: ignore[arg-type]
            fence,
            tuple(found["retired"]),  # type: ignore[arg-type]
        )

    def _parse(self, key: bytes, value: bytes, parse: Callable[[bytes], T]) -> T:
        try:
            return parse(value)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreUnavailableError(
                f"etcd store: key {key.decode(errors='replace')} is damaged ({exc!r}); "
                "fix or delete it with etcdctl"
            ) from None

    # --- writes ---------------------------------------------------------------------------

    async def _put(self, key: bytes, value: str) -> None:
        put = etcd.RequestOp(request_put=etcd.PutRequest(key=key, value=value.encode()))
        await self._write(key, put)

    async def put_pools(self, body: bytes) -> None:
        """The leader's pool status: fenced, and last writer wins (only the leader writes it,
        so a change this replica has not mirrored yet is an older status, not a conflict)."""
        put = etcd.RequestOp(request_put=etcd.PutRequest(key=self.pools_key, value=body))
        await self._write(self.pools_key, put, guard=False)

    async def _delete(self, key: bytes) -> None:
        await self._write(
            key, etcd.RequestOp(request_delete_range=etcd.DeleteRangeRequest(key=key))
        )

    async def _write(self, key: bytes, op: etcd.RequestOp, *, guard: bool = True) -> None:
        """One operation in one transaction, applied only if the key is as this replica knows
        it (no change through another replica is overwritten unseen; `guard=False` skips
        that check) and, when a fence is presented, only if the leader key is the one that
        fence was handed out with."""
        fence = PRESENTED_FENCE.get()
        compare = []
        if guard:
            mod = self.known.mod.get(key, 0)
            compare.append(etcd.Compare(key=key, target=etcd.Compare.MOD, mod_revision=mod))
        if fence is not None:
            created = self.leader_created.get(fence)
            if created is None:
                raise self.stale(fence)
            compare.append(
                etcd.Compare(
                    key=self.leader_key, target=etcd.Compare.CREATE, create_revision=created
                )
            )
        failure = [
            etcd.RequestOp(request_range=etcd.RangeRequest(key=self.leader_key)),
            etcd.RequestOp(request_range=etcd.RangeRequest(key=key, count_only=True)),
        ]
        try:
            response = await self.client.txn(
                etcd.TxnRequest(compare=compare, success=[op], failure=failure)
            )
        except EtcdError as exc:
            raise self.unavailable(exc) from None
        deleting = op.HasField("request_delete_range")
        if not response.succeeded:
            leader, current = (r.response_range for r in response.responses)
            if fence is not None and (not leader.kvs or leader.kvs[0].create_revision != created):
                raise self.stale(fence)
            if deleting and current.count == 0:
                return  # another replica deleted it first: the same end, nothing to do
            raise StoreUnavailableError(
                f"etcd: {key.decode(errors='replace')} changed through another replica at the "
                "same time; nothing was changed here, retry"
            )
        self.known.note(key, response.header.revision, deleted=deleting)

    def stale(self, fence: int | None) -> FailedPreconditionError:
        return FailedPreconditionError(
            f"x-tidepool-fence: {fence} is stale; the leader key in etcd "
            f"({self.leader_key.decode()}) is not the one that fence was handed out with"
        )

    async def put_instance(self, record: InstanceRecord) -> None:
        await self._put(self.key("instances", record.id), codec.instance_to_json(record))

    async def delete_instance(self, instance_id: str) -> None:
        await self._delete(self.key("instances", instance_id))

    async def put_alias(self, alias: AliasRecord) -> None:
        await self._put(self.key("aliases", alias.name), codec.alias_to_json(alias))

    async def delete_alias(self, name: str) -> None:
        await self._delete(self.key("aliases", name))

    async def put_tenant(self, tenant: TenantRecord) -> None:
        key = self.key("tenants", tenant.tenant, tenant.lang)
        await self._put(key, codec.tenant_to_json(tenant))

    async def delete_tenant(self, tenant: str, lang: str) -> None:
        await self._delete(self.key("tenants", tenant, lang))

    async def put_retired(self, retired: RetiredOverrides) -> None:
        await self._put(self.key("retired", retired.id), codec.retired_to_json(retired))

    async def delete_retired(self, instance_id: str) -> None:
        await self._delete(self.key("retired", instance_id))

    async def put_move(self, move: MoveRecord) -> None:
        await self._put(self.key("moves", move.id), codec.move_to_json(move))

    async def delete_move(self, move_id: str) -> None:
        await self._delete(self.key("moves", move_id))

    async def next_fence(self) -> int:
        """Increment the fence with a compare-and-swap on its mod revision (one transaction)."""
        key = self.fence_key
        try:
            for _ in range(FENCE_ATTEMPTS):
                current = await self.client.range(key)
                value, seen = 0, 0
                if current.kvs:
                    value = self._parse(key, current.kvs[0].value, int)
                    seen = current.kvs[0].mod_revision
                txn = etcd.TxnRequest(
                    compare=[
                        etcd.Compare(
                            key=key,
                            target=etcd.Compare.MOD,
                            result=etcd.Compare.EQUAL,
                            mod_revision=seen,
                        )
                    ],
                    success=[
                        etcd.RequestOp(
                            request_put=etcd.PutRequest(key=key, value=str(value + 1).encode())
                        )
                    ],
                )
                response = await self.client.txn(txn)
                if response.succeeded:
                    self.known.note(key, response.header.revision)
                    return value + 1
        except EtcdError as exc:
            raise self.unavailable(exc) from None
        raise StoreUnavailableError(
            f"etcd: the fence at {key.decode()} changed {FENCE_ATTEMPTS} times in a row "
            "under this replica; retry"
        )

    async def close(self) -> None:
        await self.client.close()


DECODERS: dict[str, Callable[[bytes], object]] = {
    "instances": codec.instance_from_json,
    "aliases": codec.alias_from_json,
    "tenants": codec.tenant_from_json,
    "retired": codec.retired_from_json,
    "moves": codec.move_from_json,
}


def attached_value(replica: str, liveness: dict[str, object]) -> bytes:
    """The body of an `attached` key: which replica holds the engine, and its liveness."""
    return json.dumps({"replica": replica, **liveness}, sort_keys=True).encode()
