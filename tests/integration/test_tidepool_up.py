"""`tidepool up` brings up registry and fleet, answers ctl, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from tidepool.engine.v1 import evaluator_pb2, evaluator_pb2_grpc

FLEET = "zh/idc/60/0.6,en/serverless/100/1"


def _ctl(registry: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidepool", "ctl", "--registry", registry, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _evaluate_through(router: str, alias: str, lang: str) -> str:
    """One Evaluate through the router; the id of the engine that answered."""
    with grpc.insecure_channel(router) as channel:
        stub = evaluator_pb2_grpc.EvaluatorStub(channel)
        request = evaluator_pb2.EvaluateRequest(audio=b"\0" * 3200, text="hello", lang=lang)
        reply = stub.Evaluate(request, metadata=(("x-tidepool-alias", alias),), timeout=10)
    return str(reply.engine_id)


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
            "--router-listen",
            "127.0.0.1:0",
            "--router-http-listen",
            "127.0.0.1:0",
            "--scheduler-http-listen",
            "127.0.0.1:0",
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
        registry, router, lines = None, None, []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, f"tidepool up exited early:\n{''.join(lines)}"
            lines.append(line)
            if line.startswith("registry  grpc="):
                registry = line.split()[1].removeprefix("grpc=")
            if line.startswith("router    grpc="):
                router = line.split()[1].removeprefix("grpc=")
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
        # The scheduler admitted every engine into the public pool of its language.
        assert {i["labels"]["pool"] for i in instances if i["labels"]["lang"] == "zh"} == {
            "zh-public"
        }
        assert {i["labels"]["pool"] for i in instances if i["labels"]["lang"] == "en"} == {
            "en-public"
        }
        assert sorted(i["weight"] for i in instances) == [60, 100]
        aliases = json.loads(_ctl(registry, "alias", "list", "--json").stdout)
        assert {a["name"] for a in aliases} == {"zh-public", "en-public"}
        assert router is not None, "".join(lines)
        answered = {
            lang: _evaluate_through(router, f"{lang}-public", lang) for lang in ("zh", "en")
        }
        by_id = {i["id"]: i["labels"]["lang"] for i in instances}
        assert {lang: by_id[engine] for lang, engine in answered.items()} == {
            "zh": "zh",
            "en": "en",
        }
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, rest
        assert "tidepool up: stopped" in rest
        assert "released the leadership" in rest
        assert "Traceback" not in "".join(lines) + rest
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
