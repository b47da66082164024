"""The child supervisor (`tidepool.runtime.children`) on real processes and real signals.

The children are small Python scripts that print a ready line, write to both
streams, ignore SIGTERM, or exit early, so each behaviour the three users of
the supervisor rely on (`up`, the benchmarks, the test harness) is seen from
outside: the ready fields, the output sinks, the stop with grace then SIGKILL,
the errors, and the orphan guard after the parent is killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import threading
import time

import pytest

from tests.support.processes import child_env, wait_until
from tidepool.runtime.children import (
    ORPHAN_GUARD,
    Child,
    ChildError,
    first_exit_async,
    ready_all_async,
    start_child,
)

SERVE = """
import signal, sys, time
print("early words", flush=True)
print("starting", file=sys.stderr, flush=True)
print("demo child ready grpc=127.0.0.1:1 note=a=b", flush=True)
while True:
    time.sleep(1)
"""
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("demo stubborn ready", flush=True)
while True:
    time.sleep(1)
"""
FAILS = """
import sys
print("cannot open the model", flush=True)
sys.exit(3)
"""
SILENT = """
import time
while True:
    time.sleep(1)
"""


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


class _Collect:
    """A line sink that keeps what it is given (the supervisor calls it from a thread)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)


def test_ready_line_fields_and_both_streams_reach_their_sinks() -> None:
    out, err = _Collect(), _Collect()
    child = start_child("demo", _python(SERVE), on_stdout=out, on_stderr=err)
    try:
        fields = child.wait_ready(10.0)
        assert fields == {"grpc": "127.0.0.1:1", "note": "a=b"}
        assert child.ready_line.startswith("demo child ready")
        assert child.running
    finally:
        code = child.stop(5.0)
    assert code == -signal.SIGTERM
    assert out.lines[:2] == ["early words", child.ready_line]
    assert err.lines == ["starting"]


def test_stop_kills_a_child_that_ignores_sigterm_after_the_grace() -> None:
    child = start_child("stubborn", _python(STUBBORN))
    child.wait_ready(10.0)
    started = time.monotonic()
    assert child.stop(0.5) == -signal.SIGKILL
    assert time.monotonic() - started >= 0.5
    assert not child.running


def test_an_early_exit_names_the_child_its_status_and_its_last_words() -> None:
    child = start_child("model-server", _python(FAILS))
    with pytest.raises(ChildError) as failed:
        child.wait_ready(10.0)
    assert failed.value.reason == "model-server exited with status 3 before it was ready"
    assert "cannot open the model" in str(failed.value)


def test_a_silent_child_times_out_and_is_stopped() -> None:
    child = start_child("silent", _python(SILENT))
    with pytest.raises(ChildError, match=r"silent was not ready within 0.5s"):
        child.wait_ready(0.5)
    assert child.returncode == -signal.SIGTERM


def test_a_custom_ready_test_skips_other_ready_lines() -> None:
    child = start_child("demo", _python(SERVE))
    try:
        child.wait_ready(10.0, lambda line: line.startswith("early"))
        assert child.ready_line == "early words"
    finally:
        child.stop(5.0)


async def test_async_start_of_many_and_the_first_exit_is_reported() -> None:
    children = [start_child(f"demo-{i}", _python(SERVE)) for i in range(2)]
    try:
        await ready_all_async(children, 10.0)
        stop = asyncio.Event()
        waiting = asyncio.create_task(first_exit_async(children, stop))
        children[1].signal(signal.SIGTERM)
        assert await asyncio.wait_for(waiting, 10.0) is children[1]
        assert children[0].running
    finally:
        codes = await asyncio.gather(*(c.stop_async(5.0) for c in children))
    assert codes == [-signal.SIGTERM, -signal.SIGTERM]


async def test_first_exit_returns_none_when_asked_to_stop() -> None:
    child = start_child("demo", _python(SERVE))
    try:
        await child.wait_ready_async(10.0)
        stop = asyncio.Event()
        stop.set()
        assert await first_exit_async([child], stop) is None
    finally:
        await child.stop_async(5.0)


async def test_one_failed_start_stops_every_sibling() -> None:
    good = start_child("good", _python(SERVE))
    bad = start_child("bad", _python(FAILS))
    with pytest.raises(ChildError, match="bad exited with status 3"):
        await ready_all_async([good, bad], 10.0, stop_grace_s=5.0)
    assert not good.running


async def test_a_cancelled_ready_wait_stops_the_child() -> None:
    child = start_child("silent", _python(SILENT))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):  # cancels the wait, as Ctrl-C in a benchmark does
            await child.wait_ready_async(30.0)
    assert await child.wait_async(5.0) == -signal.SIGTERM


PARENT = """
import sys, time
from tidepool.runtime.children import start_child
child = start_child("grandchild", [sys.executable, "-c", {serve!r}])
child.wait_ready(10.0)
print("demo parent ready child=" + str(child.pid), flush=True)
while True:
    time.sleep(1)
"""


@pytest.mark.skipif(not ORPHAN_GUARD, reason="setpriv (util-linux) is not installed")
def test_a_child_gets_sigterm_when_its_parent_is_killed() -> None:
    parent: Child = start_child("parent", _python(PARENT.format(serve=SERVE)), env=child_env())
    grandchild = 0
    try:
        grandchild = int(parent.wait_ready(20.0)["child"])
        assert parent.kill() == -signal.SIGKILL
        wait_until(lambda: _gone(grandchild), 10.0, f"pid {grandchild} outlived its parent")
    finally:
        parent.stop(1.0)
        if grandchild and not _gone(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def _gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie waiting for init to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
