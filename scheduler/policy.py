"""The scheduler's policy file, parsed whole and validated once, so decision code can trust it."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from scheduler.policy_checks import (
    PolicyError,
    Section,
    Where,
    check,
    check_at_least,
    check_name,
    check_unique,
    toml_error,
)
from tidepool.runtime.rules import LANGS as ALL_LANGS
from tidepool.runtime.rules import TIERS as ALL_TIERS
from tidepool.runtime.rules import WEIGHT_MAX, Lang, Tier

__all__ = [
    "DEFAULT_POLICY_TEXT",
    "Lang",
    "LoopPolicy",
    "Policy",
    "PolicyError",
    "PoolPolicy",
    "ProviderPolicy",
    "TenantPolicy",
    "Tier",
    "load_policy",
    "parse_policy",
]

LANGS: Mapping[str, Lang] = MappingProxyType({lang: lang for lang in ALL_LANGS})
TIERS: Mapping[str, Tier] = MappingProxyType({tier: tier for tier in ALL_TIERS})
PROVIDER_TIERS: Mapping[str, Tier] = MappingProxyType(
    {tier: tier for tier in ALL_TIERS if tier != "idc"}
)
PROVIDERS = ("local",)
MAX_ALIASES = 16
DEFAULT_WEIGHT = 100
T = TypeVar("T")


@dataclass(frozen=True)
class LoopPolicy:
    """The control loop's timing. Durations in seconds."""

    interval_s: float
    window_s: float
    """Utilisation is smoothed over this window; at least one interval."""
    cooldown_s: float
    """Per pool, after a move or a scale step."""
    min_stay_s: float
    """An engine that moved stays in its new pool at least this long."""
    drain_timeout_s: float
    """In-flight work an engine may finish before its switch."""
    switch_timeout_s: float
    """A switch not done by then is rolled back."""
    leader_ttl_s: float = 3.0
    """The leadership lease; longer than one interval."""
    expected_switch_s: float = 5.0
    """The model-switch time decisions expect: a deficit shorter than this is not worth a move."""
    start_within_s: float = 60.0
    """A provider tier is usable for scale-up when its start_s is at most this."""
    urgent_start_within_s: float = 10.0
    """The same, for a saturated pool (utilisation >= 1.0)."""
    max_moves_per_tick: int = 2

    def __post_init__(self) -> None:
        durations = ("interval_s", "window_s", "drain_timeout_s", "switch_timeout_s")
        check_at_least(self, durations, 0, strict=True)
        waits = ("cooldown_s", "min_stay_s", "expected_switch_s", "start_within_s")
        check_at_least(self, (*waits, "urgent_start_within_s"), 0)
        check(
            self.window_s >= self.interval_s,
            "window_s",
            f"must be >= interval_s ({self.interval_s}), got {self.window_s}",
        )
        check(
            self.leader_ttl_s > self.interval_s,
            "leader_ttl_s",
            f"must be > interval_s ({self.interval_s}), got {self.leader_ttl_s}",
        )
        check_at_least(self, ("max_moves_per_tick",), 1)


