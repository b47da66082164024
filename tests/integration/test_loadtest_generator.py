"""The load generator against a real engine stub (beside a real registry), over loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.generator import LoadConfig, LoadResult, run_load, run_open_loop
from tests.support.processes import REPO_ROOT, ProcessSet, RunningProcess, child_env

ENGINE_TOKEN = "engine-secret"
ENGINE_ID = "zh-loadtest"
WAIT_S = 15.0
RATE, DURATION_S = 100.0, 1.5
TIDEPOOL = (sys.executable, "-m", "tidepool")
WRONG_MODEL = "lang: this engine has the 'en' model loaded, not 'zh'"
"""What the engine stub says to a zh request when it holds the en model."""


@pytest.fixture(scope="module")
def processes() -> Iterator[ProcessSet]:
    """The registry and engine stubs this module's tests share, stopped at its end."""
    with ProcessSet() as running:
        yield running


@pytest.fixture(scope="module")
def registry(processes: ProcessSet, tmp_path_factory: pytest.TempPathFactory) -> RunningProcess:
    return processes.start(
        [
            *(*TIDEPOOL, "registry", "serve"),
            *("--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"),
            *("--data-dir", str(tmp_path_factory.mktemp("registry"))),
            *("--engine-token", ENGINE_TOKEN),
        ],
        "tidepool registry ready",
        WAIT_S,
    )


def start_engine(
    processes: ProcessSet, registry: RunningProcess, instance_id: str, lang: str
) -> RunningProcess:
    return processes.start(
        [
            *(*TIDEPOOL, "engine-stub", "--registry", registry.grpc, "--token", ENGINE_TOKEN),
            *("--instance-id", instance_id, "--model-load-s", "0", "--slots", "16"),
            *("--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--lang", lang),
        ],
        "tidepool engine-stub ready",
        WAIT_S,
    )


@pytest.fixture(scope="module")
def stub(processes: ProcessSet, registry: RunningProcess) -> RunningProcess:
    """An engine stub with the zh model loaded."""
    return start_engine(processes, registry, ENGINE_ID, "zh")


@pytest.fixture(scope="module")
def en_stub(processes: ProcessSet, registry: RunningProcess) -> RunningProcess:
    """An engine stub with the en model loaded: zh requests fail FAILED_PRECONDITION."""
    return start_engine(processes, registry, "en-loadtest", "en")


def assert_percentiles_ordered(result: LoadResult) -> None:
    for histograms in (result.latency, result.service):
        histogram = histograms["all"]
        points = [histogram.percentile(p) for p in (0, 50, 90, 99, 99.9, 100)]
        assert points == sorted(points)
        assert 0 < points[0]
        assert points[-1] < 2.0


def test_open_loop_load_over_two_processes_is_answered_in_full(stub: RunningProcess) -> None:
    config = LoadConfig(
        target=stub.grpc,
        rate_per_s=RATE,
        duration_s=DURATION_S,
        processes=2,
        mix={"unary": 0.8, "stream": 0.2},
        timeout_s=5.0,
    )
    result = run_load(config)

    expected = RATE * DURATION_S  # 150; a Poisson count's standard deviation is about 12
    assert abs(result.scheduled - expected) < 45
    assert result.sent == result.scheduled == result.ok
    assert (result.errors, result.dropped, result.abandoned) == (0, 0, 0)
    assert result.late <= result.sent * 0.1
    assert result.processes == 2
    assert result.statuses_by_kind["stream"]["OK"] > 0
    assert dict(result.engines) == {ENGINE_ID: result.ok}
    assert sum(sum(s.statuses.values()) for s in result.time_series) == result.ok
    assert sum(s.sent for s in result.time_series) == result.sent
    assert result.elapsed_s == pytest.approx(DURATION_S, abs=0.5)
    assert_percentiles_ordered(result)
    assert result.cpu_s > 0

    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert LoadResult.from_dict(data).to_dict() == data
    assert data["statuses"] == {"OK": result.ok}
    assert data["latency_ms"]["all"]["count"] == result.ok


