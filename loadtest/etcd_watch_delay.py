"""Watch delay across registry replicas on etcd: a change through replica A, seen on B.

Starts one etcd member (Debian's `etcd`, on free loopback ports, data in a
temporary directory) and two registry replicas on it, registers one instance
through A, and watches it on both replicas. Each round changes a label of the
instance through A `--changes` times, one at a time, and times from the moment the
admin call was sent until each watcher sees the new label. The watcher on A
itself is the baseline measured side by side: the figure is B's delay, and B's
delay as a ratio of A's.

    .venv/bin/python -m loadtest.etcd_watch_delay --changes 200 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

SERVICE = "speech"
INSTANCE = "e-probe"
SEEN_TIMEOUT_S = 2.0
READY_LINE = "tidepool registry ready"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait_serving(port: int, process: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """Until the member accepts connections (it serves clients only once it has a leader)."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)  # polling a child's port; there is nothing to await
    raise RuntimeError("etcd did not start serving (see its log in the temporary directory)")


@contextlib.contextmanager
def etcd_member(base: Path) -> Iterator[str]:
    """One etcd member on free loopback ports; yields its client URL."""
    binary = shutil.which("etcd")
    if binary is None:
        sys.exit("etcd is not on PATH: apt-get install etcd-server etcd-client")
    client, peer = _free_ports(2)
    url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    args = [
        binary, "--name", "bench", "--data-dir", str(base / "etcd"),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"bench={peer_url}",
    ]  # fmt: skip
    with (base / "etcd.log").open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_serving(client, process)
        yield url
    finally:
        process.kill()
        process.wait(10)


def _replica_args(endpoint: str | None, extra: Sequence[str]) -> list[str]:
    code = "import sys; from registry.server import main; sys.exit(main(sys.argv[1:]))"
    args = [sys.executable, "-c", code, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
    if endpoint is not None:
        args += ["--store", "etcd", "--etcd-endpoints", endpoint, "--etcd-prefix", "/bench"]
    return [*args, *extra]


@contextlib.asynccontextmanager
async def replica_process(endpoint: str | None, *extra: str) -> AsyncIterator[tuple[str, int]]:
    """A registry on etcd at `endpoint` (None: the embedded store); yields (gRPC address, pid)."""
    process = await asyncio.create_subprocess_exec(
        *_replica_args(endpoint, extra),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(_ready_line(process.stdout), 30)
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        yield fields["grpc"], process.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await process.wait()


async def _ready_line(stream: asyncio.StreamReader) -> str:
    while True:
        raw = await stream.readline()
        if not raw:
            raise RuntimeError("registry replica exited before it was ready")
        if raw.decode().startswith(READY_LINE):
            return raw.decode()


@dataclass
class Watcher:
    """Times when the probe instance's `probe` label reaches one replica's watchers."""

    name: str
    stub: pb_grpc.RegistryStub
    seen: dict[int, asyncio.Event] = field(default_factory=dict)
    at: dict[int, float] = field(default_factory=dict)

    def expect(self, weight: int) -> asyncio.Event:
        self.seen[weight] = asyncio.Event()
        return self.seen[weight]

    async def run(self) -> None:
        async for event in self.stub.Watch(pb.WatchRequest(service=SERVICE)):
            for instance in event.instances:
                if instance.id != INSTANCE:
                    continue
                weight = int(instance.labels.get("probe", "0"))
                waiting = self.seen.get(weight)
                if waiting is not None and not waiting.is_set():
                    self.at[weight] = time.perf_counter()
                    waiting.set()


async def one_round(
    admin: pb_grpc.AdminStub, watchers: Sequence[Watcher], changes: int, start: int
) -> dict[str, list[float]]:
    delays: dict[str, list[float]] = {w.name: [] for w in watchers}
    for n in range(changes):
        weight = start + n
        events = [w.expect(weight) for w in watchers]
        sent = time.perf_counter()
        await admin.SetLabels(pb.SetLabelsRequest(instance_id=INSTANCE, set={"probe": str(weight)}))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), SEEN_TIMEOUT_S)
        for w in watchers:
            if weight in w.at:
                delays[w.name].append(w.at[weight] - sent)
    return delays


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(changes: int, repeats: int) -> int:
    with (
        tempfile.TemporaryDirectory(prefix="tidepool-etcd-bench-") as tmp,
        etcd_member(Path(tmp)) as endpoint,
    ):
        async with replica_process(endpoint) as (a, _), replica_process(endpoint) as (b, _):
            channel_a = grpc.aio.insecure_channel(a)
            channel_b = grpc.aio.insecure_channel(b)
            registry = pb_grpc.RegistryStub(channel_a)
            request = pb.RegisterRequest(
                service=SERVICE, instance_id=INSTANCE, address="127.0.0.1:9", weight=100, capacity=1
            )
            await registry.Register(request)
            watchers = [
                Watcher("A (same replica, baseline)", registry),
                Watcher("B (other replica)", pb_grpc.RegistryStub(channel_b)),
            ]
            tasks = [asyncio.create_task(w.run()) for w in watchers]
            admin = pb_grpc.AdminStub(channel_a)
            rounds = []
            for r in range(repeats):
                rounds.append(await one_round(admin, watchers, changes, 1 + r * changes))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await channel_a.close()
            await channel_b.close()
    return report(rounds, changes)


def report(rounds: list[dict[str, list[float]]], changes: int) -> int:
    print(
        f"command: {shlex.join([sys.executable, '-m', 'loadtest.etcd_watch_delay', *sys.argv[1:]])}"
    )
    print(f"load average: {Path('/proc/loadavg').read_text().strip()}  cpus: {os.cpu_count()}")
    medians: dict[str, tuple[float, float]] = {}
    for name in rounds[0]:
        p50 = statistics.median(percentile(r[name], 0.50) for r in rounds)
        p99 = statistics.median(percentile(r[name], 0.99) for r in rounds)
        lost = sum(changes - len(r[name]) for r in rounds)
        medians[name] = (p50, p99)
        print(f"{name:30s} p50 {p50 * 1000:7.2f} ms  p99 {p99 * 1000:7.2f} ms  lost {lost}")
    (base50, base99), (cross50, cross99) = medians.values()
    print(
        f"ratio B/A: p50 {cross50 / base50:.2f}x  p99 {cross99 / base99:.2f}x  "
        f"(median of {len(rounds)} rounds of {changes} changes)"
    )
    ok = cross99 <= 0.100
    print(f"target p99 across replicas <= 100 ms: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.etcd_watch_delay",
        description="Time a change through one registry replica until another's watcher sees it.",
    )
    parser.add_argument("--changes", type=int, default=200, help="changes per round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (the median is reported)")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.changes, args.repeats))


if __name__ == "__main__":
    sys.exit(main())
