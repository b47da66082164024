"""Real etcd members for tests: 1 or 3 on free loopback ports, data in a temporary directory.

`etcd_cluster(tmp_path, members=3)` starts them and stops them (SIGKILL, then wait) at
the end, pass or fail. A test can kill -9 one member, find the leader, stop and restart
members. Without the `etcd` binary a test skips with how to install it, except in CI
(`CI=true`), where a missing etcd is a failure: CI installs it (.ci/run).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.processes import ProcessError

INSTALL_HINT = "install etcd: apt-get install etcd-server etcd-client (Debian's etcd 3.4)"
START_TIMEOUT_S = 20.0
# Short raft timers: a lost leader is replaced in well under a second on loopback.
HEARTBEAT_MS = 50
ELECTION_MS = 500


def etcd_binary() -> str:
    """The etcd executable, or skip (fail in CI) saying how to get it."""
    path = shutil.which("etcd")
    if path is not None and shutil.which("etcdctl") is not None:
        return path
    missing = "etcd" if path is None else "etcdctl"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{missing} is not on PATH in CI ({INSTALL_HINT}; .ci/run should have)")
    pytest.skip(f"{missing} is not on PATH: {INSTALL_HINT}")


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class EtcdMember:
    """One etcd process and its ports."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@dataclass
class EtcdCluster:
    """A running set of members; `endpoints` is what `--etcd-endpoints` takes."""

    binary: str
    members: list[EtcdMember]
    token: str
    _stopped: bool = field(default=False)

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def start_member(self, member: EtcdMember, *, state: str = "new") -> None:
        args = [
            self.binary,
            "--name",
            member.name,
            "--data-dir",
            str(member.data_dir),
            "--listen-client-urls",
            member.endpoint,
            "--advertise-client-urls",
            member.endpoint,
            "--listen-peer-urls",
            member.peer_url,
            "--initial-advertise-peer-urls",
            member.peer_url,
            "--initial-cluster",
            self._initial_cluster(),
            "--initial-cluster-state",
            state,
            "--initial-cluster-token",
            self.token,
            "--heartbeat-interval",
            str(HEARTBEAT_MS),
            "--election-timeout",
            str(ELECTION_MS),
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]
        log = member.log_path.open("ab")
        try:
            member.popen = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            log.close()

    def wait_healthy(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Every running member answers `endpoint health` (a quorum read)."""
        deadline = time.monotonic() + timeout_s
        for member in self.members:
            if not member.running:
                continue
            while not self._healthy(member):
                if member.popen is not None and member.popen.poll() is not None:
                    raise ProcessError(f"etcd {member.name} exited:\n{member.log_tail()}")
                if time.monotonic() > deadline:
                    raise ProcessError(
                        f"etcd {member.name} not healthy within {timeout_s}s:\n{member.log_tail()}"
                    )
                time.sleep(0.05)  # polling a child process's health; no event to await

    def _etcdctl(
        self, *args: str, endpoints: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        etcdctl = shutil.which("etcdctl")
        if etcdctl is None:
            raise ProcessError(f"etcdctl is not on PATH: {INSTALL_HINT}")
        return subprocess.run(
            [etcdctl, "--endpoints", endpoints or self.endpoints, "--command-timeout=2s", *args],
            capture_output=True,
            text=True,
            timeout=10,
            env={**os.environ, "ETCDCTL_API": "3"},
            check=False,
        )

    def _healthy(self, member: EtcdMember) -> bool:
        result = self._etcdctl("endpoint", "health", endpoints=member.endpoint)
        return result.returncode == 0

    def leader(self, timeout_s: float = 10.0) -> EtcdMember:
        """The member that leads now (from `etcdctl endpoint status -w json`)."""
        deadline = time.monotonic() + timeout_s
        while True:
            running = ",".join(m.endpoint for m in self.members if m.running)
            result = self._etcdctl("endpoint", "status", "-w", "json", endpoints=running)
            if result.returncode == 0:
                for status in json.loads(result.stdout):
                    # JSON leaves out zero fields: no "leader" while there is none.
                    leader_id = status["Status"].get("leader")
                    if leader_id and status["Status"]["header"]["member_id"] == leader_id:
                        endpoint = status["Endpoint"]
                        return next(m for m in self.members if m.endpoint == endpoint)
            if time.monotonic() > deadline:
                raise ProcessError(f"no etcd leader within {timeout_s}s: {result.stderr}")
            time.sleep(0.05)  # polling a child process's state; no event to await

    def kill(self, member: EtcdMember) -> None:
        """kill -9 one member and reap it."""
        if member.popen is not None and member.popen.poll() is None:
            member.popen.kill()
            member.popen.wait(10)

    def pause(self, member: EtcdMember) -> None:
        """SIGSTOP: the member keeps its connections but answers nothing (a hung host)."""
        if member.popen is not None:
            member.popen.send_signal(signal.SIGSTOP)

    def resume(self, member: EtcdMember) -> None:
        if member.popen is not None:
            member.popen.send_signal(signal.SIGCONT)

    def restart(self, member: EtcdMember) -> None:
        """Start a stopped member again on its data directory."""
        self.start_member(member, state="existing")
        self.wait_healthy()

    def stop(self) -> None:
        for member in self.members:
            self.resume(member)  # a stopped process still dies of SIGKILL; this keeps it simple
            self.kill(member)
        self._stopped = True

    def etcdctl(self, *args: str) -> str:
        """Run etcdctl against the running members; its stdout (ProcessError on failure)."""
        running = ",".join(m.endpoint for m in self.members if m.running)
        result = self._etcdctl(*args, endpoints=running)
        if result.returncode != 0:
            raise ProcessError(f"etcdctl {' '.join(args)} failed: {result.stderr}")
        return result.stdout


def start_cluster(base: Path, members: int = 1) -> EtcdCluster:
    binary = etcd_binary()
    ports = _free_ports(2 * members)
    nodes = [
        EtcdMember(
            f"m{i}",
            ports[2 * i],
            ports[2 * i + 1],
            base / f"m{i}",
            base / f"m{i}.log",
        )
        for i in range(members)
    ]
    cluster = EtcdCluster(binary, nodes, token=f"tidepool-test-{os.getpid()}-{ports[0]}")
    try:
        for member in nodes:
            cluster.start_member(member)
        cluster.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def etcd_cluster(base: Path, members: int = 1) -> Iterator[EtcdCluster]:
    """Start `members` etcd members under `base`, and stop every one of them afterwards."""
    base.mkdir(parents=True, exist_ok=True)
    cluster = start_cluster(base, members)
    try:
        yield cluster
    finally:
        cluster.stop()
