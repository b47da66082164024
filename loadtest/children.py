"""The processes a benchmark starts, each with its output in a log file.

The supervisor is `tidepool.runtime.children` (orphan guard, ready line, stop
with SIGTERM then SIGKILL); what a benchmark adds is a log file per child, kept
in `--log-dir` when asked, and a failure message that quotes the end of it.
Everything here talks to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tidepool.runtime.children import Child as Process
from tidepool.runtime.children import ChildError
from tidepool.runtime.children import start_child as start_process

STOP_TIMEOUT_S = 5.0
LOG_TAIL_CHARS = 2000

__all__ = ["STOP_TIMEOUT_S", "Child", "ChildError", "Children", "registry_argv"]


class _Log:
    """A child's log file; both of its streams write whole lines to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO = path.open("a", encoding="utf-8", errors="replace")
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.write(text + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def tail(self) -> str:
        return self.path.read_text(errors="replace")[-LOG_TAIL_CHARS:]


@dataclass
class Child:
    """One started process, the fields of its `… ready k=v …` line, and its log file."""

    name: str
    process: Process
    log: _Log

    @property
    def log_path(self) -> Path:
        return self.log.path

    @property
    def fields(self) -> dict[str, str]:
        return self.process.fields

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.running

    def signal(self, signum: int) -> None:
        self.process.signal(signum)

    async def wait(self) -> int:
        """Its exit status, once it has exited."""
        code = await self.process.wait_async()
        assert code is not None
        return code

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (and SIGCONT, in case it is stopped), then SIGKILL after `timeout_s`."""
        try:
            return await self.process.stop_async(timeout_s)
        finally:
            self.log.close()


async def start_child(
    name: str, argv: Sequence[str], log_dir: Path, ready_timeout_s: float
) -> Child:
    """Start `argv` and wait for its ready line; both of its streams go to `<name>.log`."""
    log = _Log(log_dir / f"{name}.log")
    process = start_process(name, argv, on_stdout=log.line, on_stderr=log.line)
    try:
        await process.wait_ready_async(ready_timeout_s)
    except ChildError as exc:
        log.close()
        raise ChildError(exc.reason, name=name, output_tail=log.tail()) from None
    except BaseException:
        log.close()
        raise
    return Child(name, process, log)


@dataclass
class Children:
    """Every process a benchmark started; `stop_all` ends them, newest first."""

    log_dir: Path
    started: list[Child] = field(default_factory=list)

    async def start(self, name: str, argv: Sequence[str], ready_timeout_s: float = 30.0) -> Child:
        child = await start_child(name, argv, self.log_dir, ready_timeout_s)
        self.started.append(child)
        return child

    async def stop_all(self) -> None:
        for child in reversed(self.started):
            with contextlib.suppress(Exception):
                await child.stop()
        self.started.clear()


def registry_argv(data_dir: Path, flags: Mapping[str, object]) -> list[str]:
    """`python -m tidepool registry serve` on loopback port 0 with `flags` (name → value)."""
    argv = [sys.executable, "-m", "tidepool", "registry", "serve"]
    argv += ["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
    argv += ["--data-dir", str(data_dir)]
    for name, value in flags.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv
