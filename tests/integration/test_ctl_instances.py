"""`tidepool ctl instances` (filters, `--watch`) and the admin commands, against real processes.

A registry and engine stubs run as processes on 127.0.0.1 (`Fleet`); ctl runs as
a subprocess, as an operator's shell would run it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet_harness import ADMIN_TOKEN, READ_TOKEN, EngineSpec, Fleet, tidepool_args
from tests.support.processes import REPO_ROOT, RunningProcess, child_env, wait_until

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

CTL_TIMEOUT_S = 30.0
WATCH_S = 15.0
INSTANCE_KEYS = [
    "id", "service", "address", "weight", "effective_weight", "capacity", "labels", "state",
    "admin_drained", "load", "last_heartbeat_at",
]  # fmt: skip


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with Fleet(tmp_path) as fleet:
        fleet.start_registry()
        fleet.start_engines(
            EngineSpec("zh-1", pool="zh-public"),
            EngineSpec("en-1", pool="en-public", lang="en", weight=60),
        )
        yield fleet


def _ctl(fleet: Fleet, *args: str, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
    """`tidepool ctl ARGS` with the global flags after the command, bounded."""
    return subprocess.run(
        tidepool_args("ctl", *args, "--registry", fleet.registry_address, "--token", token),
        capture_output=True,
        text=True,
        timeout=CTL_TIMEOUT_S,
        env=child_env(),
        cwd=REPO_ROOT,
        check=False,
    )


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    assert done.stderr == ""
    return done.stdout


def _table(text: str) -> dict[str, dict[str, str]]:
    """Rows by id from a table whose first non-legend line is the header."""
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    headers = lines[0].split()
    return {line.split()[0]: dict(zip(headers, line.split(), strict=True)) for line in lines[1:]}


def test_listing_has_the_legend_age_and_filters(fleet: Fleet) -> None:
    text = _ok(_ctl(fleet, "instances", token=READ_TOKEN))
    assert text.startswith("# WEIGHT effective/registered")
    rows = _table(text)
    assert set(rows) == {"zh-1", "en-1"}
    assert rows["en-1"]["WEIGHT"] == "60/60"
    assert rows["zh-1"]["AGE"].endswith(("s", "m"))
    assert rows["zh-1"]["SEEN"].endswith("s")

    only_en = _table(_ok(_ctl(fleet, "instances", "--selector", "pool=en-public|other")))
    assert set(only_en) == {"en-1"}
    assert _table(_ok(_ctl(fleet, "instances", "--state", "draining"))) == {}

    wide = _table(_ok(_ctl(fleet, "instances", "-o", "wide")))
    assert wide["zh-1"]["ADDRESS"].startswith("127.0.0.1:")


def test_json_before_or_after_the_command_is_the_same_shape(fleet: Fleet) -> None:
    after = json.loads(_ok(_ctl(fleet, "instances", "--json", "--selector", "lang=zh")))
    before = json.loads(
        _ok(
            subprocess.run(
                tidepool_args(
                    "ctl", "--json", "--registry", fleet.registry_address, "--token", READ_TOKEN,
                    "instances", "-l", "lang=zh",
                ),
                capture_output=True, text=True, timeout=CTL_TIMEOUT_S, env=child_env(),
                cwd=REPO_ROOT, check=False,
            )
        )
    )  # fmt: skip
    assert [i["id"] for i in after] == [i["id"] for i in before] == ["zh-1"]
    assert list(after[0]) == INSTANCE_KEYS


def test_drain_weight_and_restore_print_the_instance_after_the_change(fleet: Fleet) -> None:
    drained = _table(_ok(_ctl(fleet, "drain", "zh-1")))["zh-1"]
    assert (drained["STATE"], drained["WEIGHT"]) == ("draining", "0/100")

    weighted = json.loads(_ok(_ctl(fleet, "weight", "zh-1", "30", "--json")))
    assert list(weighted) == INSTANCE_KEYS
    assert (weighted["admin_drained"], weighted["effective_weight"]) == (True, 0)

    # The registry answers at once; the engine resumes on its next heartbeat.
    restored = json.loads(_ok(_ctl(fleet, "restore", "zh-1", "-o", "json")))
    assert (restored["admin_drained"], restored["weight"]) == (False, 100)
    wait_until(
        lambda: _table(_ok(_ctl(fleet, "instances")))["zh-1"]["WEIGHT"] == "30/100",
        WATCH_S,
        "the override never took effect after the restore",
        interval_s=0.2,
    )
    cleared = _table(_ok(_ctl(fleet, "weight", "zh-1", "--clear")))["zh-1"]
    assert cleared["WEIGHT"] == "100/100"


def test_admin_errors_are_one_line_exit_1(fleet: Fleet) -> None:
    done = _ctl(fleet, "drain", "no-such-engine")
    assert done.returncode == 1
    assert done.stderr.startswith("tidepool ctl: NOT_FOUND")
    assert len(done.stderr.strip().splitlines()) == 1


def _watch(fleet: Fleet, *flags: str) -> RunningProcess:
    return fleet.processes.spawn(
        tidepool_args(
            "ctl", "instances", "--watch", *flags,
            "--registry", fleet.registry_address, "--token", READ_TOKEN,
        )
    )  # fmt: skip


def _lines_with(process: RunningProcess, *words: str) -> list[str]:
    return [line for line in process.stdout().splitlines() if all(w in line.split() for w in words)]


def test_watch_prints_a_line_when_an_engine_is_drained_and_exits_0_on_ctrl_c(
    fleet: Fleet,
) -> None:
    watch = _watch(fleet)
    wait_until(
        lambda: len(_lines_with(watch, "SNAPSHOT")) == 2,
        WATCH_S,
        lambda: watch.describe("no snapshot"),
    )
    _ok(_ctl(fleet, "drain", "en-1"))
    wait_until(
        lambda: _lines_with(watch, "UPSERT", "en-1", "draining", "0/60"),
        WATCH_S,
        lambda: watch.describe("no line for the drain"),
    )
    watch.interrupt()
    assert watch.wait(10) == 0
    assert watch.stderr() == ""


def test_watch_says_when_it_loses_the_registry_and_carries_on(fleet: Fleet) -> None:
    watch = _watch(fleet, "--selector", "pool=zh-public")
    wait_until(
        lambda: _lines_with(watch, "SNAPSHOT"), WATCH_S, lambda: watch.describe("no snapshot")
    )
    assert [line.split()[2] for line in _lines_with(watch, "SNAPSHOT")] == ["zh-1"]
    assert fleet.registry is not None
    fleet.registry.kill()
    wait_until(
        lambda: "lost the registry" in watch.stderr(), WATCH_S, lambda: watch.describe("silent")
    )
    fleet.restart_registry()
    wait_until(
        lambda: "watching again" in watch.stderr(), WATCH_S, lambda: watch.describe("no reconnect")
    )
    _ok(_ctl(fleet, "drain", "zh-1"))
    wait_until(
        lambda: _lines_with(watch, "UPSERT", "zh-1", "draining"),
        WATCH_S,
        lambda: watch.describe("no line after the reconnect"),
    )
    assert not _lines_with(watch, "en-1")
    watch.interrupt()
    assert watch.wait(10) == 0
