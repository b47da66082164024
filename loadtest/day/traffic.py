"""A day of offered traffic: request rates per (tenant, language) for each minute (pure).

Built-in profiles and CSV traces both become a `Trace`: one rate (requests per
second) per stream and minute, held for the whole minute. The morning-peak
window used to count peak scale-outs is derived from the trace itself (the
hours around the Chinese maximum), so a CSV trace gets one too.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MINUTES = 1440
DAY_S = MINUTES * 60.0
LANGS = ("zh", "en")
PEAK_HALF_WIDTH_MIN = 120
"""The morning-peak window is the Chinese maximum minute ± 2 hours."""
HEADER = ("minute", "tenant", "lang", "rate")
StreamKey = tuple[str, str]
"""(tenant, lang); tenant "" is the public traffic of the language."""


class TraceError(ValueError):
    """A trace that cannot be used; `line` is the CSV line (1-based) or None."""

    def __init__(self, message: str, *, source: str = "<trace>", line: int | None = None) -> None:
        self.message, self.source, self.line = message, source, line
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Trace:
    """Rates in requests per second, `MINUTES` values per (tenant, lang) stream."""

    name: str
    streams: Mapping[StreamKey, tuple[float, ...]]

    def lang_rates(self, lang: str) -> list[float]:
        """The language's total rate per minute, all tenants together."""
        total = [0.0] * MINUTES
        for (_tenant, stream_lang), rates in self.streams.items():
            if stream_lang == lang:
                total = [a + b for a, b in zip(total, rates, strict=True)]
        return total

    def peak_rate(self, lang: str) -> float:
        return max(self.lang_rates(lang))

    def peak_window_s(self) -> tuple[float, float]:
        """The morning-peak window [start, end) in seconds of the day: the first minute of
        the Chinese maximum ± `PEAK_HALF_WIDTH_MIN`, clipped to the day."""
        rates = self.lang_rates("zh")
        top = rates.index(max(rates))
        start = max(0, top - PEAK_HALF_WIDTH_MIN)
        end = min(MINUTES, top + PEAK_HALF_WIDTH_MIN)
        return start * 60.0, end * 60.0


def hourly(points: Sequence[float]) -> tuple[float, ...]:
    """Per-minute rates from 24 hourly anchors, linear in between (23:00 runs back to 00:00)."""
    if len(points) != 24:
        raise ValueError(f"need 24 hourly points, got {len(points)}")
    rates = []
    for minute in range(MINUTES):
        hour, offset = divmod(minute, 60)
        here, after = points[hour], points[(hour + 1) % 24]
        rates.append(here + (after - here) * offset / 60)
    return tuple(rates)


def window(rate: float, spans: Sequence[tuple[int, int]], base: float = 0.0) -> tuple[float, ...]:
    """`rate` during the [start, end) minute spans, `base` elsewhere."""
    rates = [base] * MINUTES
    for start, end in spans:
        for minute in range(start, end):
            rates[minute] = rate
    return tuple(rates)


# Public traffic, requests per second at each hour 00..23 (Beijing time). Chinese peaks in
# the morning (school hours) with a smaller evening bump; English peaks in the evening.
WEEKDAY_ZH: tuple[float, ...] = (4, 3, 2, 2, 2, 3, 10, 45, 90, 100, 80, 55)
WEEKDAY_ZH += (35, 30, 30, 30, 32, 35, 35, 30, 28, 22, 14, 6)
WEEKDAY_EN: tuple[float, ...] = (5, 3, 2, 2, 2, 2, 4, 8, 12, 14, 16, 18)
WEEKDAY_EN += (18, 18, 20, 24, 30, 45, 70, 92, 100, 80, 45, 14)
WEEKEND_ZH: tuple[float, ...] = (5, 3, 2, 2, 2, 2, 4, 10, 25, 45, 55, 55)
WEEKEND_ZH += (50, 45, 45, 45, 40, 35, 30, 25, 20, 15, 10, 6)
WEEKEND_EN: tuple[float, ...] = (6, 4, 2, 2, 2, 2, 3, 6, 12, 20, 30, 38)
WEEKEND_EN += (42, 45, 48, 50, 50, 48, 45, 40, 32, 22, 14, 8)
SPIKE_TENANT = "acme"
SPIKE_LANG = "zh"
SPIKE_NORMAL_RATE = 6.0
"""acme's normal zh rate, 07:00-22:00; its classes make it 10x at fixed evening minutes."""
SPIKE_FACTOR = 10.0
SPIKE_MINUTES = ((19 * 60, 19 * 60 + 10), (20 * 60 + 30, 20 * 60 + 40))
"""19:00-19:10 and 20:30-20:40: ten minutes each at 10x."""
PROFILES = ("weekday", "weekend", "spike")


