"""Router metrics: per-instance series go away with their instances."""

from __future__ import annotations

from prometheus_client import generate_latest

from router.metrics import RouterMetrics


def _exposed(metrics: RouterMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_series_of_instances_gone_for_good_are_dropped_and_the_rest_kept() -> None:
    metrics = RouterMetrics()
    metrics.answered("zh-public", "keep-1", "OK", 0.001)
    metrics.answered("zh-public", "gone-1", "OK", 0.001)
    metrics.answered("zh-public", "gone-1", "UNAVAILABLE", 0.001)
    metrics.ejected("zh-public", "gone-1", "passive")
    metrics.ejected("zh-public", "keep-1", "active")
    metrics.retain({"keep-1"})
    text = _exposed(metrics)
    assert 'engine="gone-1"' not in text
    assert 'requests_total{alias="zh-public",code="OK",engine="keep-1"} 1.0' in text
    assert 'engine="keep-1",kind="active"' in text
    metrics.answered("zh-public", "gone-1", "OK", 0.001)  # it came back: counting starts again
    assert 'code="OK",engine="gone-1"} 1.0' in _exposed(metrics)
