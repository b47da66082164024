"""The command line: bad input is one line naming the flag (exit 2), never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.day.cli import main

TINY = "minute,tenant,lang,rate\n0,,zh,0.2\n0,,en,0.1\n"


def _fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as caught:
        main(list(argv))
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_help_documents_the_strategies_and_the_trace_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tidepool loadtest day")
    for words in ("--profile", "--trace", "--slo-ms", "minute,tenant,lang,rate", "autoscale"):
        assert words in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--strategies", "static,magic"), "--strategies: expected distinct names"),
        (("--profile", "holiday"), "--profile: invalid choice: 'holiday'"),
        (("--profile", "weekday", "--trace", "x.csv"), "not allowed with argument"),
        (("--slo-ms", "0"), "--slo-ms: must be greater than 0"),
        (("--trace", "/nonexistent/day.csv"), "--trace: cannot read /nonexistent/day.csv"),
        (("--fleet", "/nonexistent/fleet.toml"), "--fleet: cannot read"),
        (("--policy", "/nonexistent/policy.toml"), "--policy: /nonexistent/policy.toml"),
    ],
)
def test_a_bad_flag_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    assert message in _fails(capsys, *argv)


def test_a_bad_trace_row_names_the_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trace = tmp_path / "day.csv"
    trace.write_text(TINY + "60,,de,1\n")
    err = _fails(capsys, "--trace", str(trace))
    assert f"--trace: {trace}:4: lang must be zh or en, got 'de'" in err


def test_a_policy_without_a_pool_per_language_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        "[scheduler]\ninterval_s = 15.0\nwindow_s = 60.0\ncooldown_s = 60.0\nmin_stay_s = 60.0\n"
        "drain_timeout_s = 60.0\nswitch_timeout_s = 60.0\nleader_ttl_s = 30.0\n"
        '[[pools]]\nname = "zh-public"\nlang = "zh"\nmin = 1\nmax = 4\n'
        "target_utilization = 0.6\nhigh_watermark = 0.8\nlow_watermark = 0.3\n"
    )
    assert "--policy: the policy has no pool for lang en" in _fails(capsys, "--policy", str(policy))


def test_a_small_trace_runs_and_writes_the_documented_json(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    trace, out = tmp_path / "day.csv", tmp_path / "day.json"
    trace.write_text(TINY)
    argv = ["--trace", str(trace), "--strategies", "static,tidepool", "--json", str(out)]
    assert main([*argv, "--seed", "5"]) == 0
    captured = capsys.readouterr()
    assert "day: tidepool  simulated 24:00" in captured.err
    assert "strategy" in captured.out
    assert "tidepool" in captured.out
    document = json.loads(out.read_text())
    assert (document["seed"], document["profile"]) == (5, str(trace))
    assert list(document["strategies"]) == ["static", "tidepool"]
    figures = document["strategies"]["tidepool"]
    for key in ("cost", "scale_outs", "peak_scale_outs", "moves", "requests", "p50_ms", "p99_ms"):
        assert key in figures
    assert set(figures["gpu_hours"]) == {"idc", "cvm", "serverless"}
    assert 0.0 <= figures["slo_miss_rate"] <= 1.0
    # Both strategies replay the same requests.
    assert figures["requests"] == document["strategies"]["static"]["requests"] > 0
