"""The scheduler's leader lease in etcd: one key, under an etcd lease, with the fence in it.

Taking the leadership is one transaction: the leader key must not exist and the
fence must be the one just read; it then writes fence + 1 and the leader key
(holder, fence, etcd lease id). Renewing is a keep-alive of that etcd lease, so
it writes nothing. When the holder stops renewing, etcd deletes the key after the
lease TTL (at least 2 s, whatever shorter TTL the scheduler asked for) and every
replica's mirror sees the leadership end. Fenced writes compare the key's create
revision (registry/store/etcd.py), so a deposed leader's writes change nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from registry.errors import FailedPreconditionError, StoreUnavailableError
from registry.leadership import LeaderLease
from registry.store.etcd import EtcdStore
from registry.store.etcd_client import EtcdError
from tidepool.etcd.v3 import rpc_pb2 as etcd

MIN_ETCD_TTL_S = 2
ATTEMPTS = 8


@dataclass(frozen=True)
class LeaderRecord:
    """The body of the leader key."""

    holder: str
    fence: int
    lease_id: int
    ttl_s: float

    def encode(self) -> bytes:
        return json.dumps(
            {"holder": self.holder, "fence": self.fence, "lease": self.lease_id, "ttl": self.ttl_s}
        ).encode()

    @staticmethod
    def decode(body: bytes) -> LeaderRecord:
        try:
            data = json.loads(body)
            return LeaderRecord(
                str(data["holder"]), int(data["fence"]), int(data["lease"]), float(data["ttl"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a leader record: {exc!r}") from None

    def lease(self, now: float) -> LeaderLease:
        return LeaderLease(self.holder, self.fence, now + self.ttl_s, held_in_etcd=True)


class EtcdLeadership:
    """Acquire, renew and release the leader key for the scheduler (called under the core lock)."""

    def __init__(self, store: EtcdStore) -> None:
        self.store = store

    async def acquire(self, holder: str, ttl_s: float) -> LeaderRecord:
        """Take or renew the leadership; FailedPreconditionError naming the holder if taken."""
        try:
            for _ in range(ATTEMPTS):
                current = await self.store.client.range(self.store.leader_key)
                if current.kvs:
                    record = self._existing(current.kvs[0], holder)
                    if await self.store.client.keep_alive(record.lease_id) > 0:
                        return record
                    continue  # it lapsed just now: its key is going; take it afresh
                taken = await self._take(holder, ttl_s)
                if taken is not None:
                    return taken
        except EtcdError as exc:
            raise self.store.unavailable(exc) from None
        raise StoreUnavailableError("etcd: the leader key kept changing; retry")

    def _existing(self, kv: etcd.KeyValue, holder: str) -> LeaderRecord:
        record = LeaderRecord.decode(kv.value)
        self.store.leader_created[record.fence] = kv.create_revision
        if record.holder != holder:
            raise FailedPreconditionError(
                f"holder: leadership is held by {record.holder!r} (fence {record.fence}, in etcd)"
            )
        return record

    async def _take(self, holder: str, ttl_s: float) -> LeaderRecord | None:
        """One attempt at the transaction; None when someone else moved first."""
        client, key, fence_key = self.store.client, self.store.leader_key, self.store.fence_key
        fence_now = await client.range(fence_key)
        fence, seen = 0, 0
        if fence_now.kvs:
            fence, seen = int(fence_now.kvs[0].value), fence_now.kvs[0].mod_revision
        grant = await client.grant(max(MIN_ETCD_TTL_S, math.ceil(ttl_s)))
        record = LeaderRecord(holder, fence + 1, int(grant.ID), ttl_s)
        txn = etcd.TxnRequest(
            compare=[
                etcd.Compare(key=key, target=etcd.Compare.CREATE, create_revision=0),
                etcd.Compare(key=fence_key, target=etcd.Compare.MOD, mod_revision=seen),
            ],
            success=[
                etcd.RequestOp(
                    request_put=etcd.PutRequest(key=fence_key, value=str(fence + 1).encode())
                ),
                etcd.RequestOp(
                    request_put=etcd.PutRequest(key=key, value=record.encode(), lease=grant.ID)
                ),
            ],
        )
        response = await client.txn(txn)
        if not response.succeeded:
            await client.revoke(int(grant.ID))
            return None
        revision = response.header.revision
        self.store.leader_created[record.fence] = revision
        self.store.known.note(key, revision)
        self.store.known.note(fence_key, revision)
        return record

    async def release(self, holder: str) -> None:
        """Delete the leader key if `holder` holds it (and give its etcd lease back)."""
        try:
            current = await self.store.client.range(self.store.leader_key)
            if not current.kvs:
                return
            record = LeaderRecord.decode(current.kvs[0].value)
            if record.holder == holder:
                await self.store.client.revoke(record.lease_id)  # deletes the key with it
        except EtcdError as exc:
            raise self.store.unavailable(exc) from None
