"""A real Prometheus finds engine stubs through the registry and scrapes their /metrics.

Every process is real. Two discovery mechanisms: `consul_sd_configs` against the
registry's Consul API, and `http_sd_configs` against `/prometheus/targets`. Debian
12's `prometheus` package is built without Consul discovery (its changelog: "Disable
Consul SD until its Debian package is back in shape"), so there the Consul case is
skipped, saying so, and the HTTP case carries the end-to-end check; a Prometheus
with Consul discovery on PATH runs both.
"""

from __future__ import annotations

import functools
import json
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.consul import METRICS_SERVICE
from tests.support.processes import ProcessSet, RunningProcess, python_args, wait_until

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("prometheus") is None or shutil.which("promtool") is None,
        reason="needs Debian's prometheus package (.ci/run installs it: apt-get install "
        "prometheus)",
    ),
]

ENGINE_TOKEN, READ_TOKEN, ADMIN_TOKEN = "engine-secret", "reader", "admin"
START_S = 20.0
DISCOVER_S = 30.0


@pytest.fixture
def processes() -> Iterator[ProcessSet]:
    with ProcessSet() as running:
        yield running


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _start_fleet(processes: ProcessSet, data: Path) -> tuple[RunningProcess, list[RunningProcess]]:
    registry = processes.start(
        python_args(
            "registry.server",
            *("--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"),
            *("--data-dir", str(data / "registry")),
            *("--engine-token", ENGINE_TOKEN, "--read-token", READ_TOKEN),
            *("--admin-token", ADMIN_TOKEN, "--heartbeat-interval-s", "0.2", "--ttl-s", "2"),
        ),
        "tidepool registry ready",
        START_S,
    )
    engines = [
        processes.start(
            python_args(
                "engine_stub.server",
                *("--registry", registry.grpc, "--token", ENGINE_TOKEN),
                *("--instance-id", instance_id, "--lang", lang, "--tier", tier),
                *("--model-load-s", "0.1"),
            ),
            "tidepool engine-stub ready",
            START_S,
        )
        for instance_id, lang, tier in (("zh-1", "zh", "idc"), ("en-1", "en", "cvm"))
    ]
    return registry, engines


def _consul_sd(registry: RunningProcess, token: str | None) -> dict[str, Any]:
    sd: dict[str, Any] = {
        "server": registry.http,
        "services": [METRICS_SERVICE],
        "refresh_interval": "1s",
    }
    if token is not None:
        sd["token"] = token
    return {
        "consul_sd_configs": [sd],
        "relabel_configs": [
            {"source_labels": ["__meta_consul_node"], "target_label": "instance_id"},
            {"source_labels": ["__meta_consul_service_metadata_lang"], "target_label": "lang"},
        ],
    }


def _http_sd(registry: RunningProcess, token: str | None) -> dict[str, Any]:
    sd: dict[str, Any] = {"url": f"http://{registry.http}/prometheus/targets"}
    sd["refresh_interval"] = "1s"
    if token is not None:
        # Prometheus 2.42's http_sd sends the bare token unless the type is spelled out.
        sd["authorization"] = {"type": "Bearer", "credentials": token}
    return {"http_sd_configs": [sd]}  # the targets carry instance_id and lang already


SD = {"consul": _consul_sd, "http": _http_sd}


def _write_config(path: Path, discovery: dict[str, Any]) -> None:
    # JSON is valid YAML: no YAML library needed to write Prometheus's config.
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "tidepool-engines", **discovery}],
    }
    path.write_text(json.dumps(config, indent=2))


