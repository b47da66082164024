"""The one child-process supervisor: start, wait for the ready line, stream output, stop.

`tidepool up`, the router group, the benchmarks and the test harness all start
tidepool processes the same way through `start_child`: behind the orphan guard,
with stdout (and stderr, unless it is inherited) read line by line into a sink,
then wait for the child's ready line (`<program> <component> ready k=v…`, the
words become `fields`), and at the end stop it with SIGTERM, then SIGKILL after
a grace period.

Why threads and not asyncio's subprocess support: the test harness is
synchronous and `up` and the benchmarks run an event loop, and one supervisor
must serve both. Daemon threads read the pipes (a chatty child never blocks on
a full pipe) and wait for the exit; `Latch` hands their news to a blocking
caller or to an event loop alike, so each waiting method comes as a plain one
(`wait_ready`, `wait`, `stop`) and an `_async` one.

The orphan guard: a child runs in its own session (Ctrl-C reaches only the
parent, which stops children in order), so a parent killed with SIGKILL would
leave it running. `setpriv --pdeathsig TERM` (util-linux, on every Debian) asks
the kernel to send the child SIGTERM when its parent dies: an engine then
drains and deregisters as on any stop. The kernel tracks the *thread* that
started the child, so start guarded children from a thread that lives as long
as they should (the main thread, or the event loop's). Where setpriv is
missing, children start without the guard.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TextIO

from tidepool.runtime.latch import Latch

ORPHAN_GUARD: tuple[str, ...] = (
    ("setpriv", "--pdeathsig", "TERM") if shutil.which("setpriv") else ()
)
TIDEPOOL: tuple[str, ...] = (sys.executable, "-m", "tidepool")
"""The `tidepool` command under this interpreter."""
STOP_GRACE_S = 5.0
"""SIGTERM to SIGKILL, unless the caller says otherwise (engines need their drain time)."""
FAILED_START_GRACE_S = 1.0
"""Grace for a child that never became ready: it is not serving anything worth draining."""
PIPE_DRAIN_S = 2.0
"""How long to wait, after the exit, for the rest of the output (a grandchild may hold the pipe)."""
TAIL_LINES = 40
EARLY_LINES_MAX = 100_000
"""Stdout lines kept for a ready-line search that has not run yet (then only the tail)."""

LineSink = Callable[[str], None]
ReadyTest = Callable[[str], bool]


class ChildError(Exception):
    """A child exited or stayed silent instead of announcing it was ready.

    `reason` says what happened and names the child; the message adds the last
    lines it wrote, when there are any.
    """

    def __init__(self, reason: str, *, name: str = "", output_tail: str = "") -> None:
        self.reason = reason
        self.name = name
        self.output_tail = output_tail
        tail = f"\n--- last output of {name} ---\n{output_tail}" if output_tail else ""
        super().__init__(reason + tail)


def tidepool_argv(args: Sequence[str]) -> list[str]:
    """`python -m tidepool ARGS…` behind the orphan guard."""
    return [*ORPHAN_GUARD, *TIDEPOOL, *args]


def is_ready_line(line: str) -> bool:
    """`<program> <component> ready k=v…`, the line every tidepool process prints once serving."""
    words = line.split(maxsplit=3)
    return len(words) >= 3 and words[2] == "ready"


def parse_fields(line: str) -> dict[str, str]:
    """The key=value words of a ready line."""
    return dict(word.split("=", 1) for word in line.split() if "=" in word)


class _Output:
    """What the child wrote to stdout: the tail, and the early lines a ready search reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.early: list[str] | None = []
        self.closed = False
        self.changed = Latch()
        """Replaced on every line and at the end: a waiter takes the current one, then waits."""

    def add(self, line: str) -> None:
        with self._lock:
            self.tail.append(line)
            if self.early is not None and len(self.early) < EARLY_LINES_MAX:
                self.early.append(line)
            changed, self.changed = self.changed, Latch()
        changed.set()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            changed = self.changed
        changed.set()

    def search(self, ready: ReadyTest, start: int) -> tuple[str | None, int, bool, Latch]:
        """(the first early line from `start` that passes `ready`, where to go on next time,
        whether stdout ended, the latch of the next change)."""
        with self._lock:
            early = self.early or []
            found = next((line for line in early[start:] if ready(line)), None)
            if found is not None:
                self.early = None  # found: keep only the tail from now on
            return found, len(early), self.closed, self.changed


