"""A smoke run of the scheduler benchmark with tiny parameters: it finishes, cleans up,
reports every figure and keeps its JSON shape. The figures themselves belong to the
benchmark's own runs, not to a test on a loaded CI machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import REPO_ROOT, child_env

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]


def test_scheduler_bench_reports_surge_steady_and_failover(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    args = (
        *("--trials", "1", "--surge-s", "12", "--steady-s", "2"),
        *("--failover-trials", "1", "--json", str(out)),
    )
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.scheduler_bench", *args],
        capture_output=True,
        text=True,
        timeout=140,
        env=child_env(),
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout.startswith("command: "), done.stdout
    for line in ("to first move:", "to under high:", "client errors:", "failover (kill -9"):
        assert line in done.stdout, done.stdout
    result = json.loads(out.read_text())
    (surge,) = result["surges"]
    assert set(surge) >= {"to_first_move_s", "to_under_high_s", "client_errors", "moves_done"}
    assert surge["to_first_move_s"] is not None, "the surge moved nothing"
    assert result["steady"]["seconds"] == 2
    assert len(result["failover_s"]) == 1
    assert 0 < result["failover_s"][0] < 15
