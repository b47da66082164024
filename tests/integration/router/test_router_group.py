"""`--processes 2`: two router processes share one port (SO_REUSEPORT), each with its own watch.

The kernel spreads connections over the workers, so calls on several channels
reach both; each worker serves its own /metrics; SIGTERM to the group stops
every worker and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator

import grpc
import pytest

from tests.support.fleet_harness import (
    EVALUATE,
    READ_TOKEN,
    ROUTER_READY,
    START_S,
    EngineSpec,
    Fleet,
    Metrics,
    evaluate_request,
    http_get,
    tidepool_args,
)
from tests.support.processes import wait_until
from tidepool.engine.v1 import evaluator_pb2 as epb

PUBLIC = "zh-public"
CHANNELS = 24
"""Connections: the chance that the kernel puts every one on the same worker is 2^-23."""
CALLS_PER_CHANNEL = 4
STOP_S = 20.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with Fleet(tmp_path_factory.mktemp("group")) as running:
        running.start_registry()
        running.put_aliases({PUBLIC: "lang=zh"})
        running.start_engines(EngineSpec("grp-a", 100), EngineSpec("grp-b", 100))
        yield running


async def _attempts(http: str) -> float:
    status, body = await http_get(http, "/metrics")
    assert status == 200, body
    return Metrics.parse(body).total("tidepool_router_requests_total", code="OK")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.timeout(90)
async def test_two_workers_share_one_port_and_stop_together(fleet: Fleet) -> None:
    port = _free_port()
    group = fleet.processes.start(
        tidepool_args(
            "router", "serve",
            *("--registry", fleet.registry_address, "--token", READ_TOKEN),
            *("--listen", f"127.0.0.1:{port}", "--http-listen", "127.0.0.1:0"),
            *("--state-file", str(fleet.tmp_path / "group-view.json")),
            *("--processes", "2"),
        ),
        ROUTER_READY,
        START_S,
    )  # fmt: skip
    https = group.http.split(",")
    pids = [int(p) for p in group.fields["pid"].split(",")]
    assert len(https) == 2, group.describe("expected two HTTP addresses")
    assert len(pids) == 2, group.describe("expected two worker pids")
    assert group.grpc == f"127.0.0.1:{port}"

    # A local subchannel pool per channel: one TCP connection each, which is what
    # the kernel spreads over the workers.
    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(group.grpc, options=own_connection) for _ in range(CHANNELS)
    ]
    try:
        calls = [
            channel.unary_unary(
                EVALUATE,
                request_serializer=epb.EvaluateRequest.SerializeToString,
                response_deserializer=epb.EvaluateResponse.FromString,
            )
            for channel in channels
        ]
        replies = await asyncio.gather(
            *(
                call(evaluate_request(), metadata=(("x-tidepool-alias", PUBLIC),), timeout=10)
                for call in calls
                for _ in range(CALLS_PER_CHANNEL)
            )
        )
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    answers = [reply.engine_id for reply in replies]
    assert set(answers) == {"grp-a", "grp-b"}
    per_worker = [await _attempts(http) for http in https]
    assert sum(per_worker) == CHANNELS * CALLS_PER_CHANNEL
    assert all(count > 0 for count in per_worker), f"one worker got nothing: {per_worker}"

    group.terminate()
    assert group.wait(STOP_S) == 0, group.describe("the group did not exit 0 on SIGTERM")
    wait_until(lambda: all(_gone(pid) for pid in pids), STOP_S, "a worker outlived its group")


def test_processes_need_a_fixed_port(fleet: Fleet) -> None:
    process = fleet.processes.spawn(
        tidepool_args(
            "router", "serve", "--registry", fleet.registry_address,
            "--listen", "127.0.0.1:0", "--processes", "2",
        )
    )  # fmt: skip
    assert process.wait(STOP_S) == 2
    assert process.stderr().strip().splitlines() == [
        "tidepool router: --processes above 1 needs a fixed --listen port"
    ]


@pytest.mark.parametrize("data_path", ["relay", "grpc"])
def test_a_second_router_on_a_taken_port_fails_with_one_line(fleet: Fleet, data_path: str) -> None:
    port = _free_port()

    def router() -> list[str]:
        return tidepool_args(
            "router", "serve",
            *("--registry", fleet.registry_address, "--token", READ_TOKEN),
            *("--listen", f"127.0.0.1:{port}", "--http-listen", "127.0.0.1:0"),
            *("--state-file", "", "--data-path", data_path),
        )  # fmt: skip

    first = fleet.processes.start(router(), ROUTER_READY, START_S)
    second = fleet.processes.spawn(router())
    assert second.wait(STOP_S) == 1, second.describe("a second router shared the port")
    (line,) = second.stderr().strip().splitlines()
    assert line.startswith("tidepool router: --listen")
    assert "in use" in line
    assert first.returncode is None
