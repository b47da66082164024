"""`tidepool loadtest day` end to end, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidepool", "loadtest", "day", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_help_names_the_command_and_its_flags() -> None:
    done = _run("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: tidepool loadtest day")
    assert "--strategies" in done.stdout
    assert "--plot" in done.stdout


def test_bad_input_exits_2_with_one_line() -> None:
    done = _run("--strategies", "nope")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "--strategies" in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_weekday_runs_all_strategies_and_writes_json_and_a_plot(tmp_path: Path) -> None:
    out, png = tmp_path / "day.json", tmp_path / "day.png"
    done = _run("--profile", "weekday", "--json", str(out), "--plot", str(png), timeout_s=170)
    assert done.returncode == 0, done.stderr
    assert "day: tidepool  simulated 24:00" in done.stderr
    document = json.loads(out.read_text())
    assert (document["seed"], document["profile"]) == (1, "weekday")
    strategies = document["strategies"]
    assert list(strategies) == ["static", "autoscale", "tidepool"]
    assert len({s["requests"] for s in strategies.values()}) == 1
    assert strategies["static"]["scale_outs"] == 0
    assert strategies["tidepool"]["moves"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in strategies:
        assert name in done.stdout
