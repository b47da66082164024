"""The engine stub as a real process beside a real registry process, over real sockets."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine_stub import load_model
from tests.support.processes import ProcessSet, RunningProcess, python_args, wait_until_async
from tidepool.engine.v1 import evaluator_pb2 as epb
from tidepool.engine.v1 import evaluator_pb2_grpc as epb_grpc
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.registry.v1 import registry_pb2_grpc as pb_grpc

ENGINE_TOKEN, READ_TOKEN, ADMIN_TOKEN = "engine-secret", "reader", "admin"
REGISTRY_READY = "tidepool registry ready"
STUB_READY = "tidepool engine-stub ready"
WAIT_S = 15.0
ONE_SECOND = bytes(range(256)) * 125  # 32000 bytes: one second of 16 kHz 16-bit PCM


@pytest.fixture
def processes() -> Iterator[ProcessSet]:
    with ProcessSet() as running:
        yield running


@pytest.fixture
def registry(processes: ProcessSet, tmp_path: Path) -> RunningProcess:
    args = python_args(
        "registry.server",
        *("--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"),
        *("--data-dir", str(tmp_path / "registry")),
        *("--engine-token", ENGINE_TOKEN, "--read-token", READ_TOKEN),
        *("--admin-token", ADMIN_TOKEN, "--heartbeat-interval-s", "0.2", "--ttl-s", "2"),
        "--stall-after-s",
        "1",
    )
    return processes.start(args, REGISTRY_READY, WAIT_S)


def stub_args(registry: RunningProcess, *extra: str, token: str = ENGINE_TOKEN) -> list[str]:
    return python_args(
        "engine_stub.server",
        *("--registry", registry.grpc, "--token", token),
        *("--model-load-s", "0.2", "--log-level", "info"),
        *extra,
    )


def start_stub(processes: ProcessSet, registry: RunningProcess, *extra: str) -> RunningProcess:
    return processes.start(stub_args(registry, *extra), STUB_READY, WAIT_S)


@pytest.fixture
async def channels() -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    opened: dict[str, grpc.aio.Channel] = {}
    try:
        yield opened
    finally:
        for channel in opened.values():
            await channel.close()


def channel_to(channels: dict[str, grpc.aio.Channel], address: str) -> grpc.aio.Channel:
    if address not in channels:
        channels[address] = grpc.aio.insecure_channel(address)
    return channels[address]


async def instances(channel: grpc.aio.Channel) -> dict[str, Any]:
    listed = await pb_grpc.RegistryStub(channel).ListInstances(
        pb.ListInstancesRequest(), metadata=(("authorization", f"Bearer {READ_TOKEN}"),), timeout=5
    )
    return {instance.id: instance for instance in listed.instances}


def evaluate_request(lang: str = "zh", audio: bytes = ONE_SECOND) -> epb.EvaluateRequest:
    return epb.EvaluateRequest(audio=audio, text="ni hao shi jie", lang=lang)


def http_get(address: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def assert_scores(response: epb.EvaluateResponse, audio: bytes, lang: str) -> None:
    expected = load_model.score(audio, "ni hao shi jie", lang)
    assert response.overall == pytest.approx(expected.overall, abs=1e-3)
    assert response.accuracy == pytest.approx(expected.accuracy, abs=1e-3)
    assert response.fluency == pytest.approx(expected.fluency, abs=1e-3)
    assert response.completeness == pytest.approx(expected.completeness, abs=1e-3)
    assert response.lang == lang


# ---- startup, registration and serving -----------------------------------------------------


async def test_stub_registers_then_prints_ready_and_serves_deterministic_scores(
    processes: ProcessSet, registry: RunningProcess, channels: dict[str, grpc.aio.Channel]
) -> None:
    stub = start_stub(
        processes, registry,
        "--instance-id", "zh-1", "--weight", "60", "--tier", "cvm", "--pool", "zh-acme",
        "--labels", "region=sh",
    )  # fmt: skip
    assert stub.fields["id"] == "zh-1"
    listed = await instances(channel_to(channels, registry.grpc))
    instance = listed["zh-1"]
    assert instance.address == stub.grpc
    assert (instance.weight, instance.capacity) == (60, 4)
    # The stub also publishes its /metrics port, for discovery (Consul catalog, Prometheus).
    metrics_port = stub.http.rsplit(":", 1)[1]
    assert dict(instance.labels) == {
        "lang": "zh",
        "tier": "cvm",
        "pool": "zh-acme",
        "region": "sh",
        "metrics_port": metrics_port,
    }

    evaluator = epb_grpc.EvaluatorStub(channel_to(channels, stub.grpc))
    response = await evaluator.Evaluate(evaluate_request(), timeout=5)
    assert_scores(response, ONE_SECOND, "zh")
    assert (response.engine_id, response.audio_ms) == ("zh-1", 1000)

    chunks = [
        epb.EvaluateChunk(audio=ONE_SECOND[:10_000], text="ni hao shi jie", lang="zh"),
        epb.EvaluateChunk(audio=ONE_SECOND[10_000:]),
    ]
    streamed = await evaluator.EvaluateStream(iter(chunks), timeout=5)
    assert streamed == response


async def test_stub_answers_bad_requests_with_meaningful_statuses(
    processes: ProcessSet, registry: RunningProcess, channels: dict[str, grpc.aio.Channel]
) -> None:
    stub = start_stub(processes, registry)
    evaluator = epb_grpc.EvaluatorStub(channel_to(channels, stub.grpc))
    cases = [
        (evaluate_request(lang="en"), grpc.StatusCode.FAILED_PRECONDITION, "lang:"),
        (evaluate_request(audio=b""), grpc.StatusCode.INVALID_ARGUMENT, "audio:"),
        (evaluate_request(lang="fr"), grpc.StatusCode.INVALID_ARGUMENT, "lang:"),
    ]
    for request, code, prefix in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await evaluator.Evaluate(request, timeout=5)
        assert caught.value.code() == code
        assert caught.value.details().startswith(prefix)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await evaluator.EvaluateStream(
            iter([epb.EvaluateChunk(audio=ONE_SECOND, lang="zh")]), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("text:")
    # It keeps serving everyone else.
    assert_scores(await evaluator.Evaluate(evaluate_request(), timeout=5), ONE_SECOND, "zh")


async def test_stub_serves_health_readiness_and_metrics(
    processes: ProcessSet, registry: RunningProcess, channels: dict[str, grpc.aio.Channel]
) -> None:
    stub = start_stub(processes, registry)
    health = health_pb2_grpc.HealthStub(channel_to(channels, stub.grpc))
    for service in ("", "tidepool.engine.v1.Evaluator"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    evaluator = epb_grpc.EvaluatorStub(channel_to(channels, stub.grpc))
    await evaluator.Evaluate(evaluate_request(), timeout=5)
    assert await asyncio.to_thread(http_get, stub.http, "/healthz") == (200, "ok\n")
    status, body = await asyncio.to_thread(http_get, stub.http, "/readyz")
    assert (status, body) == (200, "ready: model zh\n")
    status, body = await asyncio.to_thread(http_get, stub.http, "/metrics")
    assert status == 200
    assert 'tidepool_engine_requests_total{code="OK",method="Evaluate"} 1.0' in body
    assert "tidepool_engine_progress_total 1.0" in body
    assert "tidepool_engine_slots 4.0" in body


# ---- graceful stop -------------------------------------------------------------------------


async def test_sigterm_drains_finishes_in_flight_deregisters_and_exits_0(
    processes: ProcessSet, registry: RunningProcess, channels: dict[str, grpc.aio.Channel]
) -> None:
    # speed 0.02: one second of audio takes 2.25 s, long enough to watch the drain.
    stub = start_stub(processes, registry, "--instance-id", "slow-1", "--speed", "0.02")
    registry_channel = channel_to(channels, registry.grpc)
    evaluator = epb_grpc.EvaluatorStub(channel_to(channels, stub.grpc))
    in_flight = asyncio.ensure_future(evaluator.Evaluate(evaluate_request(), timeout=30))

    async def registry_sees(check: Any) -> bool:
        instance = (await instances(registry_channel)).get("slow-1")
        return instance is not None and bool(check(instance))

    await wait_until_async(
        lambda: registry_sees(lambda i: i.load.in_flight == 1), WAIT_S, "in-flight never reported"
    )
    stub.terminate()
    await wait_until_async(
        lambda: registry_sees(lambda i: i.state == pb.INSTANCE_STATE_DRAINING),
        WAIT_S,
        lambda: "registry never showed DRAINING\n" + stub.describe("stub"),
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await evaluator.Evaluate(evaluate_request(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "draining" in refused.value.details()

    assert_scores(await in_flight, ONE_SECOND, "zh")
    assert await asyncio.to_thread(stub.wait, WAIT_S) == 0
    assert "slow-1" not in await instances(registry_channel), "not deregistered"
    assert "Traceback" not in stub.stderr()


async def test_sigint_during_model_load_exits_0_without_registering(
    processes: ProcessSet, registry: RunningProcess, channels: dict[str, grpc.aio.Channel]
) -> None:
    stub = processes.spawn(
        python_args(
            "engine_stub.server",
            *("--registry", registry.grpc, "--token", ENGINE_TOKEN, "--instance-id", "never"),
            *("--model-load-s", "60", "--log-level", "info"),
        )
    )
    await wait_until_async(lambda: "loading model zh" in stub.stderr(), WAIT_S, "no model load")
    stub.interrupt()
    assert await asyncio.to_thread(stub.wait, WAIT_S) == 0
    assert STUB_READY not in stub.stdout()
    assert "never" not in await instances(channel_to(channels, registry.grpc))


# ---- refusals --------------------------------------------------------------------------------


async def test_rejected_token_is_one_clear_line_and_a_non_zero_exit(
    processes: ProcessSet, registry: RunningProcess
) -> None:
    stub = processes.spawn(stub_args(registry, "--log-level", "warning", token="stolen"))
    code = await asyncio.to_thread(stub.wait, WAIT_S)
    assert code != 0
    assert STUB_READY not in stub.stdout()
    stderr = stub.stderr()
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("tidepool engine-stub:")]
    assert len(errors) == 1, stderr
    assert "UNAUTHENTICATED" in errors[0]


@pytest.mark.parametrize(
    ("flag", "value"), [("--weight", "5000"), ("--lang", "fr"), ("--fault-error-rate", "2")]
)
async def test_bad_flag_is_one_line_naming_it_and_exit_2(
    processes: ProcessSet, registry: RunningProcess, flag: str, value: str
) -> None:
    stub = processes.spawn(stub_args(registry, flag, value))
    assert await asyncio.to_thread(stub.wait, WAIT_S) == 2
    assert stub.stderr().startswith(f"tidepool engine-stub: {flag}: ")
    assert len(stub.stderr().splitlines()) == 1


# ---- directives and faults -----------------------------------------------------------------


async def test_switch_model_directive_moves_the_engine_to_the_other_language(
    processes: ProcessSet, registry: RunningProcess, channels: dict[str, grpc.aio.Channel]
) -> None:
    stub = start_stub(processes, registry, "--instance-id", "mover")
    registry_channel = channel_to(channels, registry.grpc)
    directive = pb.Directive(kind=pb.Directive.KIND_SWITCH_MODEL, model="en")

    async def sent() -> bool:
        # Registration (the ready line) comes just before the heartbeat stream attaches.
        try:
            await pb_grpc.AdminStub(registry_channel).SendDirective(
                pb.SendDirectiveRequest(instance_id="mover", directive=directive),
                metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),),
                timeout=5,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            return False
        return True

    await wait_until_async(sent, WAIT_S, "the heartbeat stream never attached")

    async def moved() -> bool:
        instance = (await instances(registry_channel))["mover"]
        return instance.labels["lang"] == "en" and instance.state == pb.INSTANCE_STATE_READY

    await wait_until_async(moved, WAIT_S, lambda: "never moved to en\n" + stub.describe("stub"))
    evaluator = epb_grpc.EvaluatorStub(channel_to(channels, stub.grpc))
    assert_scores(await evaluator.Evaluate(evaluate_request("en"), timeout=5), ONE_SECOND, "en")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await evaluator.Evaluate(evaluate_request("zh"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_hung_gpu_keeps_heartbeating_and_the_registry_marks_it_stalled(
    processes: ProcessSet, registry: RunningProcess, channels: dict[str, grpc.aio.Channel]
) -> None:
    stub = start_stub(
        processes, registry, "--instance-id", "stuck", "--fault-hang-after", "0",
        "--drain-timeout-s", "0.5",
    )  # fmt: skip
    evaluator = epb_grpc.EvaluatorStub(channel_to(channels, stub.grpc))
    hung = asyncio.ensure_future(evaluator.Evaluate(evaluate_request(), timeout=30))

    async def stalled() -> bool:
        instance = (await instances(channel_to(channels, registry.grpc)))["stuck"]
        return bool(instance.state == pb.INSTANCE_STATE_STALLED)

    try:
        await wait_until_async(stalled, WAIT_S, "the registry never marked the hung engine")
    finally:
        hung.cancel()
    stub.terminate()
    assert await asyncio.to_thread(stub.wait, WAIT_S) == 0, "a stuck GPU must not block exit"
