"""HAProxy in front of the same engines: a second C yardstick for the router's CPU cost.

Why a second one: nginx's `grpc_pass` is one way a C proxy moves gRPC; HAProxy
relays HTTP/2 frame by frame much like the relay does (no request buffering),
so together they bracket "what a proxy written in C costs per call". Configured
as an operator would for gRPC: one thread (a core's worth, like one router
process), `proto h2` on both sides (h2c, no TLS), `http-reuse always` so calls
share the kept-alive engine connections, weighted round robin, loopback only.
Everything it writes stays in the run's scratch dir.

`find_haproxy` installs the Debian package (2.6 on bookworm) when the binary is
missing and we are root; when that fails the caller gets the reason and skips
the HAProxy column.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.children import Child, ChildError, Children

INSTALL_TIMEOUT_S = 300.0
LISTEN_TIMEOUT_S = 10.0
READY_LINE = "tidepool haproxy ready"
MAXCONN = 4096
"""Like nginx's worker_connections; HAProxy raises its fd limit to about 2 per
connection, and a container's hard limit (20,000 here) refuses 10,000."""
TIMEOUT_S = 300
"""Client, server and keep-alive timeouts: longer than any run, so no connection is
closed mid-run and counted as the proxy's latency."""


def find_haproxy(install: bool = True) -> tuple[str | None, str]:
    """The haproxy binary and how it was found, or None and why not (blocking: run in a thread)."""
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)),
        None,
    )
    if found:
        return found, f"found at {found} ({_version(found)})"
    if not install:
        return None, "haproxy is not installed"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "haproxy is not installed and apt-get cannot be run here (needs root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "haproxy"]):
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, env=env,
                check=False,
            )  # fmt: skip
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
                return None, f"`{shlex.join(argv)}` failed: {tail[0]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"installing haproxy failed: {exc}"
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(found, os.X_OK):
        return None, "not found after apt-get install"
    return found, f"installed with apt-get ({_version(found)})"


def _version(binary: str) -> str:
    try:
        done = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "version unknown"
    first = done.stdout.strip().splitlines()[:1]
    return first[0].split(" - ")[0] if first else "version unknown"


def haproxy_config(work: Path, listen: str, upstreams: Sequence[tuple[str, int]]) -> str:
    """A complete haproxy.cfg: h2c on `listen`, h2c to a weighted round-robin backend."""
    servers = "\n".join(
        f"    server engine{i} {address} proto h2 weight {weight}"
        for i, (address, weight) in enumerate(upstreams)
    )
    return f"""\
global
    nbthread 1
    maxconn {MAXCONN}
    pidfile {work}/haproxy.pid

defaults
    mode http
    timeout connect 5s
    timeout client {TIMEOUT_S}s
    timeout server {TIMEOUT_S}s
    timeout http-keep-alive {TIMEOUT_S}s

frontend grpc
    bind {listen} proto h2
    default_backend engines

backend engines
    balance roundrobin
    http-reuse always
{servers}
"""


@dataclass
class HAProxy:
    """A running HAProxy (one process, one thread) and its address."""

    child: Child
    address: str

    def pids(self) -> list[int]:
        return [self.child.pid]


async def start_haproxy(
    children: Children,
    binary: str,
    work: Path,
    listen: str,
    upstreams: Sequence[tuple[str, int]],
) -> HAProxy:
    """Write the config, check it, run haproxy in the foreground, wait for its port."""
    prefix = work / "haproxy"
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "haproxy.cfg"
    conf.write_text(haproxy_config(prefix, listen, upstreams))
    haproxy = " ".join(shlex.quote(word) for word in (binary, "-f", str(conf)))
    # As for nginx: a shell checks the config, prints the ready line and becomes
    # haproxy (`-db`: foreground, no daemon; exec keeps the pid for signals).
    script = f"{haproxy} -c -q && echo '{READY_LINE} pid='$$ && exec {haproxy} -db"
    log = children.log_dir / "haproxy.log"
    try:
        child = await children.start("haproxy", ["sh", "-c", script], ready_timeout_s=30.0)
    except ChildError as exc:  # `haproxy -c` says why on stderr, which went to the log
        raise ChildError(f"{exc}: {_tail(log)}") from None
    host, port = listen.rsplit(":", 1)
    try:
        async with asyncio.timeout(LISTEN_TIMEOUT_S):
            while True:
                if not child.running:
                    raise ChildError(f"haproxy exited: {_tail(log)}")
                try:
                    _, writer = await asyncio.open_connection(host, int(port))
                except OSError:
                    await asyncio.sleep(0.05)  # polling a port with a deadline, not a wait
                    continue
                writer.close()
                await writer.wait_closed()
                break
    except TimeoutError:
        raise ChildError(f"haproxy did not listen on {listen}: {_tail(log)}") from None
    return HAProxy(child, listen)


def _tail(path: Path) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-3:]) or "no log"
    except OSError:
        return "no log"
