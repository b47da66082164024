"""A day at a quarter of the requests: engines of one slot and a quarter of the traffic keep
the engine counts (and so the scheduler's decisions) of the full day, in a quarter the time."""

from __future__ import annotations

import pytest

from loadtest.day.day_policy import DAY_POLICY_TEXT
from loadtest.day.fleet_config import DEFAULT_FLEET_TEXT, FleetConfig, parse_fleet
from loadtest.day.traffic import Trace, profile
from scheduler.policy import Policy, parse_policy

QUARTER = 0.25


def quarter(trace: Trace) -> Trace:
    return Trace(
        trace.name, {key: tuple(r * QUARTER for r in rates) for key, rates in trace.streams.items()}
    )


@pytest.fixture(scope="session")
def small_fleet() -> FleetConfig:
    return parse_fleet(DEFAULT_FLEET_TEXT.replace("slots = 4", "slots = 1"))


@pytest.fixture(scope="session")
def day_policy(small_fleet: FleetConfig) -> Policy:
    return small_fleet.for_policy(parse_policy(DAY_POLICY_TEXT))


@pytest.fixture(scope="session")
def weekday() -> Trace:
    return quarter(profile("weekday"))
