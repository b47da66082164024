"""Retry decisions: how far a failed attempt got, what may be retried or ejects, the budget."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.retry import Failure, RetryBudget, RetryPolicy, classify

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
EVALUATE = "/tidepool.engine.v1.Evaluator/Evaluate"
STREAM = "/tidepool.engine.v1.Evaluator/EvaluateStream"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- classify -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "details",
    [
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
        "Failed to connect to remote host: Connection refused",
        "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:10.0.0.9:7000: "
        "No route to host",
        "Connection refused",
        "connections to all backends failing; last error: UNAVAILABLE: ipv6:[::1]:7000",
    ],
)
def test_connect_failures_are_classified_as_connect(details: str) -> None:
    assert classify(UNAVAILABLE, details, answered=False) is Failure.CONNECT


@pytest.mark.parametrize(
    "details",
    [
        "Socket closed",
        "Connection reset by peer",
        "recvmsg:Connection reset by peer",
        "Broken pipe",
        "GOAWAY received",
        "keepalive watchdog timeout",
    ],
)
def test_broken_connections_before_an_answer_are_resets(details: str) -> None:
    assert classify(UNAVAILABLE, details, answered=False) is Failure.RESET


@pytest.mark.parametrize(
    ("code", "details"),
    [
        (UNAVAILABLE, "engine is draining"),
        (UNAVAILABLE, ""),
        (UNAVAILABLE, None),
        (grpc.StatusCode.INTERNAL, "Connection refused"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "Socket closed"),
        (grpc.StatusCode.INVALID_ARGUMENT, "bad audio"),
    ],
)
def test_other_failures_are_answers_from_the_engine(code: grpc.StatusCode, details: str) -> None:
    assert classify(code, details, answered=False) is Failure.ANSWERED


@pytest.mark.parametrize("details", ["Socket closed", "failed to connect to all addresses"])
def test_once_the_engine_answered_nothing_counts_as_a_transport_failure(details: str) -> None:
    assert classify(UNAVAILABLE, details, answered=True) is Failure.ANSWERED


# --- policy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "failure", "code", "retryable", "ejects"),
    [
        (EVALUATE, Failure.CONNECT, UNAVAILABLE, True, True),
        (STREAM, Failure.CONNECT, UNAVAILABLE, True, True),
        (EVALUATE, Failure.RESET, UNAVAILABLE, True, True),
        (STREAM, Failure.RESET, UNAVAILABLE, True, True),
        (EVALUATE, Failure.ANSWERED, UNAVAILABLE, True, True),
        (STREAM, Failure.ANSWERED, UNAVAILABLE, False, True),
        (EVALUATE, Failure.ANSWERED, grpc.StatusCode.INTERNAL, False, False),
        (EVALUATE, Failure.ANSWERED, grpc.StatusCode.DEADLINE_EXCEEDED, False, False),
        (STREAM, Failure.ANSWERED, grpc.StatusCode.INVALID_ARGUMENT, False, False),
    ],
)
def test_retry_and_ejection_matrix(
    method: str, failure: Failure, code: grpc.StatusCode, retryable: bool, ejects: bool
) -> None:
    policy = RetryPolicy()
    assert policy.retryable(method, failure, code) is retryable
    assert policy.ejects(failure, code) is ejects


def test_idempotent_methods_are_configurable() -> None:
    policy = RetryPolicy(max_attempts=2, idempotent_methods=[STREAM])
    assert policy.retryable(STREAM, Failure.ANSWERED, UNAVAILABLE) is True
    assert policy.retryable(EVALUATE, Failure.ANSWERED, UNAVAILABLE) is False
    assert policy.idempotent_methods == frozenset({STREAM})


@pytest.mark.parametrize("attempts", [0, -1])
def test_policy_rejects_fewer_than_one_attempt(attempts: int) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=attempts)


# --- budget -------------------------------------------------------------------------


def _spend_all(budget: RetryBudget, limit: int = 10_000) -> int:
    spent = 0
    while spent < limit and budget.try_spend():
        spent += 1
    return spent


@pytest.mark.parametrize("requests", [100, 1000])
def test_retries_after_a_burst_of_requests_are_about_a_fifth_of_them(requests: int) -> None:
    budget = RetryBudget(ratio=0.2, min_per_s=0, clock=FakeClock())
    for _ in range(requests):
        budget.deposit()
    spent = _spend_all(budget)
    assert 0.19 * requests <= spent <= 0.2 * requests + 1


def test_retries_never_exceed_the_ratio_of_requests() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_s=0, clock=clock)
    retries = 0
    for _ in range(1000):
        clock.now += 0.001
        budget.deposit()
        retries += budget.try_spend()  # every request fails once and asks for a retry
    assert 190 <= retries <= 201


def test_a_zero_ratio_with_no_floor_allows_at_most_one_retry() -> None:
    budget = RetryBudget(ratio=0.0, min_per_s=0, clock=FakeClock())
    for _ in range(1000):
        budget.deposit()
    assert _spend_all(budget) <= 1


def test_the_floor_refills_with_time_up_to_its_cap() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_s=8, window_s=10, clock=clock)
    assert _spend_all(budget) == 80  # a quiet router starts with the full floor
    assert budget.try_spend() is False
    clock.now += 1.0
    assert _spend_all(budget) == 8
    clock.now += 0.0625
    assert budget.try_spend() is False  # half a token
    clock.now += 0.1
    assert budget.try_spend() is True
    clock.now += 10_000.0
    assert _spend_all(budget) == 80  # never more than the floor's cap


def test_the_clock_going_nowhere_refills_nothing() -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_s=10, window_s=1, clock=clock)
    assert _spend_all(budget) == 10
    assert budget.tokens < 1
    assert budget.try_spend() is False


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"ratio": 1.5}, "ratio"),
        ({"ratio": -0.1}, "ratio"),
        ({"ratio": float("nan")}, "ratio"),
        ({"min_per_s": -1.0}, "min_per_s"),
    ],
)
def test_budget_rejects_bad_settings(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        RetryBudget(**kwargs)  # type: ignore[arg-type]


@given(st.lists(st.sampled_from(["deposit", "spend", "tick"]), max_size=300))
def test_tokens_are_never_negative(steps: list[str]) -> None:
    clock = FakeClock()
    budget = RetryBudget(ratio=0.2, min_per_s=1, window_s=5, clock=clock)
    for step in steps:
        if step == "deposit":
            budget.deposit()
        elif step == "spend":
            budget.try_spend()
        else:
            clock.now += 0.25
        assert budget.tokens >= 0


def test_a_cancel_from_an_engine_that_never_answered_is_a_reset() -> None:
    # A server shutting down cancels calls it accepted but had not started.
    assert classify(grpc.StatusCode.CANCELLED, "CANCELLED", False) is Failure.RESET
    assert classify(grpc.StatusCode.CANCELLED, "CANCELLED", True) is Failure.ANSWERED
