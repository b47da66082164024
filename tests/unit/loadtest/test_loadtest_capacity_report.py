"""The registry capacity benchmark: medians over repeats, histogram bounds, CPU plans."""

from __future__ import annotations

import os

import pytest

from loadtest.capacity_report import histogram_quantile, median_steps
from loadtest.pinning import cpu_plan, pinned


def _step(engines: int, cpu: float, p99: float | None, failed: list[str]) -> dict[str, object]:
    return {
        "engines": engines,
        "registry_cpu_pct": cpu,
        "fanout_p99_ms": p99,
        "failed": failed,
        "ramp_ok": True,
    }


def test_medians_are_taken_per_step_over_the_runs_that_measured_it() -> None:
    runs = [
        [_step(100, 10.0, 5.0, []), _step(200, 30.0, 9.0, [])],
        [_step(100, 14.0, 7.0, []), _step(200, 20.0, None, ["lost"])],
        [_step(100, 12.0, 6.0, [])],
    ]
    merged = median_steps(runs)
    assert [row["engines"] for row in merged] == [100, 200]
    assert merged[0]["registry_cpu_pct"] == 12.0
    assert merged[0]["fanout_p99_ms"] == 6.0
    assert merged[0]["runs"] == 3
    assert merged[1]["registry_cpu_pct"] == 25.0
    assert merged[1]["fanout_p99_ms"] == 9.0, "a lost figure is left out, not counted as 0"
    assert merged[1]["failed"] == ["lost"], "a step any run failed is failed"


def _buckets(counts: dict[str, float], **labels: str) -> list[tuple[dict[str, str], float]]:
    return [({"le": le, **labels}, value) for le, value in counts.items()]


def test_histogram_quantile_reads_the_window_between_two_scrapes() -> None:
    name = "pause_seconds"
    before = {name + "_bucket": _buckets({"0.01": 5, "0.1": 5, "1.0": 5, "+Inf": 5}, gen="0")}
    after = {name + "_bucket": _buckets({"0.01": 95, "0.1": 104, "1.0": 105, "+Inf": 105}, gen="0")}
    assert histogram_quantile(before, after, name, 0.5) == 0.01
    assert histogram_quantile(before, after, name, 0.99) == 0.1
    assert histogram_quantile(before, after, name, 1.0) == 1.0
    assert histogram_quantile(after, after, name, 0.5) is None
    assert histogram_quantile(before, after, name, 0.5, gen="2") is None


def test_the_load_side_gets_every_cpu_but_the_registry_s() -> None:
    available = os.sched_getaffinity(0)
    cpu = min(available)
    rest = cpu_plan(cpu, "rest")
    assert rest is not None
    assert cpu not in rest or len(available) == 1
    assert cpu_plan(cpu, "all") == available
    assert cpu_plan(-1, "rest") is None
    with pytest.raises(ValueError, match="--registry-cpu"):
        cpu_plan(max(available) + 1000, "rest")
    with pytest.raises(ValueError, match="--generator-cpus"):
        cpu_plan(cpu, "one,two")


def test_a_pinned_command_runs_under_taskset() -> None:
    argv = ["python", "-m", "tidepool"]
    assert pinned(argv, -1) == argv
    command = pinned(argv, 0)
    assert command[-3:] == argv
    assert command[1:3] == ["--cpu-list", "0"] or command == argv  # no taskset installed


def test_a_run_that_never_reached_a_step_adds_nothing_to_its_medians() -> None:
    reached = _step(100, 40.0, 8.0, [])
    never = {**_step(100, 0.0, None, ["3 engines failed to attach"]), "ramp_ok": False}
    (row,) = median_steps([[reached], [never]])
    assert row["registry_cpu_pct"] == 40.0
    assert row["failed"] == ["3 engines failed to attach"]
    assert row["ramp_ok"] is False
