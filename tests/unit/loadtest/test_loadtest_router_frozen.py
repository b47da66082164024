"""The frozen-engine benchmark's pure parts: the tap's frame walk, verdicts, HAProxy config."""

from __future__ import annotations

import argparse

from loadtest.router_frozen import H2_PREFACE, FrameCounter, Trial, analyse, haproxy_config


def frame(kind: int, payload: bytes, stream: int = 1) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, 0]) + stream.to_bytes(4, "big") + payload


def test_the_tap_dates_each_headers_frame_whatever_the_reads_cut() -> None:
    seen: list[float] = []
    counter = FrameCounter(seen)
    wire = H2_PREFACE + frame(0x4, b"") + frame(0x1, b"abc") + frame(0x0, b"x" * 40)
    wire += frame(0x1, b"de", stream=3) + frame(0x6, b"12345678", stream=0)
    for at, index in enumerate(range(0, len(wire), 7)):  # reads of 7 bytes
        counter.feed(wire[index : index + 7], float(at))
    assert len(seen) == 2  # the two HEADERS; SETTINGS, DATA and PING are not calls
    assert seen == sorted(seen)


def test_a_trial_counts_losses_windows_and_calls_to_the_frozen_engine() -> None:
    args = argparse.Namespace(freeze_at=5.0, after_s=5.0)
    outcomes = [
        (0.5, 9.9, "OK", "e1"),  # warming up: left out of "before"
        *((1.0 + i / 100, 0.05, "OK", "e1") for i in range(400)),
        (5.5, 0.2, "OK", "e3"),  # hedged past the frozen engine
        (6.0, 5.0, "DEADLINE_EXCEEDED", ""),
    ]
    trial = Trial("relay", 1)
    analyse(trial, outcomes, args, [99.0, 100.1, 100.3, 109.0], frozen_at=100.0, thawed_at=108.0)
    assert trial.lost == {"DEADLINE_EXCEEDED": 1}
    assert trial.p99_before_ms is not None
    assert round(trial.p99_before_ms) == 50
    assert trial.p99_after_ms is not None
    assert round(trial.p99_after_ms) == 200
    assert trial.calls_to_frozen == 2
    assert trial.reached_frozen_s is not None
    assert abs(trial.reached_frozen_s - 0.3) < 1e-9


def test_haproxy_retries_only_in_its_retry_configuration() -> None:
    upstreams = [("127.0.0.1:1", 100), ("127.0.0.1:2", 100)]
    plain = haproxy_config("127.0.0.1:9", upstreams, retry=False)
    retrying = haproxy_config("127.0.0.1:9", upstreams, retry=True)
    assert "retry-on" not in plain
    assert "timeout server 30s" in plain
    assert "retry-on response-timeout" in retrying
    assert "timeout server 1s" in retrying
    assert plain.count("proto h2 weight 100 check") == 2