@dataclass(frozen=True)
class PoolPolicy:
    """One pool (and the alias of the same name): its size bounds and utilisation watermarks."""

    name: str
    lang: Lang
    min: int
    max: int
    target_utilization: float
    high_watermark: float
    """Above it the pool needs capacity."""
    low_watermark: float
    """Below it the pool can lend engines."""
    lend_to: tuple[str, ...] = ()
    """Pools that may borrow engines from this one."""
    scale: bool = True
    """Whether the scheduler may ask a provider for engines for this pool."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "lend_to", tuple(self.lend_to))
        check_name(self.name, "name")
        check(self.max >= 1, "max", f"must be >= 1, got {self.max}")
        check(
            0 <= self.min <= self.max,
            "min",
            f"must be between 0 and max ({self.max}), got {self.min}",
        )
        low, target, high = self.low_watermark, self.target_utilization, self.high_watermark
        check(0 < low < 1.0, "low_watermark", f"must be between 0 and 1.0 (exclusive), got {low}")
        check(
            low < high <= 1.0,
            "high_watermark",
            f"must be between low_watermark ({low}) and 1.0, got {high}",
        )
        check(
            low < target < high,
            "target_utilization",
            f"must be between low_watermark ({low}) and high_watermark ({high}), got {target}",
        )
        for index, other in enumerate(self.lend_to):
            check(
                other != self.name, ("lend_to", index), f"a pool cannot lend to itself ({other!r})"
            )
        check_unique(self.lend_to, "lend_to")


@dataclass(frozen=True)
class TenantPolicy:
    """One tenant's alias list for one language, published in this order."""

    tenant: str
    lang: Lang
    aliases: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "aliases", tuple(self.aliases))
        check_name(self.tenant, "tenant")
        count = len(self.aliases)
        check(
            0 < count <= MAX_ALIASES,
            "aliases",
            f"must list 1 to {MAX_ALIASES} aliases, got {count}",
        )
        for index, alias in enumerate(self.aliases):
            check_name(alias, ("aliases", index))
        check_unique(self.aliases, "aliases")


@dataclass(frozen=True)
class ProviderPolicy:
    """A source of extra engines (cvm, serverless tiers); idc is the fixed fleet, not a provider."""

    name: str
    tiers: tuple[Tier, ...]
    start_s: Mapping[Tier, float] = field(hash=False)
    """Seconds from asking to a serving engine, per tier."""
    price_per_hour: Mapping[Tier, float] = field(hash=False)
    """Per engine and tier; idc defaults to 0.0."""
    max_engines: int = 8
    """The most engines the provider runs at once."""
    slots: int = 4
    weight: Mapping[Tier, int] = field(default_factory=dict, hash=False)
    """Routing weight per tier, 1..1000; a listed tier not given gets 100."""
    speed: float = 1.0
    model_load_s: float = 1.0

    def __post_init__(self) -> None:
        weight = {tier: DEFAULT_WEIGHT for tier in self.tiers} | dict(self.weight)
        prices: dict[Tier, float] = {"idc": 0.0, **self.price_per_hour}
        object.__setattr__(self, "tiers", tuple(self.tiers))
        object.__setattr__(self, "start_s", MappingProxyType(dict(self.start_s)))
        object.__setattr__(self, "price_per_hour", MappingProxyType(prices))
        object.__setattr__(self, "weight", MappingProxyType(weight))
        check(bool(self.tiers), "tiers", "must list at least one tier")
        for index, tier in enumerate(self.tiers):
            check(tier != "idc", ("tiers", index), "idc is the fixed fleet, not a provider tier")
            check(
                tier in self.start_s, ("start_s", tier), f"missing; tier {tier} is listed in tiers"
            )
            check(
                tier in prices, ("price_per_hour", tier), f"missing; tier {tier} is listed in tiers"
            )
        check_unique(tuple(self.tiers), "tiers")
        self._check_numbers()

    def _check_numbers(self) -> None:
        for tier, seconds in self.start_s.items():
            check(seconds >= 0, ("start_s", tier), f"must be >= 0, got {seconds}")
        for tier, price in self.price_per_hour.items():
            check(price >= 0, ("price_per_hour", tier), f"must be >= 0, got {price}")
        for tier, weight in self.weight.items():
            check(
                1 <= weight <= WEIGHT_MAX,
                ("weight", tier),
                f"must be between 1 and {WEIGHT_MAX}, got {weight}",
            )
        check_at_least(self, ("max_engines", "model_load_s"), 0)
        check_at_least(self, ("slots",), 1)
        check_at_least(self, ("speed",), 0, strict=True)

    def weight_for(self, tier: Tier) -> int:
        return self.weight.get(tier, DEFAULT_WEIGHT)


