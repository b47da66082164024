"""Smoke runs of the router benchmarks with tiny durations: they finish, clean up, report sanely.

No nginx needed (`--no-nginx`, `--no-haproxy`); the pure helpers behind the nginx
and HAProxy columns and the profile are checked without starting anything, and
HAProxy itself runs once where it is installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest.haproxy import haproxy_config
from loadtest.nginx import nginx_config
from loadtest.profiling import areas, own_and_total
from loadtest.router_fleet import counter_rises

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


def test_overhead_compares_direct_and_both_data_paths_with_every_call_ok(
    tmp_path: Path,
) -> None:
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
        assert [a["arm"] for a in phase["arms"]] == ["direct", "relay", "grpc"]
        assert all(a["ok"] > 0 and a["not_ok"] == {} for a in phase["arms"])
        assert phase["direct"]["p50_ms"] > 0
        assert set(phase["paths"]) == {"relay", "grpc"}
        for figures in phase["paths"].values():
            assert figures["p50_ms"] > 0
            assert len(figures["added_p50_ms_by_repeat"]) == 1
            assert figures["x_direct_p50"] > 0
    # CPU is read in 10 ms ticks: only the serial phase surely carries enough requests.
    assert all(f["router_cpu_us_per_request"] > 0 for f in serial["paths"].values())
    assert "+p50 ms" in stdout
    assert "relay: target at 100/s" in stdout


def test_capacity_meters_each_data_path_cpu_per_request(tmp_path: Path) -> None:
    result, stdout = _result(
        "loadtest.router_capacity",
        tmp_path,
        *("--engines", "1", "--rate", "200", "--duration", "0.5", "--repeats", "1"),
        *("--processes-list", "1", "--ramp", "", "--warmup", "0", "--no-nginx"),
        *("--gen-processes", "1", "--channels", "1", "--no-haproxy"),
    )
    assert [(s["target"], s["data_path"]) for s in result["steady"]] == [
        ("relay-p1", "relay"),
        ("grpc-p1", "grpc"),
    ]
    for steady in result["steady"]:
        (run,) = steady["runs"]
        assert run["sent"] > 0
        assert run["not_ok"] == {}
        # Any Python gRPC proxy spends more than 20 µs and less than a second per request.
        assert 20 < steady["cpu_us_per_request"] < 1_000_000
        assert steady["vs_nginx"] is None
    assert "calls/s per core" in stdout
    assert "grpc path / relay path" in stdout


def test_nginx_config_passes_grpc_to_every_engine_by_weight(tmp_path: Path) -> None:
    text = nginx_config(tmp_path, "127.0.0.1:9000", [("127.0.0.1:1", 100), ("127.0.0.1:2", 60)])
    assert "listen 127.0.0.1:9000 http2;" in text
    assert "grpc_pass grpc://engines;" in text
    assert "server 127.0.0.1:1 weight=100;" in text
    assert "server 127.0.0.1:2 weight=60;" in text
    assert f"pid {tmp_path}/nginx.pid;" in text


def test_haproxy_config_is_one_thread_h2_both_ways_and_reuses_connections(
    tmp_path: Path,
) -> None:
    text = haproxy_config(tmp_path, "127.0.0.1:9000", [("127.0.0.1:1", 100), ("127.0.0.1:2", 60)])
    assert "nbthread 1" in text
    assert "bind 127.0.0.1:9000 proto h2" in text
    assert "http-reuse always" in text
    assert "server engine0 127.0.0.1:1 proto h2 weight 100" in text
    assert "server engine1 127.0.0.1:2 proto h2 weight 60" in text


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_capacity_meters_client_streams_beside_haproxy_and_a_baseline_tree(
    tmp_path: Path,
) -> None:
    result, stdout = _result(
        "loadtest.router_capacity",
        tmp_path,
        *("--engines", "1", "--rate", "100", "--duration", "0.5", "--repeats", "1"),
        *("--processes-list", "1", "--ramp", "", "--warmup", "0", "--no-nginx"),
        *("--gen-processes", "1", "--channels", "1", "--data-paths", "relay"),
        *("--call", "stream", "--chunks", "3", "--baseline-tree", str(ROOT)),
    )
    assert [(s["target"], s["tree"]) for s in result["steady"]] == [
        ("relay-p1", ""), ("base-relay-p1", "base"), ("haproxy", ""),
    ]  # fmt: skip
    for steady in result["steady"]:
        (run,) = steady["runs"]
        assert run["sent"] > 0
        assert run["not_ok"] == {}
        assert "vs_haproxy" in steady  # a value once HAProxy's CPU reaches a clock tick
    assert "client-streaming EvaluateStream, 1 KiB in 3 chunks" in stdout
    assert "relay-p1: this tree / --baseline-tree" in stdout


def test_profile_counts_own_time_by_leaf_and_total_by_any_frame() -> None:
    loop = "run (asyncio/runners.py:86)"
    unary = "_unary (router/proxy.py:66)"
    inc = "inc (prometheus_client/values.py:27)"
    relay = "on_data (router/relay/connection.py:120)"
    raw = f"{loop} 5\n{loop};{unary} 3\n{loop};{unary};{inc} 1\n{loop};{relay} 1\n"
    own, total, samples = own_and_total(raw)
    assert samples == 10
    assert own[unary] == 3
    assert total[unary] == 4
    assert total[loop] == 10
    shares = areas(own, samples)
    assert shares["router code, other"] == 0.3
    assert shares["relay (router/relay)"] == 0.1
    assert shares["prometheus_client"] == 0.1


pytestmark = pytest.mark.timeout(60)


def test_counter_rises_count_across_a_dropped_and_restarted_series() -> None:
    # 5 -> 7 (+2), then the router drops the series, then a late answer starts it at 1.
    series = [{"OK": 5.0}, {"OK": 7.0, "UNAVAILABLE": 1.0}, {}, {"OK": 1.0}, {"OK": 1.0}]
    rises, last = counter_rises(series)
    assert rises == {"OK": 3, "UNAVAILABLE": 1}
    assert last == 3
    assert counter_rises([{"x": 1.0}, {"x": 1.0}]) == ({}, 0)
