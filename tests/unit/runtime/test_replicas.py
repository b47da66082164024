"""Registry address lists and the rotation between replicas (pure)."""

from __future__ import annotations

import pytest

from tidepool.runtime.backoff import Backoff
from tidepool.runtime.replicas import ReplicaRotation, parse_addresses


def test_addresses_are_split_and_checked() -> None:
    assert parse_addresses("127.0.0.1:7700, [::1]:7702") == ("127.0.0.1:7700", "[::1]:7702")


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", "expected HOST:PORT"),
        ("127.0.0.1:7700,nope", "expected HOST:PORT, got 'nope'"),
        ("127.0.0.1:7700,127.0.0.1:7700", "given twice"),
        (",".join(f"127.0.0.1:{7700 + i}" for i in range(17)), "at most 16"),
    ],
)
def test_bad_address_lists_say_the_rule(text: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        parse_addresses(text)


def _rotation(n: int) -> ReplicaRotation:
    # rng 1.0: every delay is the full ceiling, so the figures are exact.
    return ReplicaRotation([f"r{i}:1" for i in range(n)], Backoff(0.1, 1.0, rng=lambda: 1.0))


def test_a_failure_moves_to_the_next_replica_at_once() -> None:
    rotation = _rotation(3)
    assert rotation.current == "r0:1"
    assert rotation.failed() == 0.0
    assert rotation.current == "r1:1"
    assert rotation.failed() == 0.0
    assert rotation.current == "r2:1"


def test_only_a_whole_round_of_failures_waits_with_capped_backoff() -> None:
    rotation = _rotation(2)
    delays = [rotation.failed() for _ in range(12)]
    assert delays[0] == 0.0
    assert delays[1] == pytest.approx(0.1)
    assert max(delays) == pytest.approx(1.0)
    assert rotation.current == "r0:1"


def test_success_resets_the_round_and_the_backoff() -> None:
    rotation = _rotation(2)
    for _ in range(6):
        rotation.failed()
    rotation.succeeded()
    assert rotation.failed() == 0.0
    assert rotation.failed() == pytest.approx(0.1)


def test_one_replica_waits_after_each_failure() -> None:
    rotation = _rotation(1)
    assert rotation.failed() == pytest.approx(0.1)
    assert rotation.current == "r0:1"
