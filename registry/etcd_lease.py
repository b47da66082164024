"""This replica's own etcd lease: granted at start, kept alive, granted anew when lost.

The keys that say "engine X is attached here" live under it, so when the replica
dies (or is cut off from etcd for longer than the TTL) etcd deletes them and the
other replicas start the hand-over grace. Keep-alives go to the etcd leader only
(no raft write); a leader change resets every lease's timer, which only lengthens
it. We do the keep-alive ourselves: one request every third of the TTL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from registry.errors import StoreUnavailableError
from registry.store.etcd_client import EtcdClient, EtcdError

log = logging.getLogger("tidepool.registry.etcd")
RETRY_S = 0.2


class LeaseKeeper:
    """Holds one etcd lease; calls `on_new_lease(lease_id)` whenever it had to get a new one."""

    def __init__(
        self,
        client: EtcdClient,
        ttl_s: int,
        on_new_lease: Callable[[int], None] = lambda _lease_id: None,
    ) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self._on_new_lease = on_new_lease
        self.lease_id = 0
        self.grants = 0
        """Leases granted so far (the first, then one per loss)."""

    async def grant(self) -> int:
        """Get a lease now (at start, or after the old one lapsed)."""
        try:
            response = await self.client.grant(self.ttl_s)
        except EtcdError as exc:
            raise StoreUnavailableError(f"etcd: cannot grant this replica's lease: {exc}") from None
        self.lease_id = int(response.ID)
        self.grants += 1
        return self.lease_id

    async def run(self) -> None:
        """Renew every TTL/3; after a loss, re-grant and report it; never gives up."""
        interval = self.ttl_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                remaining = await self.client.keep_alive(self.lease_id)
            except EtcdError as exc:
                log.warning("etcd lease %x: keep-alive failed: %s", self.lease_id, exc)
                interval = RETRY_S
                continue
            interval = self.ttl_s / 3
            if remaining > 0:
                continue
            log.warning("etcd lease %x lapsed; granting a new one", self.lease_id)
            try:
                lease_id = await self.grant()
            except StoreUnavailableError as exc:
                log.warning("%s", exc)
                interval = RETRY_S
                continue
            self._on_new_lease(lease_id)

    async def revoke(self) -> None:
        """Give the lease back at a graceful stop, so others start the hand-over at once."""
        if self.lease_id:
            try:
                await self.client.revoke(self.lease_id)
            except EtcdError as exc:
                log.warning(
                    "etcd lease %x: revoke failed (it lapses by itself): %s", self.lease_id, exc
                )
