"""The simulated GPU: deterministic scores, latency shape and input rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine_stub import load_model
from engine_stub.errors import InvalidInputError, WrongModelError

ONE_SECOND = b"\x01\x00" * 16_000


def test_scores_are_deterministic() -> None:
    assert load_model.score(ONE_SECOND, "ni hao", "zh") == load_model.score(
        ONE_SECOND, "ni hao", "zh"
    )


def test_scores_depend_on_audio_text_and_lang() -> None:
    base = load_model.score(ONE_SECOND, "hello", "en")
    assert load_model.score(ONE_SECOND[:-2], "hello", "en") != base
    assert load_model.score(ONE_SECOND, "hello!", "en") != base
    assert load_model.score(ONE_SECOND, "hello", "zh") != base


@given(st.binary(max_size=256), st.text(max_size=40), st.sampled_from(["zh", "en"]))
def test_scores_lie_in_0_to_100_and_overall_is_their_weighted_mean(
    audio: bytes, text: str, lang: str
) -> None:
    scores = load_model.score(audio, text, lang)
    for value in (scores.overall, scores.accuracy, scores.fluency, scores.completeness):
        assert 0 <= value <= 100
    mean = 0.5 * scores.accuracy + 0.3 * scores.fluency + 0.2 * scores.completeness
    assert scores.overall == pytest.approx(mean, abs=0.01)


def test_latency_is_base_plus_per_audio_second_over_speed() -> None:
    assert load_model.latency_s(0, 1.0) == pytest.approx(0.005)
    assert load_model.latency_s(1000, 1.0) == pytest.approx(0.045)
    assert load_model.latency_s(10_000, 1.0) == pytest.approx(0.405)
    assert load_model.latency_s(1000, 0.5) == pytest.approx(0.090)


@given(st.integers(0, 600_000), st.integers(0, 600_000), st.floats(0.1, 10))
def test_latency_grows_with_audio_and_shrinks_with_speed(a: int, b: int, speed: float) -> None:
    short, long = sorted((a, b))
    assert load_model.latency_s(short, speed) <= load_model.latency_s(long, speed)
    assert load_model.latency_s(long, speed * 2) < load_model.latency_s(long, speed)


def test_audio_ms_of_16_bit_mono_pcm() -> None:
    assert load_model.audio_ms(len(ONE_SECOND), 16_000) == 1000
    assert load_model.audio_ms(32_000, 8_000) == 2000


def test_sample_rate_zero_means_16000() -> None:
    assert load_model.sample_rate(0) == 16_000
    assert load_model.sample_rate(8_000) == 8_000


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: load_model.sample_rate(7_999), "sample_rate_hz"),
        (lambda: load_model.sample_rate(96_000), "sample_rate_hz"),
        (lambda: load_model.check_header("hi", "fr"), "lang"),
        (lambda: load_model.check_header("hi", ""), "lang"),
        (lambda: load_model.check_header("  ", "en"), "text"),
        (lambda: load_model.check_header("x" * 2001, "en"), "text"),
        (lambda: load_model.check_audio(0, 16_000), "audio"),
        (lambda: load_model.check_audio(3, 16_000), "audio"),
        (lambda: load_model.check_audio(600 * 32_000 + 2, 16_000), "audio"),
    ],
)
def test_bad_input_names_the_field(call: object, field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_wrong_model_is_a_failed_precondition() -> None:
    with pytest.raises(WrongModelError, match="has the 'zh' model loaded, not 'en'"):
        load_model.check_model("en", "zh")
