"""Every process's settings are declared once, as config fields, with units in time names."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest

from engine_stub.config import EngineStubConfig, FaultConfig
from registry.config import RegistryConfig
from router.config import RouterConfig
from scheduler.config import SchedulerConfig
from tidepool.runtime.options import OPTION_KEY, options_for, setting, whole
from tidepool.up import UpConfig

CONFIGS = [EngineStubConfig, FaultConfig, RegistryConfig, RouterConfig, SchedulerConfig, UpConfig]
NESTED = {(EngineStubConfig, "faults")}
"""Fields that hold another config whose own fields are the options."""
TIME_WORDS = {"timeout", "interval", "ttl", "grace", "deadline", "latency", "seconds", "delay"}
TIME_WORDS |= {"window", "hold", "load", "after", "idle", "age"}
"""A float field whose name has one of these words is a duration: it must end in `_s`..."""
NOT_TIME = ("_percentile", "_margin", "_percent", "_ratio", "_threshold", "_bytes", "_rate")
"""...unless its name ends in another unit (`attempt_timeout_margin` is a factor)."""


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_is_an_option(config: type) -> None:
    plain = [
        f.name
        for f in fields(config)
        if OPTION_KEY not in f.metadata and (config, f.name) not in NESTED
    ]
    assert not plain, f"{config.__name__}: fields without setting(...): {plain}"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.__name__)
def test_time_fields_say_their_unit(config: type) -> None:
    unitless = [
        f.name
        for f in fields(config)
        if TIME_WORDS & set(f.name.split("_"))
        and not f.name.endswith(NOT_TIME)
        and not f.name.endswith("_s")
        and f.type in ("float", float)
    ]
    assert not unitless, f"{config.__name__}: time fields without _s: {unitless}"


def test_options_follow_the_fields_defaults_and_prefixes() -> None:
    @dataclass(frozen=True)
    class Example:
        wait_s: float = setting(1.5, "how long")
        count: int = setting(3, "how many", whole(1), env="SHARED_COUNT")

    options = options_for(Example, "TIDEPOOL_X_", prefix="ex_")
    assert [(o.name, o.env, o.default, o.flag) for o in options] == [
        ("ex_wait_s", "TIDEPOOL_X_EX_WAIT_S", 1.5, "--ex-wait-s"),
        ("ex_count", "SHARED_COUNT", 3, "--ex-count"),
    ]
    assert options[1].parse("7") == 7
    with pytest.raises(ValueError, match="must be 1 or more, got 0"):
        options[1].parse("0")
