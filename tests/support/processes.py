"""Run tidepool processes in tests: start, wait for the ready line, stop, always clean up.

Every tidepool server prints one line once serving, e.g.
``tidepool engine-stub ready grpc=127.0.0.1:4321 http=127.0.0.1:4322 id=e-1``.
`start_process` waits for it (bounded) and parses its key=value fields. The
supervisor is `tidepool.runtime.children`, the one every tidepool parent uses;
what this harness adds is keeping all of both streams for failure messages
(`describe`) and for assertions on what a process logged. `ProcessSet` stops
whatever is left at the end of a test, pass or fail.

Children start in our session and without the orphan guard: tests start
processes from executor threads (`asyncio.to_thread`), and the guard's signal
follows the thread that started a child, not the process.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from tidepool.runtime.children import ChildError, start_child

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
    """Every line of one stream, appended by the supervisor's reader thread."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def add(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)

    def text(self) -> str:
        with self._lock:
            return "\n".join(self._lines)


class RunningProcess:
    """A child process with its output captured; `fields` come from its ready line."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], cwd: str | Path | None) -> None:
        self.args = list(args)
        self._stdout = _Lines()
        self._stderr = _Lines()
        self.child = start_child(
            Path(self.args[0]).name,
            self.args,
            on_stdout=self._stdout.add,
            on_stderr=self._stderr.add,
            env=env,
            cwd=cwd,
            new_session=False,
            orphan_guard=False,
        )

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        return self.child.popen

    @property
    def fields(self) -> dict[str, str]:
        return self.child.fields

    @property
    def ready_line(self) -> str:
        return self.child.ready_line

    @property
    def grpc(self) -> str:
        return self._field("grpc")

    @property
    def http(self) -> str:
        return self._field("http")

    @property
    def returncode(self) -> int | None:
        return self.child.returncode

    def stdout(self) -> str:
        return self._stdout.text()

    def stderr(self) -> str:
        return self._stderr.text()

    def wait_ready(self, ready_prefix: str, timeout_s: float) -> str:
        """Wait for a stdout line starting with `ready_prefix`; parse its key=value fields.

        On failure the process is stopped and ProcessError carries its output.
        """
        try:
            self.child.wait_ready(timeout_s, lambda line: line.startswith(ready_prefix))
        except ChildError as exc:
            raise ProcessError(self.describe(f"{exc.reason} (no {ready_prefix!r} line)")) from None
        return self.child.ready_line

    def wait(self, timeout_s: float) -> int:
        """Wait for exit; ProcessError (after SIGKILL) when it takes longer than `timeout_s`."""
        code = self.child.wait(timeout_s)
        if code is None:
            self.kill()
            raise ProcessError(self.describe(f"still running after {timeout_s}s"))
        return code

    def terminate(self) -> None:
        """SIGTERM (graceful stop)."""
        self.child.signal(signal.SIGTERM)

    def interrupt(self) -> None:
        """SIGINT (Ctrl-C)."""
        self.child.signal(signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, like kill -9."""
        self.child.kill()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; the exit status."""
        return self.child.stop(timeout_s)

    def describe(self, problem: str) -> str:
        """A failure message with the command, exit status and the tail of both streams."""
        return (
            f"{problem}\ncommand: {' '.join(self.args)}\nexit status: {self.returncode}\n"
            f"--- stdout (tail) ---\n{_tail(self.stdout())}\n"
            f"--- stderr (tail) ---\n{_tail(self.stderr())}"
        )

    def _field(self, name: str) -> str:
        if name not in self.fields:
            raise ProcessError(self.describe(f"ready line has no {name}= field"))
        return self.fields[name]


def _tail(text: str) -> str:
    return "\n".join(text.splitlines()[-TAIL_LINES:]) or "(empty)"


def spawn(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> RunningProcess:
    """Start a process without waiting for anything (for ones expected to fail fast)."""
    return RunningProcess(
        args, env if env is not None else child_env(), cwd if cwd is not None else REPO_ROOT
    )


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
