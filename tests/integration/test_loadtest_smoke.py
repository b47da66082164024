"""Smoke runs of the benchmarks with tiny parameters: they finish, clean up and report sanely."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(module: str, *args: str, timeout_s: float = 45.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _result(module: str, tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    path = tmp_path / "result.json"
    done = _run(module, *args, "--json", str(path))
    assert done.returncode == 0, f"{module} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(path.read_text()), done.stdout


@pytest.mark.parametrize("module", ["loadtest.registry_capacity", "loadtest.failure_detection"])
def test_benchmark_help_lists_its_flags(module: str) -> None:
    done = _run(module, "--help")
    assert done.returncode == 0
    assert "--json" in done.stdout


@pytest.mark.parametrize(
    ("command", "prog"),
    [(("loadtest",), "python -m loadtest"), (("tidepool", "loadtest"), "tidepool loadtest")],
)
def test_loadtest_help_names_the_program_as_it_was_run(command: tuple[str, ...], prog: str) -> None:
    done = _run(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {prog} [-h] --target HOST:PORT")
    assert "--max-error-rate" in done.stdout


@pytest.mark.slow
def test_capacity_run_reports_processed_heartbeats_close_to_offered(tmp_path: Path) -> None:
    result, stdout = _result(
        "loadtest.registry_capacity",
        tmp_path,
        *("--steps", "5,10", "--step-seconds", "1", "--watchers", "2", "--warmup-seconds", "1"),
    )
    assert "loadtest.registry_capacity --steps 5,10" in result["command"]
    assert len(result["loadavg_start"]) == len(result["loadavg_end"]) == 3
    assert [step["engines"] for step in result["steps"]] == [5, 10]
    last = result["steps"][-1]
    assert last["offered_hz"] == pytest.approx(10.0)
    # A one-second window can catch a beat either side of its edges.
    assert last["processed_hz"] == pytest.approx(10.0, rel=0.3)
    assert last["unhealthy"] == 0
    assert last["fanout_samples"] > 0
    assert last["fanout_lost"] == 0
    assert 0 < last["fanout_p99_ms"] < 1000
    assert last["registry_rss_mb"] > 0
    assert result["capacity_engines"] == 10
    assert result["capacity_limited_by"] == "not reached"
    assert "capacity:" in stdout


def test_failure_detection_sees_kill_fast_and_silence_within_the_ttl(tmp_path: Path) -> None:
    result, stdout = _result(
        "loadtest.failure_detection",
        tmp_path,
        *("--trials", "2", "--stop-trials", "1", "--ttl", "0.6", "--heartbeat-interval", "0.2"),
    )
    assert result["engine"] in ("stub", "builtin")
    assert result["ttl_s"] == 0.6
    kill, stop = result["modes"]["kill9"], result["modes"]["sigstop"]
    assert (kill["trials"], kill["detected"], stop["trials"], stop["detected"]) == (2, 2, 1, 1)
    assert kill["max_s"] < 2.0
    assert kill["detected_by"] == {"stream_broken": 2}
    # Silent: only the lapse tells, so no sooner than the TTL less one interval.
    assert 0.3 < stop["median_s"] < 2.0
    assert stop["detected_by"] == {"ttl": 1}
    assert "median ms" in stdout


def test_failure_detection_runs_with_its_own_minimal_engine(tmp_path: Path) -> None:
    result, _ = _result(
        "loadtest.failure_detection",
        tmp_path,
        *("--engine", "builtin", "--trials", "1", "--stop-trials", "0"),
        *("--ttl", "0.6", "--heartbeat-interval", "0.2"),
    )
    assert result["engine"] == "builtin"
    kill = result["modes"]["kill9"]
    assert kill["detected"] == 1
    assert kill["max_s"] < 2.0


pytestmark = pytest.mark.timeout(60)
