"""Smoke runs of the router benchmarks with tiny parameters: they finish, clean up and report.

The three run at once (one module fixture) so the whole file stays well under 25 s
on a 2-core machine; each test then checks one of the JSON results. The checks
are about the benchmarks working, not about the numbers a loaded CI box gets.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 50.0

RUNS = {
    "failover": (
        "loadtest.router_failover",
        *("--trials", "1", "--term-trials", "0", "--rate", "100"),
        *("--duration", "3", "--kill-at", "1.5"),
    ),
    "balance": (
        "loadtest.router_balance",
        *("--duration", "0.5", "--repeats", "1", "--weights", "mismatched"),
        *("--data-path", "grpc"),
    ),
    "client": (
        "loadtest.router_client_overhead",
        *("--calls", "100", "--block", "50", "--callers", "5"),
    ),
}


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    result: dict[str, Any] | None

    def describe(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """Start all three benchmarks at once; their outputs and JSON results, by name."""
    tmp = tmp_path_factory.mktemp("router-scenarios")
    started: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    try:
        for name, (module, *args) in RUNS.items():
            path = tmp / f"{name}.json"
            argv = [sys.executable, "-m", module, *args, "--json", str(path)]
            process = subprocess.Popen(
                argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            started[name] = (process, path)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        done: dict[str, Run] = {}
        for name, (process, path) in started.items():
            stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            result = json.loads(path.read_text()) if path.exists() else None
            done[name] = Run(process.returncode, stdout, stderr, result)
        yield done
    finally:
        for process, _ in started.values():
            if process.poll() is None:
                process.terminate()  # the benchmark stops its own children on SIGTERM
                try:
                    process.wait(10.0)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _ok(run: Run) -> dict[str, Any]:
    assert run.returncode == 0, run.describe()
    assert run.result is not None, run.describe()
    return run.result


@pytest.mark.parametrize("name", list(RUNS))
def test_each_benchmark_prints_its_command_and_the_load_average(
    runs: dict[str, Run], name: str
) -> None:
    result = _ok(runs[name])
    assert RUNS[name][0] in result["command"]
    assert len(result["loadavg_start"]) == len(result["loadavg_end"]) == 3
    assert f"command: {result['command']}" in runs[name].stdout


def test_failover_kills_an_engine_and_sees_the_router_stop_trying_it(
    runs: dict[str, Run],
) -> None:
    result = _ok(runs["failover"])
    (trial,) = result["trials"]
    assert trial["mode"] == "kill9"
    assert trial["error"] is None
    assert trial["sent"] > 0
    assert 0 < trial["signal_at_s"] < 3.0
    # When it stopped trying the victim: within the run, after a scrape or two at least.
    assert trial["last_attempt_ms"] is not None
    assert 0 <= trial["last_attempt_ms"] < 3000
    assert trial["scrapes"] >= 2
    assert "last attempt ms" in runs["failover"].stdout
    assert result["settings"]["data_path"] == "relay"


def test_balance_runs_both_balancers_on_the_weights_asked_for(runs: dict[str, Run]) -> None:
    result = _ok(runs["balance"])
    assert result["settings"]["data_path"] == "grpc"
    cells = {(row["weights"], row["balancer"]) for row in result["table"]}
    assert cells == {("mismatched", "wrr"), ("mismatched", "least-loaded")}
    for row in result["table"]:
        shares = [row["share_fast-a"], row["share_fast-b"], row["share_slow"]]
        assert sum(shares) == pytest.approx(1.0, abs=0.01), row
    wrr = next(
        row
        for row in result["table"]
        if row["weights"] == "mismatched" and row["balancer"] == "wrr"
    )
    # Smooth WRR over equal weights is exact: a third each, whatever the machine does.
    assert wrr["share_slow"] == pytest.approx(1 / 3, abs=0.05)


def test_client_overhead_reports_both_modes_at_both_levels(runs: dict[str, Run]) -> None:
    result = _ok(runs["client"])
    assert [level["callers"] for level in result["levels"]] == [1, 5]
    for level in result["levels"]:
        for mode in ("direct", "client"):
            figures = level["modes"][mode]
            assert figures["calls"] == 100
            assert figures["errors"] == 0
            assert figures["cpu_ms_per_call"] > 0
        assert len(level["added_cpu_ms"]["pairs"]) == 2


pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]
