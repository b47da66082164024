"""nginx `grpc_pass` in front of the same engines: the yardstick for the router's CPU cost.

Why nginx: it is the proxy an operator would otherwise put there, written in C,
so "router CPU per request / nginx CPU per request" says how far a Python data
path is from the usual floor. One worker process (a core's worth, like one
router process), a weighted upstream with kept-alive connections, loopback only.
Everything nginx writes (pid, logs, temp files) stays in the run's scratch dir.

`find_nginx` installs the Debian package when the binary is missing and we are
root; when that fails the caller gets the reason and skips the nginx column.
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
READY_LINE = "tidepool nginx ready"
MANY = 1_000_000_000
"""Requests per connection before nginx closes it (its default, 1000, would make the
generator reconnect mid-run and count the reconnects as the proxy's latency)."""


def find_nginx(install: bool = True) -> tuple[str | None, str]:
    """The nginx binary and how it was found, or None and why not (blocking: run in a thread)."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found:
        return found, f"found at {found}"
    if not install:
        return None, "nginx is not installed"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "nginx is not installed and apt-get cannot be run here (needs root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "nginx"]):
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
                env=env,
                check=False,
            )
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
                return None, f"`{shlex.join(argv)}` failed: {tail[0]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"installing nginx failed: {exc}"
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    return (found, "installed with apt-get") if os.access(found, os.X_OK) else (None, "not found")


def nginx_config(
    work: Path, listen: str, upstreams: Sequence[tuple[str, int]], workers: int = 1
) -> str:
    """A complete nginx.conf: HTTP/2 cleartext on `listen`, grpc_pass to a weighted upstream."""
    servers = "\n".join(
        f"        server {address} weight={weight};" for address, weight in upstreams
    )
    return f"""\
worker_processes {workers};
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    keepalive_requests {MANY};
    keepalive_timeout 300s;
    upstream engines {{
{servers}
        keepalive 64;
        keepalive_requests {MANY};
    }}
    server {{
        listen {listen} http2;
        location / {{
            grpc_pass grpc://engines;
            grpc_read_timeout 30s;
        }}
    }}
}}
"""


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants (nginx's master forks its workers), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


@dataclass
class Nginx:
    """A running nginx: its address and its master (stopping it stops the workers)."""

    child: Child
    address: str

    def pids(self) -> list[int]:
        return process_tree(self.child.pid)


async def start_nginx(
    children: Children,
    binary: str,
    work: Path,
    listen: str,
    upstreams: Sequence[tuple[str, int]],
    workers: int = 1,
) -> Nginx:
    """Write the config, check it, run nginx in the foreground, wait for its port."""
    prefix = work / "nginx"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, listen, upstreams, workers))
    nginx = " ".join(
        shlex.quote(word)
        for word in (binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"))
    )
    # Children wait for a ready line; nginx prints none, so a shell checks the config,
    # prints one and becomes nginx (exec keeps the pid, so signals reach nginx itself).
    script = f"{nginx} -t -q && echo '{READY_LINE} pid='$$ && exec {nginx} -g 'daemon off;'"
    try:
        child = await children.start("nginx", ["sh", "-c", script], ready_timeout_s=30.0)
    except ChildError as exc:  # `nginx -t` says why on stderr, which went to the log
        raise ChildError(f"{exc}: {_tail(children.log_dir / 'nginx.log')}") from None
    host, port = listen.rsplit(":", 1)
    try:
        async with asyncio.timeout(LISTEN_TIMEOUT_S):
            while True:
                if not child.running:
                    raise ChildError(f"nginx exited: {_tail(prefix / 'error.log')}")
                try:
                    _, writer = await asyncio.open_connection(host, int(port))
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                await writer.wait_closed()
                break
    except TimeoutError:
        raise ChildError(
            f"nginx did not listen on {listen}: {_tail(prefix / 'error.log')}"
        ) from None
    return Nginx(child, listen)


def _tail(path: Path) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-3:]) or "no log"
    except OSError:
        return "no log"
