"""The queueing model against closed form: an M/M/c queue's waiting probability (Erlang C)
and mean wait, for a steady load."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loadtest.day.queueing import InSystem, SlotQueue


def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arrival waits in M/M/c with `offered` = lambda / mu erlangs."""
    rho = offered / servers
    top = offered**servers / math.factorial(servers) / (1 - rho)
    bottom = sum(offered**k / math.factorial(k) for k in range(servers)) + top
    return top / bottom


@pytest.mark.parametrize(("servers", "rho"), [(8, 0.8), (4, 0.6)])
def test_fcfs_slots_match_erlang_c_for_an_mmc_queue(servers: int, rho: float) -> None:
    rng = np.random.default_rng(42)
    count, warmup = 400_000, 20_000
    mean_service_s = 1.0
    rate = rho * servers / mean_service_s
    arrivals = np.cumsum(rng.exponential(1 / rate, count))
    work = rng.exponential(mean_service_s, count)
    queue = SlotQueue()
    queue.join(0, servers, 1.0, 0.0)
    served = queue.serve(arrivals.tolist(), work.tolist())
    wait = (served.latency_s - work)[warmup:]  # float rounding: waits under 1 µs are none
    p_wait = erlang_c(servers, rho * servers)
    mean_wait = p_wait / (servers / mean_service_s - rate)
    assert float(np.mean(wait > 1e-6)) == pytest.approx(p_wait, rel=0.03)
    assert float(np.mean(wait)) == pytest.approx(mean_wait, rel=0.05)


def test_service_time_is_work_divided_by_the_engines_speed() -> None:
    queue = SlotQueue()
    queue.join(0, 1, 0.5, 0.0)
    served = queue.serve([1.0], [0.2])
    assert served.finish.tolist() == pytest.approx([1.4])


def test_a_request_waits_for_the_first_slot_to_free() -> None:
    queue = SlotQueue()
    queue.join(0, 2, 1.0, 0.0)
    served = queue.serve([0.0, 0.0, 0.1], [1.0, 3.0, 1.0])
    assert served.finish.tolist() == pytest.approx([1.0, 3.0, 2.0])
    assert served.latency_s.tolist() == pytest.approx([1.0, 3.0, 1.9])


def test_an_engine_that_left_takes_no_new_requests_but_finishes_its_own() -> None:
    queue = SlotQueue()
    queue.join(0, 1, 1.0, 0.0)
    queue.join(1, 1, 1.0, 0.0)
    first = queue.serve([0.0, 0.0], [5.0, 1.0])
    queue.leave(first.engine[0])
    later = queue.serve([0.5, 0.6, 0.7], [1.0, 1.0, 1.0])
    assert set(later.engine.tolist()) == {int(first.engine[1])}
    in_system = InSystem()
    in_system.add(first)
    in_system.add(later)
    counts = in_system.counts(2.0, 2)
    assert counts[first.engine[0]] == 1  # still finishing the 5 s request


def test_requests_wait_in_a_backlog_while_the_pool_has_no_slot() -> None:
    queue = SlotQueue()
    nothing = queue.serve([1.0, 2.0], [1.0, 1.0])
    assert nothing.finish.size == 0
    queue.join(3, 1, 1.0, 10.0)
    served = queue.serve([11.0], [1.0])
    assert served.finish.tolist() == pytest.approx([11.0, 12.0, 13.0])
    assert served.latency_s.tolist() == pytest.approx([10.0, 10.0, 2.0])