@functools.cache
def _consul_sd_missing() -> str:
    """Why this prometheus cannot use consul_sd_configs ("" when it can)."""
    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "probe.yml"
        _write_config(config, {"consul_sd_configs": [{"server": "127.0.0.1:1"}]})
        check = subprocess.run(
            ["promtool", "check", "config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    if check.returncode == 0:
        return ""
    return (
        "this prometheus is built without consul_sd_configs (Debian's package compiles "
        f"Consul discovery out); promtool: {' '.join((check.stdout + check.stderr).split())[-120:]}"
    )


def _need(mechanism: str) -> None:
    if mechanism == "consul" and _consul_sd_missing():
        pytest.skip(_consul_sd_missing())


def _targets(prometheus: str) -> dict[str, dict[str, Any]]:
    """Active targets by their `instance_id` label (the Consul node, our instance id)."""
    try:
        answer = _get_json(f"http://{prometheus}/api/v1/targets?state=active")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return {}
    targets = answer["data"]["activeTargets"]
    return {t["labels"].get("instance_id", ""): t for t in targets}


def _start_prometheus(
    processes: ProcessSet, data: Path, discovery: dict[str, Any]
) -> tuple[RunningProcess, str]:
    """A Prometheus on a free loopback port, ready; (its process, its address)."""
    config = data / "prometheus.yml"
    _write_config(config, discovery)
    address = f"127.0.0.1:{_free_port()}"
    prometheus = processes.spawn(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={data / 'tsdb'}",
            f"--web.listen-address={address}",
        ]
    )

    def ready() -> bool:
        if prometheus.returncode is not None:
            raise AssertionError(prometheus.describe("prometheus exited"))
        try:
            with urllib.request.urlopen(f"http://{address}/-/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    wait_until(ready, START_S, lambda: prometheus.describe("prometheus never became ready"))
    return prometheus, address


@pytest.mark.parametrize("mechanism", ["consul", "http"])
def test_prometheus_discovers_engines_through_the_registry_and_scrapes_them_up(
    processes: ProcessSet, tmp_path: Path, mechanism: str
) -> None:
    _need(mechanism)
    registry, engines = _start_fleet(processes, tmp_path)
    _process, prometheus = _start_prometheus(
        processes, tmp_path, SD[mechanism](registry, READ_TOKEN)
    )

    def both_up() -> bool:
        targets = _targets(prometheus)
        return all(targets.get(i, {}).get("health") == "up" for i in ("zh-1", "en-1"))

    wait_until(
        both_up,
        DISCOVER_S,
        lambda: f"engines not scraped up: {json.dumps(_targets(prometheus), indent=1)}",
        interval_s=0.25,
    )
    targets = _targets(prometheus)
    for engine, instance_id, lang in ((engines[0], "zh-1", "zh"), (engines[1], "en-1", "en")):
        target = targets[instance_id]
        assert target["scrapeUrl"] == f"http://{engine.http}/metrics"
        assert target["labels"]["lang"] == lang
        discovered = target["discoveredLabels"]
        if mechanism == "consul":
            assert discovered["__meta_consul_service"] == METRICS_SERVICE
            assert discovered["__meta_consul_health"] == "passing"
            assert f",lang={lang}," in discovered["__meta_consul_tags"]
        else:
            assert discovered["__meta_tidepool_health"] == "passing"

    # A stopped engine deregisters and Prometheus drops it (the Consul watch wakes at once).
    assert engines[1].stop() == 0
    wait_until(
        lambda: set(_targets(prometheus)) == {"zh-1"},
        DISCOVER_S,
        lambda: f"en-1 still a target: {sorted(_targets(prometheus))}",
        interval_s=0.25,
    )


@pytest.mark.parametrize("mechanism", ["consul", "http"])
def test_prometheus_without_the_read_token_is_refused_and_scrapes_nothing(
    processes: ProcessSet, tmp_path: Path, mechanism: str
) -> None:
    _need(mechanism)
    registry, _engines = _start_fleet(processes, tmp_path)
    prometheus, address = _start_prometheus(processes, tmp_path, SD[mechanism](registry, None))
    wait_until(
        lambda: "403" in prometheus.stderr(),
        DISCOVER_S,
        lambda: prometheus.describe("prometheus logged no refusal from the registry"),
        interval_s=0.25,
    )
    assert _targets(address) == {}