async def test_closed_loop_keeps_one_call_in_flight(stub: RunningProcess) -> None:
    config = LoadConfig(target=stub.grpc, duration_s=0.5, concurrency=1, timeout_s=5.0)
    result = await run_open_loop(config)
    assert result.ok == result.sent > 0
    assert result.errors == 0
    # One at a time: nothing waits behind another call, so latency is the service time.
    assert result.latency["all"].percentile(50) == pytest.approx(
        result.service["all"].percentile(50), rel=0.05
    )


def run_cli(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest", *args],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_cli_prints_the_command_and_summary_and_writes_json(
    stub: RunningProcess, tmp_path: Path
) -> None:
    path = tmp_path / "result.json"
    done = run_cli(
        *("--target", stub.grpc, "--rate", "50", "--duration", "1", "--token", "s3cret"),
        *("--json", str(path)),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("command: ")
    assert "s3cret" not in done.stdout + path.read_text()
    assert "p99.9" in done.stdout
    assert "OK " in done.stdout
    data = json.loads(path.read_text())
    assert f"-m loadtest --target {stub.grpc} --rate 50" in data["command"]
    assert "--token REDACTED" in data["command"]
    assert data["statuses"] == {"OK": data["sent"]}
    assert "Traceback" not in done.stderr


def test_cli_exits_3_and_shows_the_first_error_when_every_call_fails(
    en_stub: RunningProcess, tmp_path: Path
) -> None:
    path = tmp_path / "result.json"
    done = run_cli(
        *("--target", en_stub.grpc, "--lang", "zh", "--rate", "20", "--duration", "1"),
        *("--processes", "2", "--json", str(path)),
    )
    assert done.returncode == 3, done.stdout + done.stderr
    data = json.loads(path.read_text())
    sent = data["sent"]
    assert sent > 0
    assert data["statuses"] == {"FAILED_PRECONDITION": sent}
    # Two processes each saw the error: the merged result keeps one message.
    assert data["first_errors"] == {"FAILED_PRECONDITION": WRONG_MODEL}
    assert data["error_share"] == 1.0
    assert f"error     FAILED_PRECONDITION (first of {sent}): {WRONG_MODEL}\n" in done.stdout
    assert done.stderr.splitlines()[-1] == (
        f"loadtest: 100.00% of calls failed ({sent} of {sent}), above the 1.00%"
        " that --max-error-rate 0.01 allows; exit status 3"
    )
    assert "Traceback" not in done.stderr


def test_cli_exits_0_when_the_errors_stay_within_max_error_rate(en_stub: RunningProcess) -> None:
    done = run_cli(
        *("--target", en_stub.grpc, "--lang", "zh", "--rate", "20", "--duration", "0.5"),
        *("--max-error-rate", "1"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert WRONG_MODEL in done.stdout  # accepted, but still shown
    assert "max-error-rate" not in done.stderr


def test_cli_sends_the_language_the_alias_implies_and_exits_0(
    en_stub: RunningProcess, tmp_path: Path
) -> None:
    path = tmp_path / "result.json"
    done = run_cli(
        *("--target", en_stub.grpc, "--alias", "en-public", "--rate", "20", "--duration", "1"),
        *("--json", str(path)),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(path.read_text())
    assert data["sent"] > 0
    assert data["statuses"] == {"OK": data["sent"]}
    assert data["first_errors"] == {}
    assert (data["config"]["lang"], data["config"]["request_lang"]) == (None, "en")


def test_cli_exits_1_with_one_line_when_the_target_is_unreachable() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = run_cli("--target", f"127.0.0.1:{port}", "--connect-timeout", "0.5", "--duration", "1")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "cannot reach" in lines[0]
    assert str(port) in lines[0]


pytestmark = pytest.mark.timeout(60)
