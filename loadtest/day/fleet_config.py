"""The simulated fleet's physics and prices (`--fleet FILE.toml`), read once and validated.

The fleet file is the truth of the simulated world: what each tier costs per
engine-hour, how long it takes to get one, its slots, speed and weight, how
long a model switch takes, and how many idc engines are owned per language.
The scheduler policy's provider gets these figures too (`for_policy`), so the
scheduler decides on the world it runs in.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from scheduler.policy import Policy, Tier

TIER_NAMES: tuple[Tier, ...] = ("idc", "cvm", "serverless")

DEFAULT_FLEET_TEXT = """\
# The simulated fleet of `tidepool loadtest day` (prices per engine-hour).
switch_s = 60.0           # a model switch (unload one language, load the other)

[tiers.idc]               # owned bare metal: paid all day, amortised
price_per_hour = 0.8
slots = 4
speed = 0.8               # an older card: 80 % of a cloud card's throughput
weight = 80

[tiers.cvm]               # reserved cloud VMs: minutes to boot and load
price_per_hour = 1.0
start_s = 180.0
slots = 4
speed = 1.0
weight = 100

[tiers.serverless]        # serverless GPU containers: seconds to start, billed while up
price_per_hour = 1.5
start_s = 20.0
slots = 4
speed = 1.0
weight = 100

[owned]                   # idc engines per language (autoscale and tidepool start from these)
zh = 7
en = 7
"""


class FleetError(ValueError):
    """A fleet file that cannot be used; the message names the key."""


@dataclass(frozen=True)
class TierSpec:
    price_per_hour: float
    start_s: float
    slots: int
    speed: float
    weight: int


@dataclass(frozen=True)
class FleetConfig:
    tiers: Mapping[str, TierSpec]
    switch_s: float
    owned: Mapping[str, int]

    def for_policy(self, policy: Policy) -> Policy:
        """The policy with its provider's start times, prices, slots, speed and weights taken
        from this fleet (its tiers and max_engines are kept)."""
        provider = policy.provider
        if provider is None:
            return policy
        first = self.tiers[provider.tiers[0]]
        return replace(
            policy,
            provider=replace(
                provider,
                start_s={t: self.tiers[t].start_s for t in provider.tiers},
                price_per_hour={t: self.tiers[t].price_per_hour for t in TIER_NAMES},
                slots=first.slots,
                speed=first.speed,
                weight={t: self.tiers[t].weight for t in provider.tiers},
                model_load_s=self.switch_s,
            ),
        )


def parse_fleet(text: str, source: str = "<fleet>") -> FleetConfig:
    """Parse and validate a fleet file; `FleetError` names the file and the key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise FleetError(f"{source}: not valid TOML: {error}") from None
    _only(raw, ("switch_s", "tiers", "owned"), source, "")
    tiers_raw = _table(raw, "tiers", source)
    _only(tiers_raw, TIER_NAMES, source, "tiers.")
    tiers: dict[str, TierSpec] = {name: _tier(tiers_raw, name, source) for name in TIER_NAMES}
    owned_raw = _table(raw, "owned", source)
    _only(owned_raw, ("zh", "en"), source, "owned.")
    owned = {
        lang: int(_number(owned_raw, lang, source, "owned.", whole=True)) for lang in owned_raw
    }
    switch_s = _number(raw, "switch_s", source, "")
    return FleetConfig(MappingProxyType(tiers), switch_s, MappingProxyType(owned))


def _only(table: Mapping[str, Any], known: tuple[str, ...], source: str, prefix: str) -> None:
    for key in table:
        if key not in known:
            raise FleetError(f"{source}: {prefix}{key}: unknown key; known: {', '.join(known)}")


def _table(raw: Mapping[str, Any], key: str, source: str, prefix: str = "") -> Mapping[str, Any]:
    value = raw.get(key)
    if not isinstance(value, dict):
        raise FleetError(f"{source}: {prefix}{key}: missing; this table is required")
    return value


def _number(
    table: Mapping[str, Any], key: str, source: str, prefix: str, *, whole: bool = False
) -> float:
    value = table.get(key)
    kinds = int if whole else int | float
    if isinstance(value, kinds) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and number >= 0:
            return number
    noun = "a whole number" if whole else "a number"
    raise FleetError(f"{source}: {prefix}{key}: must be {noun} >= 0, got {value!r}")


def _tier(tiers: Mapping[str, Any], name: str, source: str) -> TierSpec:
    table = _table(tiers, name, source, "tiers.")
    prefix = f"tiers.{name}."
    keys = ("price_per_hour", "slots", "speed", "weight")
    _only(table, (*keys, *(() if name == "idc" else ("start_s",))), source, prefix)
    slots = int(_number(table, "slots", source, prefix, whole=True))
    speed = _number(table, "speed", source, prefix)
    weight = int(_number(table, "weight", source, prefix, whole=True))
    if slots < 1 or speed <= 0 or not 1 <= weight <= 1000:
        raise FleetError(
            f"{source}: {prefix}slots/speed/weight: need slots >= 1, speed > 0, weight 1-1000,"
            f" got {slots}, {speed}, {weight}"
        )
    start_s = 0.0 if name == "idc" else _number(table, "start_s", source, prefix)
    price = _number(table, "price_per_hour", source, prefix)
    return TierSpec(price, start_s, slots, speed, weight)
