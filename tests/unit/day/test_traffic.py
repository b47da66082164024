from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.day.arrivals import draw
from loadtest.day.traffic import MINUTES, PROFILES, TraceError, parse_csv, profile

EXAMPLE = Path(__file__).resolve().parents[3] / "loadtest" / "day" / "example_trace.csv"


def test_weekday_has_a_chinese_morning_peak_and_an_english_evening_peak() -> None:
    trace = profile("weekday")
    zh, en = trace.lang_rates("zh"), trace.lang_rates("en")
    assert 7 * 60 <= zh.index(max(zh)) < 11 * 60
    assert 18 * 60 <= en.index(max(en)) < 22 * 60
    assert en[zh.index(max(zh))] < 0.25 * max(en)
    assert trace.peak_window_s() == (7 * 3600.0, 11 * 3600.0)


def test_spike_is_weekday_with_one_tenant_at_ten_times_for_fixed_evening_minutes() -> None:
    weekday, spike = profile("weekday"), profile("spike")
    acme_normal = weekday.streams[("acme", "zh")]
    acme_spike = spike.streams[("acme", "zh")]
    spiked = [m for m in range(MINUTES) if acme_spike[m] != acme_normal[m]]
    assert spiked == [*range(19 * 60, 19 * 60 + 10), *range(20 * 60 + 30, 20 * 60 + 40)]
    assert all(acme_spike[m] == 10 * acme_normal[m] for m in spiked)
    assert spike.streams[("", "en")] == weekday.streams[("", "en")]


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_has_a_rate_per_minute_for_both_languages(name: str) -> None:
    trace = profile(name)
    assert all(len(rates) == MINUTES for rates in trace.streams.values())
    assert trace.peak_rate("zh") > 0
    assert trace.peak_rate("en") > 0


def test_the_example_trace_parses_and_holds_each_rate_until_the_next_row() -> None:
    trace = parse_csv(EXAMPLE.read_text(), source=str(EXAMPLE))
    public_zh = trace.streams[("", "zh")]
    assert public_zh[0] == public_zh[359] == 3
    assert public_zh[360] == public_zh[419] == 20
    assert public_zh[1439] == 10
    acme = trace.streams[("acme", "zh")]
    assert acme[0] == 0
    assert acme[1140] == 60
    assert acme[1150] == 6
    assert acme[1320] == 0
    assert trace.peak_window_s() == (6 * 3600.0, 10 * 3600.0)


@pytest.mark.parametrize(
    ("rows", "line", "message"),
    [
        ("0,,zh,1\n1440,,zh,1", 3, "minute must be a whole number 0-1439, got '1440'"),
        ("0,,zh,1\nnoon,,zh,1", 3, "minute must be a whole number"),
        ("0,,fr,1", 2, "lang must be zh or en, got 'fr'"),
        ("0,,zh,-1", 2, "rate must be a number >= 0"),
        ("0,,zh,fast", 2, "rate must be a number >= 0"),
        ("0,,zh,nan", 2, "rate must be a number >= 0"),
        ("0,,zh", 2, "expected 4 fields, got 3"),
        ("0,,zh,1\n# a comment\n0,,zh,2", 4, "repeats minute 0 for lang zh"),
    ],
)
def test_a_bad_row_is_an_error_naming_its_line(rows: str, line: int, message: str) -> None:
    with pytest.raises(TraceError) as caught:
        parse_csv("minute,tenant,lang,rate\n" + rows, source="day.csv")
    assert caught.value.line == line
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"day.csv:{line}: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("minute,lang,rate\n0,zh,1", "header must be minute,tenant,lang,rate"),
        ("minute,tenant,lang,rate\n", "no rows after the header"),
    ],
)
def test_a_trace_without_header_or_rows_is_refused(text: str, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        parse_csv(text)


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(TraceError, match="unknown profile 'holiday'"):
        profile("holiday")


def test_arrivals_follow_the_trace_and_repeat_with_the_seed() -> None:
    trace = parse_csv("minute,tenant,lang,rate\n0,,zh,0\n600,,zh,50\n660,,zh,0\n0,,en,0")
    first, again, other = draw(trace, 7), draw(trace, 7), draw(trace, 8)
    times = first["zh"].arrival_s
    assert times.min() >= 600 * 60
    assert times.max() < 660 * 60
    assert abs(times.size - 50 * 3600) < 4 * (50 * 3600) ** 0.5  # Poisson: within 4 sigma
    assert (times == again["zh"].arrival_s).all()
    assert (first["zh"].work_s == again["zh"].work_s).all()
    assert times.size != other["zh"].arrival_s.size
    assert first["en"].arrival_s.size == 0