class Child:
    """One started process: its ready-line fields, its output tail, waiting and stopping."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        popen: subprocess.Popen[bytes],
        on_stdout: LineSink | None,
        on_stderr: LineSink | None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.popen = popen
        self.fields: dict[str, str] = {}
        self.ready_line = ""
        self._stdout = _Output()
        self._exited = Latch()
        self._readers: list[tuple[threading.Thread, Latch]] = []
        self._read(popen.stdout, self._stdout_line(on_stdout), self._stdout.close)
        if on_stderr is not None:
            self._read(popen.stderr, on_stderr, lambda: None)
        threading.Thread(target=self._await_exit, name=f"{name}-exit", daemon=True).start()

    def _stdout_line(self, sink: LineSink | None) -> LineSink:
        def line(text: str) -> None:
            self._stdout.add(text)
            if sink is not None:
                sink(text)

        return line

    def _read(self, stream: IO[bytes] | None, sink: LineSink, at_end: Callable[[], None]) -> None:
        assert stream is not None
        done = Latch()

        def pump() -> None:
            try:
                for raw in iter(stream.readline, b""):
                    with contextlib.suppress(Exception):  # a failing sink must not stall the pipe
                        sink(raw.decode(errors="replace").rstrip("\r\n"))
            finally:
                stream.close()  # here, not by another thread: closing under a read can hang
                at_end()
                done.set()

        thread = threading.Thread(target=pump, name=f"{self.name}-output", daemon=True)
        thread.start()
        self._readers.append((thread, done))

    def _await_exit(self) -> None:
        self.popen.wait()
        self._exited.set()

    # ---- state ---------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: the signal that ended it); None while it runs."""
        return self.popen.returncode if self._exited.is_set() else None

    @property
    def running(self) -> bool:
        return not self._exited.is_set()

    def output_tail(self) -> str:
        """The last stdout lines (stderr goes to its sink, or was inherited)."""
        return "\n".join(self._stdout.tail)

    def signal(self, signum: int) -> None:
        """Send `signum` unless it has exited (so never to a pid reused by another process)."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    # ---- the ready line ------------------------------------------------------

    def _ready_step(self, ready: ReadyTest, cursor: list[int]) -> Latch | None:
        """None once ready; raise once it cannot be; else the latch to wait on.

        `cursor` holds how many early lines this search has read already.
        """
        if self.ready_line and ready(self.ready_line):
            return None
        found, cursor[0], closed, changed = self._stdout.search(ready, cursor[0])
        if found is not None:
            self.ready_line, self.fields = found, parse_fields(found)
            return None
        if closed:
            self._exited.wait(PIPE_DRAIN_S)
            code = self.returncode
            raise self._error(f"{self.name} exited with status {code} before it was ready")
        return changed

    def _error(self, reason: str) -> ChildError:
        return ChildError(reason, name=self.name, output_tail=self.output_tail())

    def wait_ready(self, timeout_s: float, ready: ReadyTest = is_ready_line) -> dict[str, str]:
        """Block until a stdout line passes `ready`: its fields; else stop it, raise ChildError."""
        deadline, cursor = _now() + timeout_s, [0]
        try:
            while (changed := self._ready_step(ready, cursor)) is not None:
                if not changed.wait(max(0.0, deadline - _now())) and _now() >= deadline:
                    raise self._error(f"{self.name} was not ready within {timeout_s:g}s")
        except BaseException:
            self.stop(FAILED_START_GRACE_S)
            raise
        return self.fields

    async def wait_ready_async(
        self, timeout_s: float, ready: ReadyTest = is_ready_line
    ) -> dict[str, str]:
        """`wait_ready` for the event loop; also stops the child when the wait is cancelled."""
        deadline, cursor = _now() + timeout_s, [0]
        try:
            while (changed := self._ready_step(ready, cursor)) is not None:
                remaining = max(0.0, deadline - _now())
                if not await changed.wait_async(remaining) and _now() >= deadline:
                    raise self._error(f"{self.name} was not ready within {timeout_s:g}s")
        except BaseException:
            await self.stop_async(FAILED_START_GRACE_S)
            raise
        return self.fields

    # ---- exit and stop -------------------------------------------------------

    def wait(self, timeout_s: float | None = None) -> int | None:
        """The exit status, or None if it still runs after `timeout_s`."""
        if not self._exited.wait(timeout_s):
            return None
        self._drain_output()
        return self.returncode

    async def wait_async(self, timeout_s: float | None = None) -> int | None:
        if not await self._exited.wait_async(timeout_s):
            return None
        for _, done in self._readers:
            await done.wait_async(PIPE_DRAIN_S)
        return self.returncode

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """SIGTERM (and SIGCONT, should it be stopped), SIGKILL after `grace_s`; the status."""
        self._terminate()
        if not self._exited.wait(grace_s):
            self.signal(signal.SIGKILL)
        code = self.wait()
        assert code is not None
        return code

    async def stop_async(self, grace_s: float = STOP_GRACE_S) -> int:
        self._terminate()
        if not await self._exited.wait_async(grace_s):
            self.signal(signal.SIGKILL)
        code = await self.wait_async()
        assert code is not None
        return code

    def kill(self) -> int:
        """SIGKILL, like kill -9: no clean-up at all; the status."""
        self.signal(signal.SIGKILL)
        code = self.wait()
        assert code is not None
        return code

    def _terminate(self) -> None:
        self.signal(signal.SIGTERM)
        self.signal(signal.SIGCONT)

    def _drain_output(self) -> None:
        for thread, _ in self._readers:
            thread.join(PIPE_DRAIN_S)


def start_child(
    name: str,
    argv: Sequence[str],
    *,
    on_stdout: LineSink | None = None,
    on_stderr: LineSink | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    new_session: bool = True,
    orphan_guard: bool = True,
) -> Child:
    """Start `argv` without waiting: stdout lines go to `on_stdout` (and the ready search).

    `on_stderr` None: the child writes to our stderr directly. `new_session`: Ctrl-C
    at the terminal reaches only us, and we stop children in order.
    """
    popen = subprocess.Popen(
        [*(ORPHAN_GUARD if orphan_guard else ()), *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if on_stderr is not None else None,
        env=dict(env) if env is not None else None,
        cwd=str(cwd) if cwd is not None else None,
        start_new_session=new_session,
    )
    return Child(name, argv, popen, on_stdout, on_stderr)


async def ready_all_async(
    children: Sequence[Child], ready_timeout_s: float, stop_grace_s: float = STOP_GRACE_S
) -> None:
    """Wait for every child's ready line at once; if one fails, stop them all and raise."""
    results = await asyncio.gather(
        *(child.wait_ready_async(ready_timeout_s) for child in children), return_exceptions=True
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        await asyncio.gather(*(child.stop_async(stop_grace_s) for child in children))
        raise failures[0]


async def first_exit_async(children: Sequence[Child], stop: asyncio.Event) -> Child | None:
    """Wait for `stop` or for a child to exit: the child that exited first, or None."""
    exits = {asyncio.ensure_future(child.wait_async()): child for child in children}
    stopped = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({stopped, *exits}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stopped, *exits):
            task.cancel()
        await asyncio.gather(stopped, *exits, return_exceptions=True)
    exited = [exits[task] for task in done if task in exits]
    return exited[0] if exited else None


def prefixed(name: str, out: TextIO | None = None) -> LineSink:
    """A sink that relays a child's lines to `out` (our stdout) as `[name] line`.

    Ready lines are left out: the parent reports what they say in its own words.
    """
    lock = threading.Lock()

    def relay(line: str) -> None:
        if is_ready_line(line):
            return
        stream = out if out is not None else sys.stdout
        with lock:
            stream.write(f"[{name}] {line}\n")
            stream.flush()

    return relay


def _now() -> float:
    return time.monotonic()
