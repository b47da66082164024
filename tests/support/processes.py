"""Run tidepool processes in tests: start, wait for the ready line, stop, always clean up.

Every tidepool server prints one line once serving, e.g.
``tidepool engine-stub ready grpc=127.0.0.1:4321 http=127.0.0.1:4322 id=e-1``.
`start_process` waits for it (bounded) and parses its key=value fields. Output
is read by background threads so a chatty process never blocks on a full pipe,
and is kept for failure messages. `ProcessSet` stops whatever is left at the
end of a test, pass or fail.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT_S = 15.0
TAIL_LINES = 40


class ProcessError(AssertionError):
    """A process did not become ready, or misbehaved; the message carries its output."""


def python_args(module_main: str, *args: str) -> list[str]:
    """Command line that runs `<module_main>.main(argv)` under this interpreter.

    ``python_args("engine_stub.server", "--listen", "127.0.0.1:0")``
    """
    code = f"import sys; from {module_main} import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *args]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: ours, the repo importable, unbuffered, plus `extra`."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class _Lines:
    """Collects a stream's lines on a daemon thread; the first ones also go to a queue."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self.queue: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            with self._lock:
                self.lines.append(line.rstrip("\n"))
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)  # end of stream

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def alive(self) -> bool:
        return self._thread.is_alive()


class RunningProcess:
    """A child process with its output captured; `fields` come from its ready line."""

    def __init__(self, args: Sequence[str], popen: subprocess.Popen[str]) -> None:
        self.args = list(args)
        self.popen = popen
        assert popen.stdout is not None
        assert popen.stderr is not None
        self._stdout = _Lines(popen.stdout)
        self._stderr = _Lines(popen.stderr)
        self.ready_line = ""
        self.fields: dict[str, str] = {}

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def grpc(self) -> str:
        return self._field("grpc")

    @property
    def http(self) -> str:
        return self._field("http")

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def stdout(self) -> str:
        return self._stdout.text()

    def stderr(self) -> str:
        return self._stderr.text()

    def wait_ready(self, ready_prefix: str, timeout_s: float) -> str:
        """Wait for a stdout line starting with `ready_prefix`; parse its key=value fields."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise ProcessError(self.describe(f"no {ready_prefix!r} line within {timeout_s}s"))
            try:
                line = self._stdout.queue.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
            if line is None:
                self.wait(timeout_s=5)
                raise ProcessError(self.describe(f"exited before printing {ready_prefix!r}"))
            if line.startswith(ready_prefix):
                self.ready_line = line
                self.fields = parse_fields(line)
                return line

    def wait(self, timeout_s: float) -> int:
        """Wait for exit; ProcessError (after SIGKILL) when it takes longer than `timeout_s`."""
        try:
            code = self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ProcessError(self.describe(f"still running after {timeout_s}s")) from None
        self._finish_output()
        return code

    def terminate(self) -> None:
        """SIGTERM (graceful stop)."""
        self._signal(signal.SIGTERM)

    def interrupt(self) -> None:
        """SIGINT (Ctrl-C)."""
        self._signal(signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, like kill -9."""
        self._signal(signal.SIGKILL)
        self.popen.wait(10)
        self._finish_output()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; the exit status."""
        if self.popen.poll() is None:
            self.terminate()
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._finish_output()
        return self.popen.returncode

    def _finish_output(self) -> None:
        """Read what is left of both streams, then close the pipes (no ResourceWarning)."""
        for lines, stream in ((self._stdout, self.popen.stdout), (self._stderr, self.popen.stderr)):
            lines.join(2)
            if stream is not None and not lines.alive():
                stream.close()

    def describe(self, problem: str) -> str:
        """A failure message with the command, exit status and the tail of both streams."""
        return (
            f"{problem}\ncommand: {' '.join(self.args)}\nexit status: {self.popen.poll()}\n"
            f"--- stdout (tail) ---\n{_tail(self.stdout())}\n"
            f"--- stderr (tail) ---\n{_tail(self.stderr())}"
        )

    def _signal(self, signum: signal.Signals) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signum)
            except ProcessLookupError:
                pass

    def _field(self, name: str) -> str:
        if name not in self.fields:
            raise ProcessError(self.describe(f"ready line has no {name}= field"))
        return self.fields[name]


def parse_fields(line: str) -> dict[str, str]:
    """The key=value words of a ready line."""
    return dict(word.split("=", 1) for word in line.split() if "=" in word)


def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-TAIL_LINES:]) or "(empty)"


def spawn(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> RunningProcess:
    """Start a process without waiting for anything (for ones expected to fail fast)."""
    popen = subprocess.Popen(
        list(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env) if env is not None else child_env(),
        cwd=str(cwd) if cwd is not None else str(REPO_ROOT),
    )
    return RunningProcess(args, popen)


def start_process(
    args: Sequence[str],
    ready_prefix: str,
    timeout_s: float = 30.0,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> RunningProcess:
    """Start a process and wait (at most `timeout_s`) for its ready line."""
    process = spawn(args, env=env, cwd=cwd)
    try:
        process.wait_ready(ready_prefix, timeout_s)
    except BaseException:
        process.stop(timeout_s=2)
        raise
    return process


class ProcessSet:
    """Processes started in one test; `close()` stops all that are still running."""

    def __init__(self) -> None:
        self._processes: list[RunningProcess] = []

    def start(
        self,
        args: Sequence[str],
        ready_prefix: str,
        timeout_s: float = 30.0,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> RunningProcess:
        """Start a process, track it, and wait for its ready line."""
        process = self.spawn(args, env=env, cwd=cwd)
        process.wait_ready(ready_prefix, timeout_s)
        return process

    def spawn(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> RunningProcess:
        """Start a process and track it, without waiting."""
        process = spawn(args, env=env, cwd=cwd)
        self._processes.append(process)
        return process

    def close(self) -> None:
        for process in reversed(self._processes):
            process.stop(timeout_s=5)

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# ---- bounded waiting ---------------------------------------------------------


def wait_until(
    predicate: Callable[[], object],
    timeout_s: float,
    message: str | Callable[[], str],
    interval_s: float = 0.05,
) -> None:
    """Poll `predicate` until it is truthy; fail with `message` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(_message(message, timeout_s))
        time.sleep(interval_s)


async def wait_until_async(
    predicate: Callable[[], object | Awaitable[object]],
    timeout_s: float,
    message: str | Callable[[], str],
    interval_s: float = 0.05,
) -> None:
    """`wait_until` for the event loop; `predicate` may be a plain or an async function."""
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(_message(message, timeout_s))
        await asyncio.sleep(interval_s)


def _message(message: str | Callable[[], str], timeout_s: float) -> str:
    text = message() if callable(message) else message
    return f"timed out after {timeout_s}s: {text}"
