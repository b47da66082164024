"""What a load run is told to do: the config, its validation and the errors of a run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from tidepool.runtime.channel import auth_metadata
from tidepool.runtime.options import parse_host_port

KINDS = ("unary", "stream")
"""Call kinds: unary `Evaluate` and client-streaming `EvaluateStream`."""
METHODS = (
    "/tidepool.engine.v1.Evaluator/Evaluate",
    "/tidepool.engine.v1.Evaluator/EvaluateStream",
)
# The routing contract of DESIGN §3 (the router reads the same keys).
ALIAS_KEY, TENANT_KEY, LANG_KEY = "x-tidepool-alias", "x-tidepool-tenant", "x-tidepool-lang"
TEXTS = {"zh": "ni hao shi jie", "en": "hello world"}
"""A short reference text per language the engines serve (its keys are the languages)."""
DEFAULT_LANG = "zh"
MAX_ERROR_RATE = 0.01
"""Default share of calls that may fail before the run exits 3."""
PROGRESS_INTERVAL_S = 1.0
START_DELAY_S = 0.2
"""Workers start together this long after the parent sends the start time."""
READY_TIMEOUT_GRACE_S = 30.0
"""Time for a spawned worker to import grpc, beyond the connect timeout."""
EARLY_S = 0.0005
"""Send this close to the due time rather than sleep again (uvloop timers have 1 ms ticks)."""
MAX_SLEEP_S = 0.1
"""Longest sleep between stop checks, so `stop()` takes effect at low rates too."""
YIELD_EVERY = 64
"""Yield after this many launches in a row so the launched calls actually start."""


class LoadError(Exception):
    """The load run could not be carried out (a worker died or went silent)."""


class TargetUnreachableError(LoadError):
    """No connection to the target could be made before the run started."""


class LoadConfigError(ValueError):
    """A LoadConfig field is out of range; `field` names it."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name
        self.problem = problem


class LangConflictError(LoadConfigError):
    """`lang` names another language than the routing key `other` (a field) implies."""

    def __init__(self, lang: str, other: str, other_value: str, implied: str) -> None:
        super().__init__("lang", f"{lang!r} contradicts {other} {other_value!r} ({implied})")
        self.lang = lang
        self.other = other
        self.other_value = other_value
        self.implied = implied


def alias_lang(alias: str) -> str | None:
    """The language an alias's name implies: `zh-…` or `…-zh` is zh, likewise en.

    None when the name implies none, or both (`zh-to-en`): a guess there would
    be as likely wrong as right.
    """
    implied = {lang for lang in TEXTS if alias.startswith(f"{lang}-") or alias.endswith(f"-{lang}")}
    return implied.pop() if len(implied) == 1 else None


@dataclass(frozen=True)
class LoadConfig:
    """What load to offer and where. Durations in seconds, rates per second."""

    target: str
    """host:port of an Evaluator: a router, or an engine directly."""
    rate_per_s: float = 100.0
    """Open loop: mean arrival rate over all processes."""
    duration_s: float = 10.0
    processes: int = 1
    mix: Mapping[str, float] = field(default_factory=lambda: {"unary": 1.0})
    """Relative weights of the call kinds in KINDS."""
    chunks: int = 4
    """Messages per EvaluateStream call."""
    audio_bytes: int = 1024
    lang: str | None = None
    """The requests' lang field; unset: the language the route implies (see
    `request_lang`), else zh. Set and contradicting the route: LangConflictError."""
    text: str | None = None
    """Reference text; unset: a short phrase in `lang`."""
    alias: str | None = None
    tenant: str | None = None
    route_lang: str | None = None
    """x-tidepool-lang; unset: `request_lang` when a tenant is given, else not sent."""
    token: str | None = None
    timeout_s: float = 10.0
    """Per-call deadline."""
    concurrency: int | None = None
    """Closed loop with this many callers instead of `rate_per_s`."""
    max_in_flight: int = 10_000
    """Arrivals beyond this many unanswered calls are dropped (and counted)."""
    seed: int = 1
    late_after_s: float = 0.01
    """An arrival sent later than this past its scheduled time counts as late."""
    connect_timeout_s: float = 5.0
    channels: int = 1
    """gRPC channels (TCP connections) per process."""
    max_error_rate: float = MAX_ERROR_RATE
    """Fraction of calls sent (0 to 1) that may fail before the run is judged failed."""

    def __post_init__(self) -> None:
        try:
            parse_host_port(self.target)
        except ValueError as exc:
            raise LoadConfigError("target", str(exc)) from None
        bad_mix = sorted(set(self.mix) - set(KINDS))
        checks = (
            (self.rate_per_s > 0, "rate_per_s", "must be above 0"),
            (self.duration_s > 0, "duration_s", "must be above 0"),
            (self.processes >= 1, "processes", "must be 1 or more"),
            (not bad_mix, "mix", f"kinds are {', '.join(KINDS)}, not {bad_mix}"),
            (all(w >= 0 for w in self.mix.values()), "mix", "weights must be 0 or more"),
            (sum(self.mix.values()) > 0, "mix", "needs a weight above 0"),
            (self.chunks >= 1, "chunks", "must be 1 or more"),
            (self.audio_bytes >= 1, "audio_bytes", "must be 1 or more"),
            (self.lang != "", "lang", "must not be empty"),
            (self.timeout_s > 0, "timeout_s", "must be above 0"),
            (self.concurrency is None or self.concurrency >= 1, "concurrency", "must be 1+"),
            (self.max_in_flight >= 1, "max_in_flight", "must be 1 or more"),
            (self.late_after_s >= 0, "late_after_s", "must be 0 or more"),
            (self.connect_timeout_s > 0, "connect_timeout_s", "must be above 0"),
            (self.channels >= 1, "channels", "must be 1 or more"),
            (0 <= self.max_error_rate <= 1, "max_error_rate", "must be a fraction from 0 to 1"),
        )
        for ok, name, problem in checks:
            if not ok:
                raise LoadConfigError(name, f"{problem}, got {getattr(self, name)!r}")
        route = self.route_lang_source()
        if self.lang and route is not None and route[2] != self.lang:
            raise LangConflictError(self.lang, *route)

    def route_lang_source(self) -> tuple[str, str, str] | None:
        """The routing key that implies a language: (field, its value, the language).

        The alias, when its name implies one (the router routes by an alias
        first, ignoring a tenant), else `route_lang` when a tenant is given.
        """
        if self.alias:
            implied = alias_lang(self.alias)
            return None if implied is None else ("alias", self.alias, implied)
        if self.tenant and self.route_lang:
            return ("route_lang", self.route_lang, self.route_lang)
        return None

    @property
    def request_lang(self) -> str:
        """The lang field the requests carry: `lang`, else the route's, else zh."""
        route = self.route_lang_source()
        return self.lang or (route[2] if route else DEFAULT_LANG)

    @property
    def stream_fraction(self) -> float:
        return self.mix.get("stream", 0.0) / sum(self.mix.values())

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata: the bearer token and the routing keys that are set."""
        pairs = list(auth_metadata(self.token))
        if self.alias:
            pairs.append((ALIAS_KEY, self.alias))
        if self.tenant:
            pairs.append((TENANT_KEY, self.tenant))
        route_lang = self.route_lang or (self.request_lang if self.tenant else None)
        if route_lang:
            pairs.append((LANG_KEY, route_lang))
        return tuple(pairs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings; the token itself is never written out."""
        data = asdict(self)
        data["mix"] = dict(self.mix)
        data["token"] = "<set>" if self.token else None
        data["request_lang"] = self.request_lang
        return data
