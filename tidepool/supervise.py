"""Child processes for `tidepool up`: start, wait for the ready line, stop politely then firmly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from tidepool.runtime.children import tidepool_argv

READY_WORD = "ready"


class ChildError(Exception):
    """A child exited or stayed silent instead of announcing it was ready."""


@dataclass
class Child:
    """One running tidepool process and the fields of its ready line."""

    name: str
    process: asyncio.subprocess.Process
    fields: dict[str, str] = field(default_factory=dict)
    _pump: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def stop(self, timeout_s: float) -> int:
        """SIGTERM, wait up to `timeout_s` (engines drain meanwhile), then SIGKILL."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self._pump is not None:
            await asyncio.gather(self._pump, return_exceptions=True)
        return self.process.returncode or 0


async def _pump_output(child: Child, stream: asyncio.StreamReader) -> None:
    """Relay the child's later stdout lines, prefixed with its name."""
    while line := await stream.readline():
        sys.stdout.write(f"[{child.name}] {line.decode(errors='replace')}")
        sys.stdout.flush()


async def start_child(name: str, argv: Sequence[str], ready_timeout_s: float) -> Child:
    """Start `python -m tidepool ARGV…` and wait for its `tidepool … ready k=v…` line."""
    process = await asyncio.create_subprocess_exec(
        *tidepool_argv(argv),
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        # Own session: Ctrl-C reaches only `up`, which then stops engines before the
        # registry, so engines can drain and deregister while it still answers.
        start_new_session=True,
    )
    child = Child(name, process)
    assert process.stdout is not None
    try:
        while True:
            line = await asyncio.wait_for(process.stdout.readline(), ready_timeout_s)
            if not line:
                code = await process.wait()
                raise ChildError(f"{name} exited with code {code} before it was ready")
            words = line.decode(errors="replace").split()
            if len(words) > 2 and words[0] == "tidepool" and words[2] == READY_WORD:
                child.fields = dict(w.split("=", 1) for w in words[3:] if "=" in w)
                break
    except TimeoutError:
        await child.stop(2.0)
        raise ChildError(f"{name} was not ready within {ready_timeout_s}s") from None
    child._pump = asyncio.create_task(_pump_output(child, process.stdout))
    return child


async def start_children(
    named_argvs: Sequence[tuple[str, Sequence[str]]], ready_timeout_s: float, stop_timeout_s: float
) -> list[Child]:
    """Start all at once and wait for each; if any fails, stop the others and raise ChildError."""
    results = await asyncio.gather(
        *(start_child(name, argv, ready_timeout_s) for name, argv in named_argvs),
        return_exceptions=True,
    )
    children = [r for r in results if isinstance(r, Child)]
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        await asyncio.gather(*(c.stop(stop_timeout_s) for c in children))
        raise ChildError(str(failures[0]))
    return children


def stop_event() -> asyncio.Event:
    """An event SIGINT and SIGTERM set (call inside the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def until_stopped_or_exited(stop: asyncio.Event, children: Sequence[Child]) -> Child | None:
    """Wait for `stop` or for a child to exit; the child that exited first, or None."""
    waiters = [asyncio.ensure_future(stop.wait())]
    exits = {asyncio.ensure_future(c.process.wait()): c for c in children}
    try:
        done, _ = await asyncio.wait({*waiters, *exits}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (*waiters, *exits):
            task.cancel()
    exited = [exits[t] for t in done if t in exits]
    return exited[0] if exited else None