@dataclass(frozen=True)
class Policy:
    """The whole policy: loop timing, pools, tenant alias lists and the provider (if scaling)."""

    loop: LoopPolicy
    pools: tuple[PoolPolicy, ...]
    tenants: tuple[TenantPolicy, ...] = ()
    provider: ProviderPolicy | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pools", tuple(self.pools))
        object.__setattr__(self, "tenants", tuple(self.tenants))
        check(bool(self.pools), "pools", "at least one [[pools]] entry is required")
        names = tuple(pool.name for pool in self.pools)
        for index, pool in enumerate(self.pools):
            first = names.index(pool.name)
            check(
                first == index,
                ("pools", index, "name"),
                f"repeats {pool.name!r} (also pools[{first}])",
            )
            for position, other in enumerate(pool.lend_to):
                check(
                    other in names,
                    ("pools", index, "lend_to", position),
                    f"names no pool in this policy, got {other!r}",
                )
        keys = [(tenant.tenant, tenant.lang) for tenant in self.tenants]
        for index, key in enumerate(keys):
            first = keys.index(key)
            check(
                first == index,
                ("tenants", index),
                f"repeats tenant {key[0]!r} for lang {key[1]} (also tenants[{first}])",
            )

    def pool(self, name: str) -> PoolPolicy | None:
        return next((pool for pool in self.pools if pool.name == name), None)

    def lenders_to(self, name: str) -> tuple[PoolPolicy, ...]:
        """The pools that may lend engines to pool `name`, in policy order."""
        return tuple(pool for pool in self.pools if name in pool.lend_to)


def load_policy(path: str | Path) -> Policy:
    """Read and parse a policy file; an unreadable file is a `PolicyError` naming the path."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(f"cannot read: {error.strerror or error}", source=str(path)) from None
    except UnicodeDecodeError as error:
        raise PolicyError(f"not UTF-8 text: {error.reason}", source=str(path)) from None
    return parse_policy(text, source=str(path))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse a whole policy or raise `PolicyError`; nothing partial."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise toml_error(source, error) from None
    root = Section(raw, (), Where(source, text))
    root.only(("scheduler", "pools", "tenants", "providers"))
    scheduler = root.table("scheduler")
    if scheduler is None:
        raise root.fail("scheduler", "missing; the [scheduler] table is required")
    loop = _read_loop(scheduler)
    pools = tuple(_read_pool(entry) for entry in root.tables("pools"))
    tenants = tuple(_read_tenant(entry) for entry in root.tables("tenants"))
    provider = _read_providers(root.table("providers"))
    return _located(root, lambda: Policy(loop, pools, tenants, provider))


def _located(section: Section, build: Callable[[], T]) -> T:
    """Build a dataclass, placing its rule errors under the section's path and line."""
    try:
        return build()
    except PolicyError as error:
        raise section.fail(error.path, error.message) from None


