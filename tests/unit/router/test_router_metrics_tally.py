"""The per-call counts kept as plain numbers scrape exactly as prometheus_client's own would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from router.metrics import LATENCY_BUCKETS, RouterMetrics
from tests.support.router_harness import Samples, parse_metrics

seconds = st.floats(min_value=0.0, max_value=60.0) | st.sampled_from(LATENCY_BUCKETS)
answers = st.lists(
    st.tuples(st.sampled_from(["zh", "en"]), st.sampled_from(["e1", "e2"]),
              st.sampled_from(["OK", "UNAVAILABLE"]), seconds),
    max_size=30,
)  # fmt: skip


def _samples(registry: CollectorRegistry, prefix: str) -> Samples:
    parsed = parse_metrics(generate_latest(registry).decode())
    return {key: value for key, value in parsed.items() if key[0].startswith(prefix)}


@given(answers, st.lists(st.tuples(st.sampled_from(["/a.S/M", "/a.S/N"]), seconds), max_size=20))
def test_counts_and_histograms_scrape_as_prometheus_client_would(
    answered: list[tuple[str, str, str, float]], called: list[tuple[str, float]]
) -> None:
    metrics = RouterMetrics()
    reference = CollectorRegistry()
    requests = Counter("tidepool_router_requests", "x", ["alias", "engine", "code"],
                       registry=reference)  # fmt: skip
    attempts = Histogram("tidepool_router_attempt_seconds", "x", ["alias"],
                         buckets=LATENCY_BUCKETS, registry=reference)  # fmt: skip
    calls = Histogram("tidepool_router_call_seconds", "x", ["method"],
                      buckets=LATENCY_BUCKETS, registry=reference)  # fmt: skip
    for alias, engine, code, value in answered:
        metrics.answered(alias, engine, code, value)
        requests.labels(alias, engine, code).inc()
        attempts.labels(alias).observe(value)
    for method, value in called:
        metrics.called(method, value)
        calls.labels(method).observe(value)
    for prefix in ("tidepool_router_requests_total", "tidepool_router_attempt_seconds",
                   "tidepool_router_call_seconds"):  # fmt: skip
        mine = _samples(metrics.registry, prefix)
        theirs = _samples(reference, prefix)
        assert mine.keys() == {k for k in theirs if not k[0].endswith("_created")}
        for key, value in mine.items():
            assert abs(value - theirs[key]) <= 1e-9 * max(1.0, abs(value)), key
