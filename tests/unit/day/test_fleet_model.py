"""The simulated fleet obeys the scheduler's actions with the fleet file's times and prices."""

from __future__ import annotations

import pytest

from loadtest.day.fleet_config import DEFAULT_FLEET_TEXT, FleetError, parse_fleet
from loadtest.day.fleet_model import SimFleet
from scheduler.actions import Drain, Restore, SetPool, SwitchModel
from scheduler.policy import Policy

FLEET = parse_fleet(DEFAULT_FLEET_TEXT)


def _fleet() -> SimFleet:
    sim = SimFleet(FLEET, drain_timeout_s=60.0)
    sim.add_owned("zh", "zh-public", 1)
    sim.add_owned("en", "en-public", 1)
    sim.sync(0.0)
    return sim


def test_a_started_engine_registers_after_its_tiers_start_time() -> None:
    sim = _fleet()
    sim.start("zh-public", "zh", "cvm", 2, now=100.0)
    assert sim.starting() == {"zh-public": 2}
    assert sim.running() == 2
    sim.advance(100.0 + 179.0)
    assert len(sim.snapshot(279.0)) == 2  # the owned ones only
    sim.advance(280.0)
    joined = [e for e in sim.snapshot(280.0) if e.provider]
    expected = ("zh-public", "zh-public", "cvm", True)
    assert [(e.pool, e.home, e.tier, e.ready) for e in joined] == [expected] * 2
    assert sim.queues["zh-public"].size == 3


def test_a_model_switch_takes_the_fleets_switch_time_and_the_engine_stays_drained() -> None:
    sim = _fleet()
    engine = next(e for e in sim.snapshot(0.0) if e.lang == "en")
    sim.apply(Drain(engine.id), 10.0)
    sim.apply(SwitchModel(engine.id, "zh"), 10.0)
    sim.advance(69.0)
    assert sim.engines[engine.id].state == "switching"
    sim.advance(70.0)
    assert (sim.engines[engine.id].state, sim.engines[engine.id].lang) == ("ready", "zh")
    assert sim.queues["en-public"].size == 0  # still drained: serves nowhere
    sim.apply(SetPool(engine.id, "zh-public", "en-public"), 70.0)
    sim.apply(Restore(engine.id), 70.0)
    assert sim.queues["zh-public"].size == 2
    assert sim.engines[engine.id].home == "en-public"


def test_a_retired_engine_stops_once_idle_and_is_billed_from_the_request() -> None:
    sim = _fleet()
    sim.start("zh-public", "zh", "serverless", 1, now=0.0)
    sim.advance(20.0)
    engine_id = next(e.id for e in sim.snapshot(20.0) if e.provider)
    served = sim.serve("zh-public", [20.0, 20.0, 20.0, 20.0, 20.0], [30.0] * 5)
    assert int(sum(served.engine == sim.engines[engine_id].number)) > 0
    sim.retire(engine_id, 21.0)
    sim.advance(40.0)
    assert engine_id in sim.engines  # still finishing its requests
    sim.advance(3600.0)
    assert engine_id not in sim.engines
    sim.close(7200.0)
    assert sim.engine_s["serverless"] == pytest.approx(3600.0)
    assert sim.engine_s["idc"] == pytest.approx(2 * 7200.0)


def test_the_fleet_figures_reach_the_schedulers_provider(day_policy: Policy) -> None:
    assert day_policy.provider is not None
    assert dict(day_policy.provider.start_s) == {"cvm": 180.0, "serverless": 20.0}
    assert day_policy.provider.price_per_hour["serverless"] == 1.5
    assert day_policy.provider.slots == 1  # the small fleet's


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("price_per_hour = 1.5", "price_per_hour = -1"), "tiers.serverless.price_per_hour"),
        (("zh = 7", "zh = 7.5"), "owned.zh: must be a whole number"),
        (("switch_s = 60.0", "switch_s = 'slow'"), "switch_s: must be a number"),
        (("[owned]", "[owned]\nfr = 1"), "owned.fr: unknown key"),
        (("start_s = 20.0", ""), "tiers.serverless.start_s"),
    ],
)
def test_a_bad_fleet_file_names_the_key(edit: tuple[str, str], message: str) -> None:
    with pytest.raises(FleetError, match=message.replace(".", r"\.")):
        parse_fleet(DEFAULT_FLEET_TEXT.replace(*edit), source="fleet.toml")
