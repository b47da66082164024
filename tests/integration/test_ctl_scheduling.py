"""`tidepool ctl pools|move|moves|top` against a real registry, scheduler and engine stubs.

Everything runs as separate processes on 127.0.0.1: a registry with tokens, two
zh and two en engine stubs registered without a pool (the scheduler admits
them), and a scheduler with a fast policy. ctl runs as a subprocess, as an
operator's script would run it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import REPO_ROOT, ProcessSet, child_env, wait_until

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

ENGINE_TOKEN, READ_TOKEN, ADMIN_TOKEN = "ctl-engine", "ctl-reader", "ctl-admin"
START_S = 30.0
SETTLE_S = 30.0
CTL_TIMEOUT_S = 30.0
POLICY = """\
[scheduler]
interval_s = 0.2
window_s = 1.0
cooldown_s = 1.0
min_stay_s = 1.0
drain_timeout_s = 2.0
switch_timeout_s = 10.0
leader_ttl_s = 1.0

[[pools]]
name = "zh-public"
lang = "zh"
min = 1
max = 6
target_utilization = 0.6
high_watermark = 0.8
low_watermark = 0.3
lend_to = ["en-public"]

[[pools]]
name = "en-public"
lang = "en"
min = 1
max = 6
target_utilization = 0.6
high_watermark = 0.8
low_watermark = 0.3
lend_to = ["zh-public"]
"""
POOL_KEYS = [
    "name", "lang", "size", "ready", "moving_in", "moving_out",
    "utilization", "desired", "min", "max",
]  # fmt: skip
MOVE_KEYS = ["id", "instance", "from", "to", "state", "reason", "started_at", "updated_at"]


def _tidepool(*args: str) -> list[str]:
    return [sys.executable, "-m", "tidepool", *args]


@dataclass
class Cluster:
    processes: ProcessSet
    tmp_path: Path
    registry: str = ""

    def ctl(self, *args: str, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
        """`tidepool ctl ARGS` as a subprocess, bounded; whatever it exits with."""
        return subprocess.run(
            _tidepool("ctl", "--registry", self.registry, "--token", token, *args),
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT_S,
            env=child_env(),
            cwd=REPO_ROOT,
            check=False,
        )

    def ctl_json(self, *args: str, token: str = READ_TOKEN) -> Any:
        done = self.ctl(*args, "--json", token=token)
        assert done.returncode == 0, f"ctl {' '.join(args)} exited {done.returncode}: {done.stderr}"
        return json.loads(done.stdout)

    def start_registry(self) -> None:
        process = self.processes.start(
            _tidepool(
                "registry", "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                "--data-dir", str(self.tmp_path / "registry"),
                "--engine-token", ENGINE_TOKEN, "--read-token", READ_TOKEN,
                "--admin-token", ADMIN_TOKEN,
                "--heartbeat-interval-s", "0.25", "--ttl-s", "1",
            ),
            "tidepool registry ready",
            START_S,
        )  # fmt: skip
        self.registry = process.grpc

    def start_engines(self, *langs: str) -> dict[str, str]:
        """Engines started together, then waited for; their ids and languages."""
        spawned = [
            (
                lang,
                self.processes.spawn(
                    _tidepool(
                        "engine-stub", "--registry", self.registry, "--token", ENGINE_TOKEN,
                        "--lang", lang, "--model-load-s", "0", "--drain-timeout-s", "1",
                        "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                    )
                ),
            )
            for lang in langs
        ]  # fmt: skip
        engines = {}
        for lang, process in spawned:
            process.wait_ready("tidepool engine-stub ready", START_S)
            engines[process.fields["id"]] = lang
        return engines

    def start_scheduler(self) -> None:
        policy = self.tmp_path / "policy.toml"
        policy.write_text(POLICY)
        self.processes.start(
            _tidepool(
                "scheduler", "run", "--registry", self.registry, "--token", ADMIN_TOKEN,
                "--policy", str(policy), "--http-listen", "127.0.0.1:0",
            ),
            "tidepool scheduler ready role=leader",
            START_S,
        )  # fmt: skip

    def ready_by_pool(self) -> dict[str, int]:
        return {p["name"]: p["ready"] for p in self.ctl_json("pools")}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with ProcessSet() as processes:
        yield Cluster(processes, tmp_path)


def _without_a_scheduler_pools_say_so_and_moves_are_refused(cluster: Cluster) -> None:
    done = cluster.ctl("pools", token=READ_TOKEN)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout.splitlines() == [
        "no pool status: is `tidepool scheduler run` running against this registry?"
    ]
    assert cluster.ctl_json("pools") == []
    done = cluster.ctl("move", "--from", "en-public", "--to", "zh-public", "--count", "1")
    assert done.returncode == 1
    assert "no scheduler is publishing pool status" in done.stderr
    assert len(done.stderr.splitlines()) == 1


def _move_one_en_engine_to_zh(cluster: Cluster, engine: str) -> None:
    done = cluster.ctl(
        "move", "--instance", engine, "--to", "zh-public", "--wait", "--timeout", "30"
    )
    assert done.returncode == 0, f"move exited {done.returncode}: {done.stdout}{done.stderr}"
    lines = done.stdout.splitlines()
    assert re.fullmatch(rf"move m-\S+ {engine} en-public -> zh-public pending", lines[0]), lines
    assert lines[-1].endswith(" done"), lines
    move_id = lines[0].split()[1]

    instances = {i["id"]: i for i in cluster.ctl_json("instances")}
    labels = instances[engine]["labels"]
    assert (labels["pool"], labels["lang"]) == ("zh-public", "zh"), labels

    moves = {m["id"]: m for m in cluster.ctl_json("moves")}
    assert list(moves[move_id]) == MOVE_KEYS
    assert moves[move_id]["state"] == "done"
    assert (moves[move_id]["instance"], moves[move_id]["from"]) == (engine, "en-public")
    assert moves[move_id]["started_at"].endswith("Z")


def _a_move_below_min_is_refused(cluster: Cluster) -> None:
    wait_until(
        lambda: cluster.ready_by_pool().get("en-public") == 1,
        SETTLE_S,
        lambda: f"en-public never down to 1 ready: {cluster.ready_by_pool()}",
        interval_s=0.2,
    )
    done = cluster.ctl("move", "--from", "en-public", "--to", "zh-public", "--count", "1")
    assert done.returncode == 1, done.stdout
    assert done.stdout == ""
    assert done.stderr.startswith("tidepool ctl: ")
    assert "min" in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_pools_move_moves_and_top_against_a_live_scheduler(cluster: Cluster) -> None:
    cluster.start_registry()
    _without_a_scheduler_pools_say_so_and_moves_are_refused(cluster)

    engines = cluster.start_engines("zh", "zh", "en", "en")
    cluster.start_scheduler()
    wait_until(
        lambda: cluster.ready_by_pool() == {"zh-public": 2, "en-public": 2},
        SETTLE_S,
        lambda: f"the scheduler never admitted all four engines: {cluster.ready_by_pool()}",
        interval_s=0.2,
    )
    for pool in cluster.ctl_json("pools"):
        assert list(pool) == POOL_KEYS
        assert isinstance(pool["utilization"], float)
        assert (pool["min"], pool["max"]) == (1, 6)

    _move_one_en_engine_to_zh(cluster, min(e for e, lang in engines.items() if lang == "en"))
    _a_move_below_min_is_refused(cluster)

    done = cluster.ctl("top", "--once", token=READ_TOKEN)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert "zh-public" in done.stdout
    assert "en-public" in done.stdout
    assert "\x1b[" not in done.stdout  # not a terminal: no screen clearing
    assert max(len(line) for line in done.stdout.splitlines()) <= 80
