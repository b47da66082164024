"""Running one benchmark: Ctrl-C handling, a scratch directory, child clean-up, the envelope.

`run_benchmark` wraps a benchmark's body so that a signal cancels it once, every
child it started is stopped, and its result carries the command line, the
machine's load average and the settings beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from loadtest.children import Children
from loadtest.report import command_line, loadavg


class StopSignals:
    """Ctrl-C and SIGTERM cancel the main task once, so every `finally` cleans up.

    `check()` raises CancelledError after a signal: loops call it so that a library
    swallowing the one cancellation cannot keep the benchmark running. Later
    signals are ignored, so they cannot cut the clean-up short.
    """

    def __init__(self) -> None:
        self.received: int | None = None

    def install(self, task: asyncio.Task[Any]) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._fire, signum, task)

    def _fire(self, signum: int, task: asyncio.Task[Any]) -> None:
        if self.received is None:
            self.received = signum
            task.cancel()

    def check(self) -> None:
        if self.received is not None:
            raise asyncio.CancelledError


stop_signals = StopSignals()


Body = Callable[[argparse.Namespace, "Children", Path], Awaitable[dict[str, Any]]]


async def run_benchmark(name: str, args: argparse.Namespace, body: Body) -> dict[str, Any]:
    """Run `body` with signal handling, a scratch dir and child cleanup; wrap its result."""
    task = asyncio.current_task()
    assert task is not None
    stop_signals.install(task)
    started_at, t0, load_start = time.time(), time.monotonic(), loadavg()
    work = Path(tempfile.mkdtemp(prefix=f"tidepool-{name}-"))
    log_dir = Path(args.log_dir) if args.log_dir else work
    log_dir.mkdir(parents=True, exist_ok=True)
    children = Children(log_dir)
    try:
        measured = await body(args, children, work)
    finally:
        await children.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": name,
        "command": command_line(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_at)),
        "duration_s": round(time.monotonic() - t0, 1),
        "cpu_count": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "log_dir")},
        **measured,
    }
