"""The load generator without sockets: flags, config checks, the schedule and the result shape."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.__main__ import build_parser, command_line, config_from_args, main, parse_mix
from loadtest.config import LoadConfig, LoadConfigError
from loadtest.generator import arrival_schedule, stream_rng
from loadtest.result import LoadResult

TARGET = "127.0.0.1:7000"


def config_for(*flags: str, environ: dict[str, str] | None = None) -> LoadConfig:
    args = build_parser().parse_args(["--target", TARGET, *flags])
    return config_from_args(args, environ or {})


# ---- flags ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--target", TARGET, "--bogus"], "--bogus"),
        ([], "--target"),
        (["--target", TARGET, "--rate", "fast"], "--rate"),
        (["--target", TARGET, "--rate", "-5"], "--rate"),
        (["--target", TARGET, "--duration", "0"], "--duration"),
        (["--target", TARGET, "--mix", "unary=0.5,batch=0.5"], "--mix"),
        (["--target", TARGET, "--mix", "unary=0,stream=0"], "--mix"),
        (["--target", TARGET, "--concurrency", "0"], "--concurrency"),
        (["--target", TARGET, "--chunks", "0"], "--chunks"),
        (["--target", TARGET, "--processes", "0"], "--processes"),
        (["--target", "no-port", "--duration", "1"], "--target"),
        (["--target", TARGET, "--max-error-rate", "1.5"], "--max-error-rate"),
        (["--target", TARGET, "--max-error-rate", "-0.01"], "--max-error-rate"),
        (["--target", TARGET, "--max-error-rate", "nan"], "--max-error-rate"),
        (["--target", TARGET, "--max-error-rate", "1%"], "--max-error-rate"),
    ],
)
def test_a_bad_flag_exits_2_with_one_line_naming_it(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert flag in lines[0]


def test_defaults_match_the_documented_ones() -> None:
    config = config_for()
    assert (config.rate_per_s, config.duration_s, config.processes) == (100.0, 10.0, 1)
    assert (config.chunks, config.audio_bytes, config.request_lang) == (4, 1024, "zh")
    assert config.max_error_rate == 0.01
    assert (config.timeout_s, config.concurrency, config.max_in_flight) == (10.0, None, 10_000)
    assert dict(config.mix) == {"unary": 1.0}
    assert config.metadata() == ()


def test_flags_map_onto_config_fields() -> None:
    config = config_for(
        *("--rate", "250", "--duration", "3", "--processes", "2", "--chunks", "8"),
        *("--mix", "unary=0.9,stream=0.1", "--audio-bytes", "2048", "--lang", "en"),
        *("--tenant", "acme", "--timeout", "2.5", "--seed", "7", "--token", "s3cret"),
        *("--max-error-rate", "0.25"),
    )
    assert (config.rate_per_s, config.duration_s, config.processes) == (250.0, 3.0, 2)
    assert dict(config.mix) == {"unary": 0.9, "stream": 0.1}
    assert config.stream_fraction == pytest.approx(0.1)
    assert (config.chunks, config.audio_bytes, config.lang) == (8, 2048, "en")
    assert (config.timeout_s, config.seed, config.max_error_rate) == (2.5, 7, 0.25)
    assert config.metadata() == (
        ("authorization", "Bearer s3cret"),
        ("x-tidepool-tenant", "acme"),
        ("x-tidepool-lang", "en"),
    )


def test_alias_routing_and_token_from_the_environment() -> None:
    config = config_for("--alias", "zh-public", environ={"TIDEPOOL_TOKEN": "from-env"})
    assert config.metadata() == (
        ("authorization", "Bearer from-env"),
        ("x-tidepool-alias", "zh-public"),
    )


def test_mix_parsing_accepts_spaces_and_one_kind() -> None:
    assert parse_mix(" stream=1 ") == {"stream": 1.0}
    assert parse_mix("unary=3, stream=1") == {"unary": 3.0, "stream": 1.0}


def test_the_printed_command_hides_the_token() -> None:
    shown = command_line(["--target", TARGET, "--token", "s3cret", "--token=other"])
    assert "s3cret" not in shown
    assert "other" not in shown
    assert "--target 127.0.0.1:7000" in shown


def test_config_errors_name_the_field() -> None:
    with pytest.raises(LoadConfigError) as caught:
        LoadConfig(target=TARGET, audio_bytes=0)
    assert caught.value.field == "audio_bytes"


# ---- the arrival schedule ------------------------------------------------------------


@given(st.integers(min_value=0, max_value=2**32))
def test_schedule_is_poisson_like_sorted_bounded_and_reproducible(seed: int) -> None:
    config = LoadConfig(target=TARGET, rate_per_s=1000, duration_s=2, mix={"unary": 3, "stream": 1})
    offsets, kinds = arrival_schedule(config, stream_rng(seed, 0))
    assert list(offsets) == sorted(offsets)
    assert all(0 <= t < config.duration_s for t in offsets)
    # 2000 expected; a Poisson count's standard deviation is about 45.
    assert 1750 < len(offsets) < 2250
    assert 0.18 < sum(kinds) / len(kinds) < 0.32
    again, _ = arrival_schedule(config, stream_rng(seed, 0))
    assert again == offsets
    other, _ = arrival_schedule(config, stream_rng(seed, 1))
    assert other != offsets


def test_schedule_gaps_have_the_exponential_mean() -> None:
    config = LoadConfig(target=TARGET, rate_per_s=200, duration_s=50)
    offsets, kinds = arrival_schedule(config, random.Random(3))
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 200, rel=0.05)
    assert set(kinds) == {0}


# ---- the result ----------------------------------------------------------------------


def sample_result(engine: str, latencies_s: list[float]) -> LoadResult:
    result = LoadResult(LoadConfig(target=TARGET, rate_per_s=50, duration_s=2), started_at=100.0)
    result.elapsed_s = 2.0
    result.scheduled = result.sent = len(latencies_s) + 1
    for second, latency in enumerate(latencies_s):
        result.statuses["OK"] += 1
        result.statuses_by_kind["unary"]["OK"] += 1
        result.engines[engine] += 1
        result.latency["all"].record(latency)
        result.latency["unary"].record(latency)
        result.service["all"].record(latency / 2)
        result.second(second % 2).engines[engine] += 1
        result.second(second % 2).statuses["OK"] += 1
    result.statuses["UNAVAILABLE"] += 1
    result.second(1).statuses["UNAVAILABLE"] += 1
    result.cpu_s = 0.01
    return result


def test_results_merge_counts_histograms_and_time_series() -> None:
    merged = sample_result("e-1", [0.01, 0.02, 0.03])
    merged.merge(sample_result("e-2", [0.04]))
    assert (merged.sent, merged.ok, merged.errors) == (6, 4, 2)
    assert merged.engine_shares() == {"e-1": 0.75, "e-2": 0.25}
    assert merged.latency["all"].count == 4
    assert merged.latency["all"].max == 0.04
    assert merged.time_series[1].statuses == Counter({"OK": 1, "UNAVAILABLE": 2})
    assert merged.cpu_s == pytest.approx(0.02)


def test_result_json_round_trip_and_shape() -> None:
    result = sample_result("e-1", [0.01, 0.02, 0.03])
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert LoadResult.from_dict(data).to_dict() == result.to_dict()
    assert data["statuses"] == {"OK": 3, "UNAVAILABLE": 1}
    assert data["latency_ms"]["all"]["p50"] == pytest.approx(20.0, rel=0.01)
    assert data["latency_ms"]["stream"]["p50"] is None
    assert data["time_series"][1] == {
        "t_s": 1,
        "sent": 0,
        "dropped": 0,
        "statuses": {"OK": 1, "UNAVAILABLE": 1},
        "engines": {"e-1": 1},
    }
    assert data["config"]["token"] is None
    assert data["cpu"]["per_request_us"] == 2500


def test_summary_table_shows_rates_statuses_and_percentiles() -> None:
    table = sample_result("e-1", [0.01, 0.02, 0.03]).summary_table()
    assert "offered 50.0/s" in table
    assert "OK 3" in table
    assert "UNAVAILABLE 1" in table
    assert "e-1 3 (100.0%)" in table
    header = next(line for line in table.splitlines() if line.startswith("ms"))
    assert header.split() == ["ms", "kind", "count", "p50", "p90", "p99", "p99.9", "max"]
    assert "stream" not in table  # no stream calls: no empty row for them
