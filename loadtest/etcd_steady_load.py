"""Steady state of registry replicas on etcd: etcd writes and replica CPU per 1,000 engines.

Starts one etcd member and two registry replicas on it; `--engines` simulated
engines (in this process) register through replica A and heartbeat to it every
second. Once all are attached and settled, it counts etcd writes (the cluster's
revision) and the CPU of both replicas over `--window-s`. The baseline, measured
in the same run with the same fleet, is one registry on the embedded store.

    .venv/bin/python -m loadtest.etcd_steady_load --engines 1000 --window-s 10 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shlex
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from loadtest.etcd_watch_delay import etcd_member, replica_process
from registry.store.etcd_client import EtcdClient, EtcdSettings, prefix_end
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

CHANNELS = 8
INTERVAL_S = 1.0
FAST_REGISTRATION = ("--register-rate", "100000", "--register-burst", "100000")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Fleet:
    """Engines registered through one registry and beating to it."""

    address: str
    engines: int
    tasks: list[asyncio.Task[None]]
    channels: list[grpc.aio.Channel]

    @staticmethod
    async def start(address: str, engines: int) -> Fleet:
        channels = [grpc.aio.insecure_channel(address) for _ in range(CHANNELS)]
        ready = asyncio.Semaphore(0)
        tasks = [
            asyncio.create_task(_engine(channels[n % CHANNELS], n, ready)) for n in range(engines)
        ]
        for _ in range(engines):
            await asyncio.wait_for(ready.acquire(), 60)
        return Fleet(address, engines, tasks, channels)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for channel in self.channels:
            await channel.close()


async def _engine(channel: grpc.aio.Channel, n: int, ready: asyncio.Semaphore) -> None:
    stub = pb_grpc.RegistryStub(channel)
    request = pb.RegisterRequest(
        service="speech",
        instance_id=f"e-{n}",
        address=f"127.0.0.1:{20000 + n}",
        weight=100,
        capacity=4,
        labels={"lang": "zh" if n % 2 else "en", "tier": "idc"},
    )
    registered = await stub.Register(request)
    call = stub.Heartbeat()
    beat = pb.HeartbeatRequest(instance_id=f"e-{n}", secret=registered.secret)
    await call.write(beat)
    await call.read()
    ready.release()
    await asyncio.sleep(random.uniform(0, INTERVAL_S))  # spread the beats over the interval
    while True:
        beat.load.in_flight = random.randint(0, 3)
        beat.load.progress += 1
        await call.write(beat)
        await asyncio.sleep(INTERVAL_S)


async def etcd_revision(endpoint: str) -> int:
    client = EtcdClient(EtcdSettings((endpoint,)))
    try:
        return int((await client.range(b"/", prefix_end(b"/"))).header.revision)
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def fleet_on(address: str, engines: int) -> AsyncIterator[Fleet]:
    fleet = await Fleet.start(address, engines)
    try:
        yield fleet
    finally:
        await fleet.stop()


async def measure_etcd(endpoint: str, engines: int, window_s: float) -> dict[str, float]:
    async with (
        replica_process(endpoint, *FAST_REGISTRATION) as (a, a_pid),
        replica_process(endpoint, *FAST_REGISTRATION) as (_b, b_pid),
        fleet_on(a, engines),
    ):
        await asyncio.sleep(3.0)  # settle: attachments written, first beats spread out
        revision, cpu_a, cpu_b = (
            await etcd_revision(endpoint),
            cpu_seconds(a_pid),
            cpu_seconds(b_pid),
        )
        await asyncio.sleep(window_s)  # the measured window
        writes = await etcd_revision(endpoint) - revision
        return {
            "etcd_writes_per_s": writes / window_s,
            "owner_cpu": (cpu_seconds(a_pid) - cpu_a) / window_s,
            "other_cpu": (cpu_seconds(b_pid) - cpu_b) / window_s,
        }


async def measure_embedded(data_dir: Path, engines: int, window_s: float) -> float:
    args = ("--data-dir", str(data_dir), *FAST_REGISTRATION)
    async with replica_process(None, *args) as (address, pid), fleet_on(address, engines):
        await asyncio.sleep(3.0)  # settle as above
        before = cpu_seconds(pid)
        await asyncio.sleep(window_s)  # the measured window
        return (cpu_seconds(pid) - before) / window_s


async def run(engines: int, window_s: float, repeats: int) -> list[dict[str, float]]:
    results = []
    for r in range(repeats):
        with tempfile.TemporaryDirectory(prefix="tidepool-etcd-load-") as tmp:
            with etcd_member(Path(tmp)) as endpoint:
                figures = await measure_etcd(endpoint, engines, window_s)
            figures["embedded_cpu"] = await measure_embedded(Path(tmp) / "emb", engines, window_s)
        results.append(figures)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
    return results


def report(results: list[dict[str, float]], engines: int) -> None:
    median = {k: statistics.median(r[k] for r in results) for k in results[0]}
    per_k = 1000 / engines
    print(
        f"\n{engines} engines beating every {INTERVAL_S:g} s to replica A; "
        f"medians of {len(results)}"
    )
    print(
        "etcd writes/s per 1,000 engines at steady state: "
        f"{median['etcd_writes_per_s'] * per_k:.2f}"
    )
    print(
        f"CPU per 1,000 engines (cores): owner replica {median['owner_cpu'] * per_k:.3f}, "
        f"other replica {median['other_cpu'] * per_k:.3f}, "
        f"embedded store {median['embedded_cpu'] * per_k:.3f}"
    )
    print(f"owner replica / embedded: {median['owner_cpu'] / median['embedded_cpu']:.2f}x")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.etcd_steady_load")
    parser.add_argument("--engines", type=int, default=1000)
    parser.add_argument("--window-s", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(
        f"command: {shlex.join([sys.executable, '-m', 'loadtest.etcd_steady_load', *sys.argv[1:]])}"
    )
    print(f"load average at start: {Path('/proc/loadavg').read_text().strip()}")
    results = asyncio.run(run(args.engines, args.window_s, args.repeats))
    report(results, args.engines)
    print(f"load average at end: {Path('/proc/loadavg').read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
