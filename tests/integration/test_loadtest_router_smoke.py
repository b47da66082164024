"""Smoke runs of the router benchmarks with tiny durations: they finish, clean up, report sanely.

No nginx needed (`--no-nginx`); the pure helpers behind the nginx column and the
profile are checked without starting anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest.nginx import nginx_config
from loadtest.router_capacity import areas, own_and_total

ROOT = Path(__file__).resolve().parents[2]


def _result(module: str, tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    path = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", module, *args, "--json", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert done.returncode == 0, f"{module} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(path.read_text()), done.stdout


def test_overhead_compares_direct_and_router_with_every_call_ok(tmp_path: Path) -> None:
    result, stdout = _result(
        "loadtest.router_overhead",
        tmp_path,
        *("--engines", "1", "--rates", "100", "--duration", "0.5", "--repeats", "1"),
        *("--warmup", "0"),
    )
    assert "loadtest.router_overhead --engines 1" in result["command"]
    assert len(result["loadavg_start"]) == len(result["loadavg_end"]) == 3
    serial, open_loop = result["phases"]
    assert (serial["rate_per_s"], open_loop["rate_per_s"]) == (None, 100.0)
    for phase in (serial, open_loop):
        assert [a["arm"] for a in phase["arms"]] == ["direct", "router"]
        assert all(a["ok"] > 0 and a["not_ok"] == {} for a in phase["arms"])
        assert phase["router"]["p50_ms"] > 0
        assert phase["direct"]["p50_ms"] > 0
    # CPU is read in 10 ms ticks: only the serial phase surely carries enough requests.
    assert serial["router_cpu_us_per_request"] > 0
    assert "+p50 ms" in stdout


def test_capacity_meters_the_router_cpu_per_request(tmp_path: Path) -> None:
    result, stdout = _result(
        "loadtest.router_capacity",
        tmp_path,
        *("--engines", "1", "--rate", "200", "--duration", "0.5", "--repeats", "1"),
        *("--processes-list", "1", "--ramp", "", "--warmup", "0", "--no-nginx"),
        *("--gen-processes", "1", "--channels", "1"),
    )
    (steady,) = result["steady"]
    assert steady["target"] == "router-p1"
    (run,) = steady["runs"]
    assert run["sent"] > 0
    assert run["not_ok"] == {}
    # Any Python gRPC proxy spends more than 20 µs and less than a second per request.
    assert 20 < steady["cpu_us_per_request"] < 1_000_000
    assert steady["vs_nginx"] is None
    assert "req/s per core" in stdout


def test_nginx_config_passes_grpc_to_every_engine_by_weight(tmp_path: Path) -> None:
    text = nginx_config(tmp_path, "127.0.0.1:9000", [("127.0.0.1:1", 100), ("127.0.0.1:2", 60)])
    assert "listen 127.0.0.1:9000 http2;" in text
    assert "grpc_pass grpc://engines;" in text
    assert "server 127.0.0.1:1 weight=100;" in text
    assert "server 127.0.0.1:2 weight=60;" in text
    assert f"pid {tmp_path}/nginx.pid;" in text


def test_profile_counts_own_time_by_leaf_and_total_by_any_frame() -> None:
    loop = "run (asyncio/runners.py:86)"
    unary = "_unary (router/proxy.py:66)"
    inc = "inc (prometheus_client/values.py:27)"
    raw = f"{loop} 6\n{loop};{unary} 3\n{loop};{unary};{inc} 1\n"
    own, total, samples = own_and_total(raw)
    assert samples == 10
    assert own[unary] == 3
    assert total[unary] == 4
    assert total[loop] == 10
    shares = areas(own, samples)
    assert shares["router code"] == 0.3
    assert shares["prometheus_client"] == 0.1


pytestmark = pytest.mark.timeout(60)
