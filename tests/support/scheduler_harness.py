"""What the scheduler's process tests share: a fast two-pool policy and `tidepool loadtest`
run as an operator runs it (a subprocess whose exit status says whether calls failed)."""

from __future__ import annotations

import subprocess

from tests.support.fleet_harness import Router, tidepool_args
from tests.support.processes import REPO_ROOT, child_env

LOAD_TIMEOUT_S = 60.0


def two_pool_policy(
    *,
    window_s: float = 1.0,
    cooldown_s: float = 1.0,
    min_stay_s: float = 2.0,
    leader_ttl_s: float = 1.0,
    zh_max: int = 5,
    en_min: int = 1,
) -> str:
    """zh-public and en-public lending to each other, with a loop fast enough for a test."""
    return f"""\
[scheduler]
interval_s = 0.25
window_s = {window_s}
cooldown_s = {cooldown_s}
min_stay_s = {min_stay_s}
drain_timeout_s = 3.0
switch_timeout_s = 15.0
leader_ttl_s = {leader_ttl_s}
expected_switch_s = 0.5

[[pools]]
name = "zh-public"
lang = "zh"
min = 1
max = {zh_max}
target_utilization = 0.5
high_watermark = 0.75
low_watermark = 0.25
lend_to = ["en-public"]

[[pools]]
name = "en-public"
lang = "en"
min = {en_min}
max = 5
target_utilization = 0.5
high_watermark = 0.75
low_watermark = 0.25
lend_to = ["zh-public"]
"""


def start_loadtest(
    router: Router,
    alias: str,
    rate: float,
    duration_s: float,
    *,
    max_error_rate: float = 0.0,
) -> subprocess.Popen[str]:
    """`tidepool loadtest` through the router; it exits 3 once errors pass `max_error_rate`."""
    return subprocess.Popen(
        tidepool_args(
            "loadtest",
            *("--target", router.grpc, "--alias", alias),
            *("--rate", f"{rate:g}", "--duration", f"{duration_s:g}"),
            *("--max-error-rate", f"{max_error_rate:g}", "--timeout", "10"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
        cwd=REPO_ROOT,
    )


def assert_finished_cleanly(load: subprocess.Popen[str]) -> None:
    """The loadtest ended within LOAD_TIMEOUT_S with exit 0 (no more errors than allowed)."""
    output, _ = load.communicate(timeout=LOAD_TIMEOUT_S)
    assert load.returncode == 0, f"loadtest exited {load.returncode}:\n{output[-3000:]}"
