"""`tidepool up --store etcd`: a local single-member etcd and two registry replicas on it.

So a user sees the multi-node shape on one machine: the scheduler, the engines and
the router take both replicas (`--registry A,B`) and move to the other when one is
gone. etcd is Debian's `etcd` binary (package `etcd-server`), keeping its data in
the up data directory, so a second run finds its state.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tidepool.runtime.children import Child, ChildError, start_child

ETCD_READY = ("serving client traffic", "ready to serve client requests")
"""etcd 3.4 logs the first when its client listener serves (with or without TLS); later
releases log the second."""
READY_TIMEOUT_S = 30.0
STOP_S = 10.0

StartReady = Callable[[str, Sequence[str]], Awaitable[Child]]


@dataclass(frozen=True)
class LocalEtcd:
    """Where the local member keeps its data and listens (HOST:PORT each)."""

    data_dir: Path
    client: str
    peer: str

    def argv(self, binary: str) -> list[str]:
        client, peer = f"http://{self.client}", f"http://{self.peer}"
        return [
            binary, "--name", "tidepool-up", "--data-dir", str(self.data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"tidepool-up={peer}",
            # etcd keeps every revision until compacted, and refuses writes at its quota:
            # keep one hour (run etcd clusters of your own with a retention too).
            "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h",
            # Its log goes to its stdout, which we read for the ready line but do not relay.
            "--logger", "zap", "--log-outputs", "stdout",
        ]  # fmt: skip

    async def start(self) -> Child:
        """Start the member and wait until it serves clients."""
        binary = shutil.which("etcd")
        if binary is None:
            raise ChildError(
                "--store etcd needs the etcd binary on PATH "
                "(Debian: apt-get install etcd-server etcd-client)",
                name="etcd",
            )
        await asyncio.to_thread(self.data_dir.mkdir, parents=True, exist_ok=True)
        child = start_child("etcd", self.argv(binary))
        await child.wait_ready_async(READY_TIMEOUT_S, ready=_ready)
        return child


def _ready(line: str) -> bool:
    return any(text in line for text in ETCD_READY)


def _on_free_ports(args: Sequence[str]) -> list[str]:
    """The same registry arguments with both listen addresses on free loopback ports."""
    result = list(args)
    for flag in ("--listen", "--http-listen"):
        result[result.index(flag) + 1] = "127.0.0.1:0"
    return result


async def start_registries(
    etcd: LocalEtcd | None, registry_args: Sequence[str], start_ready: StartReady
) -> tuple[Child, list[Child], str]:
    """The registry (on etcd: the first replica), the other children to stop after it in
    order, and the `--registry` value clients take."""
    if etcd is None:
        registry = await start_ready("registry", registry_args)
        return registry, [], registry.fields["grpc"]
    member = await etcd.start()
    started: list[Child] = [member]
    try:
        args = [*registry_args, "--store", "etcd", "--etcd-endpoints", f"http://{etcd.client}"]
        first = await start_ready("registry", args)
        started.insert(0, first)
        second = await start_ready("registry-2", _on_free_ports(args))
    except BaseException:
        for child in started:
            await child.stop_async(STOP_S)
        raise
    return first, [second, member], f"{first.fields['grpc']},{second.fields['grpc']}"
