"""The day simulator drives the scheduler's own policy, repeats with a seed, and does not
flatter tidepool when the tides do not help."""

from __future__ import annotations

from dataclasses import replace

from loadtest.day.arrivals import draw
from loadtest.day.day_policy import DAY_POLICY_TEXT
from loadtest.day.fleet_config import FleetConfig
from loadtest.day.report import Summary, summarize
from loadtest.day.simulate import run_day
from loadtest.day.traffic import Trace
from scheduler.policy import Policy, parse_policy

HALF_DAY_S = 12 * 3600.0


def _day(
    strategy: str,
    policy: Policy,
    fleet: FleetConfig,
    trace: Trace,
    seed: int = 1,
    day_s: float = HALF_DAY_S,
) -> Summary:
    run = run_day(strategy, policy, fleet, trace, draw(trace, seed), day_s=day_s)
    return replace(summarize(run, fleet, trace.peak_window_s(), 1000.0), wall_s=0.0)


def test_the_same_seed_gives_the_same_day(
    day_policy: Policy, small_fleet: FleetConfig, weekday: Trace
) -> None:
    first = _day("tidepool", day_policy, small_fleet, weekday, seed=3)
    again = _day("tidepool", day_policy, small_fleet, weekday, seed=3)
    other = _day("tidepool", day_policy, small_fleet, weekday, seed=4)
    assert first == again
    assert first.requests != other.requests


def test_a_threshold_in_the_policy_file_changes_what_tidepool_does(
    day_policy: Policy, small_fleet: FleetConfig, weekday: Trace
) -> None:
    # Pools that must idle below 1 % before they lend never lend in a weekday morning.
    text = DAY_POLICY_TEXT.replace("low_watermark = 0.3", "low_watermark = 0.01")
    stingy = small_fleet.for_policy(parse_policy(text))
    lending = _day("tidepool", day_policy, small_fleet, weekday)
    hoarding = _day("tidepool", stingy, small_fleet, weekday)
    assert lending.moves > 0
    assert hoarding.moves == 0
    assert hoarding.peak_engines_started > lending.peak_engines_started
    assert hoarding.cost > lending.cost


def test_static_pools_never_change_and_autoscale_scales_on_the_morning_peak(
    day_policy: Policy, small_fleet: FleetConfig, weekday: Trace
) -> None:
    static = _day("static", day_policy, small_fleet, weekday)
    auto = _day("autoscale", day_policy, small_fleet, weekday)
    assert (static.scale_outs, static.moves, static.gpu_hours["cvm"]) == (0, 0, 0.0)
    assert auto.peak_scale_outs > 0
    assert auto.moves == 0
    assert static.requests == auto.requests


def test_when_both_languages_peak_together_tides_save_little(
    day_policy: Policy, small_fleet: FleetConfig, weekday: Trace
) -> None:
    together = Trace("together", {**weekday.streams, ("", "en"): weekday.streams[("", "zh")]})
    auto = _day("autoscale", day_policy, small_fleet, together, day_s=86400.0)
    tide = _day("tidepool", day_policy, small_fleet, together, day_s=86400.0)
    assert tide.moves <= 2
    assert abs(tide.cost / auto.cost - 1) < 0.03
