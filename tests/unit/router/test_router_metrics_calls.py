"""Caller-level call timing by method (bounded labels) and pool gauges that add up under sum()."""

from __future__ import annotations

from prometheus_client import generate_latest

from router.metrics import MAX_METHODS, OTHER_METHOD, RouterMetrics
from router.table import PoolStatus
from tests.support.router_harness import metric, parse_metrics


def test_each_call_is_timed_by_method() -> None:
    metrics = RouterMetrics()
    metrics.called("/pkg.S/A", 0.01)
    metrics.called("/pkg.S/A", 0.02)
    metrics.called("/pkg.S/B", 3.0)
    samples = parse_metrics(generate_latest(metrics.registry).decode())
    assert metric(samples, "tidepool_router_call_seconds_count", method="/pkg.S/A") == 2
    assert metric(samples, "tidepool_router_call_seconds_count", method="/pkg.S/B") == 1


def test_methods_past_the_cap_share_one_label() -> None:
    metrics = RouterMetrics()
    for index in range(MAX_METHODS + 10):
        metrics.called(f"/pkg.S/M{index}", 0.01)
    samples = parse_metrics(generate_latest(metrics.registry).decode())
    methods = {
        dict(labels)["method"]
        for (name, labels), _ in samples.items()
        if name == "tidepool_router_call_seconds_count"
    }
    assert len(methods) == MAX_METHODS + 1
    assert metric(samples, "tidepool_router_call_seconds_count", method=OTHER_METHOD) == 10


def test_endpoint_states_do_not_count_a_pool_twice_under_sum() -> None:
    metrics = RouterMetrics()
    pool = PoolStatus("zh", endpoints=3, routable=2, ejected=frozenset({"e1"}), panic=False,
                      last_resort=False)  # fmt: skip
    metrics.watch(lambda: 0.0, lambda: True, lambda: [pool])
    samples = parse_metrics(generate_latest(metrics.registry).decode())
    states = {
        dict(labels)["state"] for (name, labels) in samples if name == "tidepool_router_endpoints"
    }
    assert states == {"routable", "ejected"}
    assert metric(samples, "tidepool_router_pool_endpoints", alias="zh") == 3
