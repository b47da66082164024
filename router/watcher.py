"""One watch stream on the registry, folded into the routing table, with last-known-good.

Why it never clears the table on its own: an unreachable registry says nothing
about the engines, so the router keeps routing on the last view (and the file
keeps that view across a restart) while it reconnects with jittered backoff.
Each reconnect starts with a snapshot, which replaces the view wholesale, so a
restarted registry whose revisions began again at 1, or another replica whose
revisions differ, is handled like any other: no gap, whatever the revisions say.

With several replicas (`--registry A,B,C`) a lost watch moves to the next one at
once; only a whole round of failures waits (jittered, at most 1 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from router.lkg import encode_view, load_view, save_view
from router.outlier import Departure
from router.table import RoutingTable
from router.view import RegistryView
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc
from tidepool.runtime.backoff import Backoff
from tidepool.runtime.channel import auth_metadata, open_channel, sleep_until_reconnected
from tidepool.runtime.replicas import ReplicaRotation, parse_addresses

log = logging.getLogger(__name__)
SAVE_INTERVAL_S = 1.0
"""At most one write of the view file per this many seconds."""
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 1.0
"""Cap on the wait between watch attempts; an attempt also goes as soon as the channel
reconnects, so a restarted registry's changes reach the router within about a second."""
_REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class RegistryWatcher:
    """Keeps `table` in step with the registry, or on the last known good view."""

    def __init__(
        self,
        registry: str,
        table: RoutingTable,
        *,
        token: str | None = None,
        service: str = "speech",
        state_file: Path | None = None,
        root_certificates: bytes | None = None,
        on_change: Callable[[], None] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._rotation = ReplicaRotation(
            parse_addresses(registry), backoff or Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S)
        )
        self._table = table
        self._metadata = auth_metadata(token)
        self._service = service
        self._state_file = state_file
        self._root_certificates = root_certificates
        self._on_change = on_change or (lambda: None)
        self.view = RegistryView()
        self.connected = False
        self.problem = "not connected yet"
        self.view_source = "none"
        """"none", "file" or "registry": where the current view came from."""
        self._lost_at = time.monotonic()
        self._departures: dict[str, Departure] = {}
        self._rebuild_pending = False
        self._save_task: asyncio.Task[None] | None = None

    # ---- state for metrics and /readyz ------------------------------------

    def stale_s(self) -> float:
        """0 while the stream is up; otherwise seconds since it went down."""
        if self.connected:
            return 0.0
        return time.monotonic() - self._lost_at

    def ready(self) -> tuple[bool, str]:
        if not self._table.has_view:
            return False, f"no view yet: {self.problem}"
        if self.connected:
            return True, "ready: watching the registry"
        return True, (
            f"ready on the last known good view from {self.view_source}, "
            f"{self.stale_s():.0f} s stale: {self.problem}"
        )

    # ---- running -----------------------------------------------------------

    def load_file(self) -> bool:
        """Start from the view file, if there is one; True if it was used."""
        if self._state_file is None:
            return False
        loaded = load_view(self._state_file)
        if loaded is None:
            return False
        self.view, saved_at = loaded
        self.view_source = "file"
        self._table.update(self.view)
        self._on_change()
        log.info(
            "routing on the view saved at %s (%d instances)",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(saved_at)),
            len(self.view.instances),
        )
        return True

    @property
    def registry(self) -> str:
        """The replica watched now (or tried next)."""
        return self._rotation.current

    async def run(self) -> None:
        """Watch until cancelled, moving between replicas and reconnecting with backoff."""
        channels: dict[str, grpc.aio.Channel] = {}
        try:
            while True:
                await self._watch_once(pb_grpc.RegistryStub(self._channel(channels)))
                delay = self._rotation.failed()
                await sleep_until_reconnected(self._channel(channels), delay)
        finally:
            self.connected = False
            await self._flush()
            for channel in channels.values():
                await channel.close()

    def _channel(self, channels: dict[str, grpc.aio.Channel]) -> grpc.aio.Channel:
        """The current replica's channel, opened once and kept (it reconnects by itself)."""
        address = self._rotation.current
        if address not in channels:
            channels[address] = open_channel(address, root_certificates=self._root_certificates)
        return channels[address]

    async def _watch_once(self, stub: Any) -> None:
        call = stub.Watch(pb.WatchRequest(service=self._service), metadata=self._metadata)
        try:
            async for event in call:
                if not self.connected:
                    self.connected = True
                    self.problem = ""
                    self._rotation.succeeded()
                    log.info("watching the registry at %s", self._rotation.current)
                self._apply(event)
        except grpc.aio.AioRpcError as error:
            self._lost(error)
        finally:
            call.cancel()
        if self.connected:
            self._lost(None)

    def _lost(self, error: grpc.aio.AioRpcError | None) -> None:
        if error is None:
            reason = f"the registry at {self._rotation.current} ended the watch"
        else:
            reason = f"{self._rotation.current}: {error.code().name}: {error.details()}"
            if error.code() in _REFUSED:
                reason = f"the registry refused the token ({reason})"
        if self.connected or reason != self.problem:
            log.warning("registry watch lost (%s); routing on the last view", reason)
        if self.connected:
            self._lost_at = time.monotonic()
        self.connected = False
        self.problem = reason

    def _apply(self, event: pb.WatchEvent) -> None:
        self._departures.update(self.view.apply(event))
        if event.kind == pb.WatchEvent.KIND_SNAPSHOT:
            self.view_source = "registry"
        if not self._rebuild_pending:
            # Fold a burst of events into one rebuild.
            self._rebuild_pending = True
            asyncio.get_running_loop().call_soon(self._rebuild)

    def _rebuild(self) -> None:
        self._rebuild_pending = False
        departures, self._departures = self._departures, {}
        self._table.update(self.view, departures)
        self._on_change()
        self._schedule_save()

    # ---- the view file -----------------------------------------------------

    def _schedule_save(self) -> None:
        if self._state_file is None or (self._save_task and not self._save_task.done()):
            return
        self._save_task = asyncio.get_running_loop().create_task(self._save_soon())

    async def _save_soon(self) -> None:
        await asyncio.sleep(SAVE_INTERVAL_S)
        await self._save()

    async def _save(self) -> None:
        if self._state_file is None or not self._table.has_view:
            return
        data = encode_view(self.view)
        try:
            await asyncio.to_thread(save_view, self._state_file, data)
        except OSError as exc:
            log.warning("cannot write the view file %s: %s", self._state_file, exc)

    async def _flush(self) -> None:
        """Write a pending save now (on shutdown)."""
        if self._save_task is not None and not self._save_task.done():
            self._save_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._save_task
            await self._save()
