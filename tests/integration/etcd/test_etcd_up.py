"""`tidepool up --store etcd`: a local etcd member and two registry replicas serving one fleet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.etcd_harness import _free_ports, etcd_binary

pytestmark = [pytest.mark.etcd, pytest.mark.timeout(120)]

FLEET = "zh/idc/60/0.6,en/serverless/100/1"


def _ctl(registry: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidepool", "ctl", "--registry", registry, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _instances(registry: str) -> list[dict[str, object]]:
    listed = _ctl(registry, "instances", "--json")
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout))


def test_up_on_etcd_runs_two_replicas_with_one_catalog(tmp_path: Path) -> None:
    etcd_binary()  # skip (or fail in CI) without etcd
    client, peer = _free_ports(2)
    loopback_0 = "127.0.0.1:0"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidepool",
            "up",
            "--store",
            "etcd",
            "--data-dir",
            str(tmp_path / "data"),
            "--etcd-listen",
            f"127.0.0.1:{client}",
            "--etcd-peer-listen",
            f"127.0.0.1:{peer}",
            "--registry-listen",
            loopback_0,
            "--registry-http-listen",
            loopback_0,
            "--router-listen",
            loopback_0,
            "--router-http-listen",
            loopback_0,
            "--scheduler-http-listen",
            loopback_0,
            "--fleet",
            FLEET,
            "--model-load-s",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    try:
        registries, lines = "", []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, f"tidepool up exited early:\n{''.join(lines)}"
            lines.append(line)
            if line.startswith("registry  grpc="):
                registries = line.split()[1].removeprefix("grpc=")
            if "engines ready" in line:
                break
        else:
            pytest.fail(f"tidepool up was not ready within 90 s:\n{''.join(lines)}")
        replicas = registries.split(",")
        assert len(replicas) == 2, registries
        views = [sorted((str(i["id"]), str(i["state"])) for i in _instances(r)) for r in replicas]
        assert views[0] == views[1], views
        assert [state for _, state in views[0]] == ["ready", "ready"]
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=90)
        assert process.returncode == 0, rest
        assert "tidepool up: stopped" in rest
        assert "Traceback" not in "".join(lines) + rest
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
