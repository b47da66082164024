"""`tidepool up` brings up registry and fleet, answers ctl, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

FLEET = "zh/idc/60/0.6,en/serverless/100/1"


def _ctl(registry: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidepool", "ctl", "--registry", registry, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.timeout(90)
def test_up_runs_a_mixed_fleet_until_interrupted(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidepool",
            "up",
            "--data-dir",
            str(tmp_path / "data"),
            "--registry-listen",
            "127.0.0.1:0",
            "--registry-http-listen",
            "127.0.0.1:0",
            "--fleet",
            FLEET,
            "--model-load-seconds",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    try:
        registry, lines = None, []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, f"tidepool up exited early:\n{''.join(lines)}"
            lines.append(line)
            if line.startswith("registry  grpc="):
                registry = line.split()[1].removeprefix("grpc=")
            if "engines ready" in line:
                break
        else:
            pytest.fail(f"tidepool up was not ready within 60 s:\n{''.join(lines)}")
        assert registry is not None
        listed = _ctl(registry, "instances", "--json")
        assert listed.returncode == 0, listed.stderr
        instances = json.loads(listed.stdout)
        assert sorted((i["labels"]["lang"], i["labels"]["tier"]) for i in instances) == [
            ("en", "serverless"),
            ("zh", "idc"),
        ]
        assert {i["state"] for i in instances} == {"ready"}
        assert sorted(i["weight"] for i in instances) == [60, 100]
        aliases = json.loads(_ctl(registry, "alias", "list", "--json").stdout)
        assert {a["name"] for a in aliases} == {"zh-public", "en-public"}
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, rest
        assert "tidepool up: stopped" in rest
        assert "Traceback" not in "".join(lines) + rest
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
