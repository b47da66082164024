"""The one retry decision (`retry.decide`): retry, eject or give up, the same on every data path."""

from __future__ import annotations

import grpc
from hypothesis import given
from hypothesis import strategies as st

from router.retry import MIN_ATTEMPT_S, Failure, RetryPolicy, Verdict, decide

UNARY = "/pkg.S/Evaluate"
POLICY = RetryPolicy(max_attempts=3, idempotent_methods=(UNARY,))


def test_a_connect_failure_is_retried_unbudgeted_and_ejects() -> None:
    decision = decide(POLICY, "/pkg.S/Other", Failure.CONNECT, grpc.StatusCode.UNAVAILABLE, 1,
                      1.0, replayable=True)  # fmt: skip
    assert (decision.verdict, decision.eject, decision.budgeted) == (Verdict.RETRY, True, False)


def test_unavailable_from_an_engine_is_retried_only_for_idempotent_methods() -> None:
    code = grpc.StatusCode.UNAVAILABLE
    assert decide(POLICY, UNARY, Failure.ANSWERED, code, 1, 1.0, True).verdict is Verdict.RETRY
    other = decide(POLICY, "/pkg.S/Other", Failure.ANSWERED, code, 1, 1.0, True)
    assert (other.verdict, other.eject) == (Verdict.GIVE_UP, True)


def test_an_application_error_neither_retries_nor_ejects() -> None:
    decision = decide(POLICY, UNARY, Failure.ANSWERED, grpc.StatusCode.NOT_FOUND, 1, 1.0, True)
    assert (decision.verdict, decision.eject) == (Verdict.GIVE_UP, False)


@given(
    failure=st.sampled_from(Failure),
    code=st.sampled_from(grpc.StatusCode),
    attempts=st.integers(1, 6),
    time_left=st.floats(0.0, 10.0),
    replayable=st.booleans(),
)
def test_never_retries_what_is_not_replayable_past_max_attempts_or_out_of_time(
    failure: Failure, code: grpc.StatusCode, attempts: int, time_left: float, replayable: bool
) -> None:
    decision = decide(POLICY, UNARY, failure, code, attempts, time_left, replayable)
    if decision.verdict is Verdict.RETRY:
        assert replayable
        assert attempts < POLICY.max_attempts
        assert time_left >= MIN_ATTEMPT_S
        assert POLICY.retryable(UNARY, failure, code)
    assert decision.eject == POLICY.ejects(failure, code)  # ejection never depends on retrying
    assert decision.budgeted == (
        decision.verdict is Verdict.RETRY and failure not in (Failure.CONNECT, Failure.REFUSED)
    )


def test_a_refused_stream_is_retried_unbudgeted_and_never_ejects() -> None:
    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        decision = decide(POLICY, "/pkg.S/Other", Failure.REFUSED, code, 1, 1.0, True)
        assert (decision.verdict, decision.eject, decision.budgeted) == (
            Verdict.RETRY, False, False
        )  # fmt: skip
    assert decide(POLICY, UNARY, Failure.REFUSED, grpc.StatusCode.UNAVAILABLE, 3, 1.0,
                  True).verdict is Verdict.GIVE_UP  # fmt: skip
