"""Where a router spends its time under load: py-spy samples (cProfile if py-spy cannot attach).

py-spy samples the running router from outside (`--nonblocking`: it is never
paused), so what it shows is the router as benchmarked. Samples are ranked by
their leaf frame (own time) and by any frame (total), and the own time is summed
by area: the relay, the rest of the router, prometheus_client, grpc's Python and
C parts, the event loop.
"""

from __future__ import annotations

import asyncio
import pstats
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from loadtest.report import render_table, say
from loadtest.router_fleet import Fleet, RouterProc

TOP_FUNCTIONS = 15
AREAS = (
    ("relay socket writes (uvloop transport.write)", ("Connection.flush (router/relay/",)),
    ("relay (router/relay)", ("router/relay/",)),
    ("hpack: header block coding", ("hpack/",)),
    ("router code, other", ("router/",)),
    ("prometheus_client", ("prometheus_client/",)),
    ("grpc aio, Python part", ("grpc/",)),
    ("grpc poller thread (C core, HTTP/2)", ("threading.py",)),
    ("asyncio transports and streams", ("asyncio/selector_events.py", "asyncio/streams.py")),
    ("event loop: uvloop + grpc Cython", ("asyncio/runners.py", "uvloop/", "runners.py")),
)
"""Where a sample's leaf frame lies, first match wins. Cython and C code has no Python
frame, so py-spy charges it to the nearest Python caller: Runner.run for the loop,
Thread.run for grpc's completion-queue poller thread, the relay's Connection.flush for
the socket write (the send syscall, loopback delivery included) it makes."""

Load = Callable[[], Awaitable[object]]


def py_spy() -> str | None:
    """py-spy next to this interpreter or on PATH; pip-installs it into the venv if missing."""
    here = Path(sys.executable).parent / "py-spy"
    if here.exists() or shutil.which("py-spy"):
        return str(here) if here.exists() else shutil.which("py-spy")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "py-spy"]
    done = subprocess.run(pip, capture_output=True, timeout=300, check=False)
    return str(here) if done.returncode == 0 and here.exists() else None


def area(frame: str) -> str:
    return next((name for name, keys in AREAS if any(k in frame for k in keys)), "other")


def areas(own: Counter[str], samples: int) -> dict[str, float]:
    """Share of samples by the area of their leaf frame."""
    by: Counter[str] = Counter()
    for frame, n in own.items():
        by[area(frame)] += n
    return {name: round(n / max(samples, 1), 4) for name, n in by.most_common()}


def own_and_total(raw: str) -> tuple[Counter[str], Counter[str], int]:
    """From py-spy's collapsed stacks: samples by leaf frame, by any frame, and in all."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        own[frames[-1]] += int(count)
        for frame in set(frames):
            total[frame] += int(count)
        samples += int(count)
    return own, total, samples


async def profile_py_spy(
    router: RouterProc, seconds: float, out: Path, load: Load, native: bool = False
) -> dict[str, Any] | None:
    """Sample `router`'s last worker for `seconds` while `load` runs; None if py-spy fails."""
    binary = await asyncio.to_thread(py_spy)
    if binary is None:
        say("profile: py-spy is not available")
        return None
    argv = [binary, "record", "--pid", str(router.pids[-1]), "--duration", str(int(seconds))]
    argv += ["--rate", "250", "--format", "raw", "--function"]
    # Native unwinding needs the process paused per sample; otherwise never pause it.
    argv += ["--native"] if native else ["--nonblocking"]
    process = await asyncio.create_subprocess_exec(
        *argv, "--output", str(out), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.sleep(1.0)  # let it attach before the load starts
        if process.returncode is None:
            await load()
        _, err = await asyncio.wait_for(process.communicate(), seconds + 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    raw = await asyncio.to_thread(lambda: out.read_text() if out.exists() else None)
    if process.returncode != 0 or raw is None:
        say(f"profile: py-spy failed ({process.returncode}): {err.decode()[-300:].strip()}")
        return None
    own, total, samples = own_and_total(raw)
    rows = [
        {"function": f, "own": n / samples, "total": total[f] / samples}
        for f, n in own.most_common(TOP_FUNCTIONS)
    ]
    shares = areas(own, samples)
    return {"tool": "py-spy", "unit": "samples", "count": samples, "top": rows, "areas": shares}


async def profile_cprofile(
    fleet: Fleet, data_path: str, load: Callable[[RouterProc], Awaitable[object]]
) -> dict[str, Any]:
    """A router started under cProfile (in-process, so it costs the router itself)."""
    out = fleet.work / f"router-{data_path}.prof"
    wrap = ["-m", "cProfile", "-o", str(out)]
    router = await fleet.start_router(f"{data_path}-cprofile", data_path=data_path, wrap=wrap)
    await fleet.wait_routable(router)
    await load(router)
    await fleet.stop(router.child)  # SIGTERM: a clean exit writes the profile
    del fleet.routers[router.name]
    stats = pstats.Stats(str(out))
    entries = getattr(stats, "stats", {})
    grand = sum(v[2] for v in entries.values()) or 1.0
    ranked = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:TOP_FUNCTIONS]

    def label(file: str, line: int, name: str) -> str:
        return f"{name} ({'/'.join(Path(file).parts[-3:])}:{line})"

    rows = [
        {"function": label(*key), "own": v[2] / grand, "total": v[3] / grand} for key, v in ranked
    ]
    own = Counter({label(*key): round(v[2] * 1e6) for key, v in entries.items()})
    calls = int(sum(v[1] for v in entries.values()))
    shares = areas(own, own.total())
    return {"tool": "cProfile", "unit": "calls", "count": calls, "top": rows, "areas": shares}


def profile_lines(name: str, profile: dict[str, Any] | None) -> list[str]:
    """The report of one profile: the top functions, then own time by area."""
    if not profile:
        return []
    rows = [[f"{r['own']:.1%}", f"{r['total']:.1%}", r["function"]] for r in profile["top"]]
    title = (
        f"profile of {name} ({profile['tool']}, {profile['count']} {profile['unit']}): "
        "top by own time"
    )
    shares = [[f"{v:.1%}", k] for k, v in profile["areas"].items()]
    return [
        title, render_table(["own", "total", "function"], rows), "",
        f"{name}: own time by area (leaf frame)", render_table(["share", "area"], shares), "",
    ]  # fmt: skip
