"""Where a compiled router spends its time: Linux `perf` samples of one worker under load.

py-spy sees Python frames only, and the compiled data path (mypyc, `router.relay.build`)
has none: every sample of it lands in `Runner.run`. perf samples the process from the
kernel, C frames included, so the compiled functions (`CPyDef_<module>___<function>`),
the interpreter they call into, uvloop and the kernel's share each show by name.
Own time is the leaf frame's; total time follows DWARF call chains (the interpreter has
no frame pointers), so a function's total includes what it calls.

    .venv/bin/python -m loadtest.router_capacity --profile-perf --data-paths relay
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from loadtest.report import say
from loadtest.router_fleet import RouterProc

TOP_FUNCTIONS = 20
FREQUENCY_HZ = 999
"""Samples per second of CPU the router uses (an odd rate: never in step with a timer)."""
AREAS = (
    ("kernel (syscalls, TCP over loopback, scheduling)", ("[kernel",)),
    ("compiled data path (mypyc)", ("_native__mypyc",)),
    ("interpreter (libpython: objects, dicts, calls)", ("libpython",)),
    ("event loop (uvloop)", ("uvloop", "loop.cpython")),
    ("C library", ("libc.so", "libm.so")),
)
_ROW = re.compile(r"^\s*([\d.]+)%\s+(?:([\d.]+)%\s+)?(\S+)\s+\[[.k]\]\s+(.+?)\s*$")


def perf() -> str | None:
    return shutil.which("perf")


def parse_report(text: str) -> list[tuple[float, float | None, str, str]]:
    """`perf report --stdio --sort dso,sym -g none` rows: (self or children %, self % when
    children are shown, dso, symbol)."""
    rows = []
    for line in text.splitlines():
        match = _ROW.match(line)
        if match:
            first, second, dso, symbol = match.groups()
            rows.append((float(first), float(second) if second else None, dso, symbol))
    return rows


def area_shares(own: list[tuple[float, float | None, str, str]]) -> dict[str, float]:
    """Own time summed by where its leaf frame's code lives."""
    shares: dict[str, float] = {}
    for percent, _, dso, _symbol in own:
        name = next((n for n, keys in AREAS if any(k in dso for k in keys)), "other")
        shares[name] = shares.get(name, 0.0) + percent / 100
    return {k: round(v, 4) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}


async def _run(*argv: str, timeout_s: float) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode or 0, out.decode(errors="replace")


async def profile_perf(
    router: RouterProc, seconds: float, out: Path, load: Callable[[], Awaitable[object]]
) -> dict[str, Any] | None:
    """Sample `router`'s last worker with perf while `load` runs; None if perf cannot."""
    binary = perf()
    if binary is None:
        say("profile: perf is not installed (Debian: linux-perf)")
        return None
    record = [binary, "record", "-F", str(FREQUENCY_HZ), "--call-graph", "dwarf,16384"]
    record += ["-p", str(router.pids[-1]), "-o", str(out), "--", "sleep", str(int(seconds))]
    recording = asyncio.ensure_future(_run(*record, timeout_s=seconds + 60))
    await asyncio.sleep(1.0)  # let it attach before the load starts
    if not recording.done():
        await load()
    code, said = await recording
    if code != 0 or not await asyncio.to_thread(out.exists):
        say(f"profile: perf record failed ({code}): {said[-300:].strip()}")
        return None
    report = [binary, "report", "-i", str(out), "--stdio", "-g", "none", "--sort", "dso,sym"]
    _, own_text = await _run(*report, "--no-children", timeout_s=300)
    _, total_text = await _run(*report, "--children", timeout_s=300)
    own = parse_report(own_text)
    if not own:
        say("profile: perf recorded no samples of the router")
        return None
    total = {(dso, sym): first for first, _, dso, sym in parse_report(total_text)}
    samples = re.search(r"^# Samples: (\S+)", own_text, re.MULTILINE)
    rows = [
        {"function": f"{sym} ({dso})", "own": pct / 100, "total": total.get((dso, sym), pct) / 100}
        for pct, _, dso, sym in own[:TOP_FUNCTIONS]
    ]
    count = samples.group(1) if samples else "?"
    shares = area_shares(own)
    return {"tool": "perf", "unit": "samples", "count": count, "top": rows, "areas": shares}
