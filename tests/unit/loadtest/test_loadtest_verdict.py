"""How a run ends: the exit decision, the first error of each status, the program's name."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.__main__ import command_line, main
from loadtest.config import LoadConfig
from loadtest.result import FIRST_ERROR_CHARS, LoadResult
from loadtest.verdict import EXIT_INTERRUPTED, EXIT_OK, EXIT_TOO_MANY_ERRORS, Verdict, judge
from tidepool import cli

TARGET = "127.0.0.1:7000"
WRONG_MODEL = "lang: this engine has the 'en' model loaded, not 'zh'"


def finished(
    ok: int,
    errors: int = 0,
    abandoned: int = 0,
    max_error_rate: float = 0.01,
    interrupted: bool = False,
) -> LoadResult:
    config = LoadConfig(target=TARGET, max_error_rate=max_error_rate)
    result = LoadResult(config, interrupted=interrupted)
    result.sent = result.scheduled = ok + errors + abandoned
    result.abandoned = abandoned
    counts = (("OK", ok), ("FAILED_PRECONDITION", errors))
    result.statuses.update({code: n for code, n in counts if n})
    return result


# ---- the exit decision ---------------------------------------------------------------


@pytest.mark.parametrize("result", [finished(ok=100), finished(ok=0), finished(100, errors=1)])
def test_a_clean_run_exits_0_without_a_complaint(result: LoadResult) -> None:
    assert judge(result) == Verdict(EXIT_OK, None)


def test_errors_at_the_threshold_pass_and_above_it_exit_3() -> None:
    assert judge(finished(ok=99, errors=1)).status == EXIT_OK  # exactly 1 %
    verdict = judge(finished(ok=98, errors=2))
    assert verdict.status == EXIT_TOO_MANY_ERRORS
    assert verdict.complaint is not None
    for part in ("2.00%", "2 of 100", "1.00%", "--max-error-rate 0.01", "exit status 3"):
        assert part in verdict.complaint


def test_abandoned_calls_count_as_failed() -> None:
    assert judge(finished(ok=90, abandoned=10)).status == EXIT_TOO_MANY_ERRORS


def test_the_threshold_bounds_are_none_and_all() -> None:
    assert judge(finished(ok=999, errors=1, max_error_rate=0)).status == EXIT_TOO_MANY_ERRORS
    assert judge(finished(ok=0, errors=50, max_error_rate=1)).status == EXIT_OK


def test_an_interrupted_run_exits_130_but_still_says_it_had_too_many_errors() -> None:
    verdict = judge(finished(ok=0, errors=5, interrupted=True))
    assert verdict.status == EXIT_INTERRUPTED
    assert verdict.complaint is not None


@given(
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.integers(0, 50),
    st.floats(0, 1, allow_nan=False),
)
def test_exit_3_exactly_when_the_failed_share_passes_the_threshold(
    ok: int, errors: int, abandoned: int, limit: float
) -> None:
    verdict = judge(finished(ok, errors, abandoned, max_error_rate=limit))
    sent = ok + errors + abandoned
    failing = sent > 0 and (errors + abandoned) / sent > limit
    assert verdict.status == (EXIT_TOO_MANY_ERRORS if failing else EXIT_OK)
    assert (verdict.complaint is not None) == failing


def test_a_threshold_outside_0_to_1_is_refused_naming_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--target", TARGET, "--max-error-rate", "5"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "tidepool loadtest: --max-error-rate: must be a fraction from 0 to 1, got 5.0"
        " (see --help)\n"
    )


# ---- first errors --------------------------------------------------------------------


def test_the_first_message_of_each_status_is_kept() -> None:
    result = finished(ok=1)
    result.note_error("FAILED_PRECONDITION", WRONG_MODEL)
    result.note_error("FAILED_PRECONDITION", "a later message")
    result.note_error("UNAVAILABLE", "")
    assert result.first_errors == {
        "FAILED_PRECONDITION": WRONG_MODEL,
        "UNAVAILABLE": "(no message)",
    }


def test_a_long_or_multiline_message_becomes_one_bounded_line() -> None:
    result = finished(ok=1)
    result.note_error("INTERNAL", "Traceback:\n  line\n" + "x" * 1000)
    kept = result.first_errors["INTERNAL"]
    assert len(kept) == FIRST_ERROR_CHARS
    assert kept.startswith("Traceback: line xxx")
    assert kept.endswith("…")
    assert "\n" not in kept


def test_merging_processes_keeps_one_message_per_status() -> None:
    merged, other = finished(ok=1, errors=3), finished(ok=0, errors=2)
    merged.note_error("FAILED_PRECONDITION", WRONG_MODEL)
    other.note_error("FAILED_PRECONDITION", "from the second process")
    other.note_error("DEADLINE_EXCEEDED", "Deadline Exceeded")
    merged.merge(other)
    assert merged.first_errors == {
        "FAILED_PRECONDITION": WRONG_MODEL,
        "DEADLINE_EXCEEDED": "Deadline Exceeded",
    }


def test_first_errors_are_in_the_json_and_the_summary() -> None:
    result = finished(ok=0, errors=7)
    result.note_error("FAILED_PRECONDITION", WRONG_MODEL)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["first_errors"] == {"FAILED_PRECONDITION": WRONG_MODEL}
    assert data["error_share"] == 1.0
    assert LoadResult.from_dict(data).first_errors == result.first_errors
    assert f"error     FAILED_PRECONDITION (first of 7): {WRONG_MODEL}" in result.summary_table()


# ---- the program's name --------------------------------------------------------------


def test_help_through_the_tidepool_command_names_tidepool_loadtest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["loadtest", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tidepool loadtest ")
    assert "--max-error-rate" in out
    assert "3 more errors than --max-error-rate" in " ".join(out.split())


def test_the_printed_command_starts_with_the_program_name() -> None:
    assert command_line(["--rate", "5"]) == "tidepool loadtest --rate 5"
    assert command_line(["--rate", "5"], "python -m loadtest") == "python -m loadtest --rate 5"