def _keys(items: tuple[Field[Any], ...], skip: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The TOML keys of a section: its dataclass's fields, so the two cannot drift apart."""
    return tuple(item.name for item in items if item.name not in skip)


def _read_loop(section: Section) -> LoopPolicy:
    section.only(_keys(fields(LoopPolicy)))
    numbers = {
        item.name: section.number(item.name, None if item.default is MISSING else item.default)
        for item in fields(LoopPolicy)
        if item.name != "max_moves_per_tick"
    }
    moves = section.integer("max_moves_per_tick", 2)
    return _located(section, lambda: LoopPolicy(**numbers, max_moves_per_tick=moves))


def _read_pool(section: Section) -> PoolPolicy:
    section.only(_keys(fields(PoolPolicy)))
    name, lang = section.string("name"), section.choice("lang", LANGS)
    low, high = section.number("low_watermark"), section.number("high_watermark")
    target = section.number("target_utilization")
    least, most = section.integer("min"), section.integer("max")
    lend_to, scale = section.strings("lend_to", ()), section.boolean("scale", True)
    return _located(
        section,
        lambda: PoolPolicy(
            name=name,
            lang=lang,
            min=least,
            max=most,
            target_utilization=target,
            high_watermark=high,
            low_watermark=low,
            lend_to=lend_to,
            scale=scale,
        ),
    )


def _read_tenant(section: Section) -> TenantPolicy:
    section.only(_keys(fields(TenantPolicy)))
    tenant, lang = section.string("tenant"), section.choice("lang", LANGS)
    aliases = section.strings("aliases")
    return _located(section, lambda: TenantPolicy(tenant, lang, aliases))


def _read_providers(section: Section | None) -> ProviderPolicy | None:
    if section is None:
        return None
    section.only(PROVIDERS, what="provider")
    local = section.table("local")
    return None if local is None else _read_provider(local)


def _read_provider(section: Section) -> ProviderPolicy:
    section.only(_keys(fields(ProviderPolicy), skip=("name",)))
    tiers = tuple(
        _tier(section, index, name) for index, name in enumerate(section.strings("tiers"))
    )
    start_s = _tier_numbers(section, "start_s", PROVIDER_TIERS)
    prices = _tier_numbers(section, "price_per_hour", TIERS)
    weights = _tier_weights(section)
    max_engines, slots = section.integer("max_engines", 8), section.integer("slots", 4)
    speed, load_s = section.number("speed", 1.0), section.number("model_load_s", 1.0)
    return _located(
        section,
        lambda: ProviderPolicy(
            name="local",
            tiers=tiers,
            start_s=start_s,
            price_per_hour=prices,
            max_engines=max_engines,
            slots=slots,
            weight=weights,
            speed=speed,
            model_load_s=load_s,
        ),
    )


def _tier(section: Section, index: int, name: str) -> Tier:
    if name not in TIERS:
        known = ", ".join(PROVIDER_TIERS)
        raise section.fail(("tiers", index), f"must be one of {known}, got {name!r}")
    return TIERS[name]


def _tier_numbers(section: Section, key: str, known: Mapping[str, Tier]) -> dict[Tier, float]:
    table = section.table(key)
    if table is None:
        raise section.fail(key, "missing; this table is required")
    table.only(tuple(known))
    return {known[name]: table.number(name) for name in table.raw}


def _tier_weights(section: Section) -> dict[Tier, int]:
    table = section.table("weight")
    if table is None:
        return {}
    table.only(tuple(PROVIDER_TIERS))
    return {PROVIDER_TIERS[name]: table.integer(name) for name in table.raw}


DEFAULT_POLICY_TEXT = """\
# The pool scheduler's policy for `tidepool up`: two public pools lending to each other,
# and a local provider that adds cvm and serverless engines when both are busy.

[scheduler]
interval_s = 1.0          # control-loop period
window_s = 10.0           # utilisation smoothing window
cooldown_s = 15.0         # per pool, after a move or a scale step
min_stay_s = 30.0         # an engine that moved stays at least this long
drain_timeout_s = 10.0    # in-flight work an engine may finish before its switch
switch_timeout_s = 60.0   # a switch not done by then is rolled back

[[pools]]
name = "zh-public"        # also the alias name
lang = "zh"
min = 1
max = 8
target_utilization = 0.6
high_watermark = 0.8      # above: the pool needs capacity
low_watermark = 0.3       # below: the pool can lend
lend_to = ["en-public"]   # pools that may borrow engines from this one

[[pools]]
name = "en-public"
lang = "en"
min = 1
max = 8
target_utilization = 0.6
high_watermark = 0.8
low_watermark = 0.3
lend_to = ["zh-public"]

[providers.local]
tiers = ["cvm", "serverless"]
start_s = { cvm = 5.0, serverless = 1.0 }
price_per_hour = { idc = 0.0, cvm = 1.0, serverless = 2.5 }
max_engines = 4
"""