def profile(name: str) -> Trace:
    """A built-in profile: `weekday`, `weekend` or `spike` (weekday with acme at 10x)."""
    day = [(7 * 60, 22 * 60)]
    acme = window(SPIKE_NORMAL_RATE, day)
    if name == "weekday":
        zh, en = hourly(WEEKDAY_ZH), hourly(WEEKDAY_EN)
    elif name == "weekend":
        zh, en = hourly(WEEKEND_ZH), hourly(WEEKEND_EN)
        acme = window(0.0, ())
    elif name == "spike":
        zh, en = hourly(WEEKDAY_ZH), hourly(WEEKDAY_EN)
        spike = SPIKE_NORMAL_RATE * SPIKE_FACTOR
        acme = tuple(
            spike if any(a <= m < b for a, b in SPIKE_MINUTES) else rate
            for m, rate in enumerate(acme)
        )
    else:
        raise TraceError(f"unknown profile {name!r}; one of {', '.join(PROFILES)}")
    streams = {("", "zh"): zh, ("", "en"): en, (SPIKE_TENANT, SPIKE_LANG): acme}
    return Trace(name, streams)


def parse_csv(text: str, source: str = "<trace>") -> Trace:
    """A CSV trace: header `minute,tenant,lang,rate`; each row sets a stream's rate from that
    minute until the stream's next row (0 before its first). Errors name the line."""
    rows = list(csv.reader(io.StringIO(text)))
    numbered = [(n, row) for n, row in enumerate(rows, start=1) if row and not _comment(row)]
    if not numbered:
        raise TraceError("empty; expected the header minute,tenant,lang,rate", source=source)
    line, header = numbered[0]
    if tuple(cell.strip() for cell in header) != HEADER:
        raise TraceError(
            f"header must be {','.join(HEADER)}, got {','.join(header)!r}", source=source, line=line
        )
    changes: dict[StreamKey, dict[int, float]] = {}
    for line, row in numbered[1:]:
        minute, key, rate = _row(row, source, line)
        stream = changes.setdefault(key, {})
        if minute in stream:
            raise TraceError(f"repeats minute {minute} for {_name(key)}", source=source, line=line)
        stream[minute] = rate
    if not changes:
        raise TraceError("no rows after the header", source=source)
    return Trace(source, {key: _held(steps) for key, steps in changes.items()})


def _comment(row: list[str]) -> bool:
    return row[0].lstrip().startswith("#")


def _row(row: list[str], source: str, line: int) -> tuple[int, StreamKey, float]:
    if len(row) != len(HEADER):
        raise TraceError(f"expected 4 fields, got {len(row)}", source=source, line=line)
    minute_text, tenant, lang, rate_text = (cell.strip() for cell in row)
    try:
        minute = int(minute_text)
    except ValueError:
        minute = -1
    if not 0 <= minute < MINUTES:
        raise TraceError(
            f"minute must be a whole number 0-{MINUTES - 1}, got {minute_text!r}",
            source=source,
            line=line,
        )
    if lang not in LANGS:
        raise TraceError(f"lang must be zh or en, got {lang!r}", source=source, line=line)
    try:
        rate = float(rate_text)
    except ValueError:
        rate = math.nan
    if not (math.isfinite(rate) and rate >= 0):
        raise TraceError(
            f"rate must be a number >= 0 (requests per second), got {rate_text!r}",
            source=source,
            line=line,
        )
    return minute, (tenant, lang), rate


def _held(steps: Mapping[int, float]) -> tuple[float, ...]:
    rates, current = [], 0.0
    for minute in range(MINUTES):
        current = steps.get(minute, current)
        rates.append(current)
    return tuple(rates)


def _name(key: StreamKey) -> str:
    tenant, lang = key
    return f"tenant {tenant!r} lang {lang}" if tenant else f"lang {lang}"
