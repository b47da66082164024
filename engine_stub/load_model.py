"""The simulated GPU: input rules, latency by audio length and speed, deterministic scores.

Pure functions only. Scores come from a hash of (audio, text, lang), so a test
can compute the score it expects; latency grows with the audio and shrinks
with the engine's relative speed, like a real acoustic model's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from engine_stub.errors import InvalidInputError, WrongModelError
from tidepool.runtime.rules import LANGS

DEFAULT_SAMPLE_RATE_HZ = 16_000
MIN_SAMPLE_RATE_HZ = 8_000
MAX_SAMPLE_RATE_HZ = 48_000
BYTES_PER_SAMPLE = 2
"""16-bit mono PCM."""
MAX_TEXT_CHARS = 2_000
MAX_AUDIO_S = 600
BASE_LATENCY_MS = 5.0
"""Fixed cost of a request (feature extraction, kernel launch)."""
LATENCY_MS_PER_AUDIO_S = 40.0
"""Marginal cost per second of audio on a speed-1.0 GPU."""


@dataclass(frozen=True)
class Scores:
    """Scores in [0, 100]."""

    overall: float
    accuracy: float
    fluency: float
    completeness: float


def sample_rate(requested_hz: int) -> int:
    """The effective sample rate (0 means the default); InvalidInputError when out of range."""
    rate = requested_hz or DEFAULT_SAMPLE_RATE_HZ
    if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise InvalidInputError(
            "sample_rate_hz",
            f"must be {MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} (or 0 for 16000), got {rate}",
        )
    return rate


def check_header(text: str, lang: str) -> None:
    """Rules for the reference text and language (the first chunk of a stream)."""
    if lang not in LANGS:
        raise InvalidInputError("lang", f"must be zh or en, got {lang!r}")
    if not text.strip():
        raise InvalidInputError("text", "must not be empty")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInputError("text", f"must be at most {MAX_TEXT_CHARS} characters")


def max_audio_bytes(rate_hz: int) -> int:
    return MAX_AUDIO_S * rate_hz * BYTES_PER_SAMPLE


def check_audio(audio_bytes: int, rate_hz: int) -> None:
    """Rules for the audio: present, whole 16-bit samples, at most MAX_AUDIO_S long."""
    if audio_bytes == 0:
        raise InvalidInputError("audio", "must not be empty")
    if audio_bytes % BYTES_PER_SAMPLE:
        raise InvalidInputError("audio", "16-bit PCM needs an even number of bytes")
    if audio_bytes > max_audio_bytes(rate_hz):
        raise InvalidInputError("audio", f"must be at most {MAX_AUDIO_S} s long")


def check_model(requested: str, loaded: str) -> None:
    if requested != loaded:
        raise WrongModelError(requested, loaded)


def audio_ms(audio_bytes: int, rate_hz: int) -> int:
    """Duration of `audio_bytes` of 16-bit mono PCM, in whole milliseconds."""
    return audio_bytes // BYTES_PER_SAMPLE * 1000 // rate_hz


def latency_s(duration_ms: int, speed: float) -> float:
    """Simulated scoring time: base cost plus per-audio-second cost, divided by speed."""
    if speed <= 0:
        raise ValueError(f"speed must be above 0, got {speed}")
    return (BASE_LATENCY_MS + LATENCY_MS_PER_AUDIO_S * duration_ms / 1000) / speed / 1000


def score(audio: bytes, text: str, lang: str) -> Scores:
    """Deterministic scores for this (audio, text, lang)."""
    digest = hashlib.sha256()
    for part in (audio, text.encode(), lang.encode()):
        # Length-prefix each part so ("ab", "c") and ("a", "bc") differ.
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    raw = digest.digest()
    accuracy, fluency, completeness = (_percent(raw[i : i + 2]) for i in (0, 2, 4))
    overall = round(0.5 * accuracy + 0.3 * fluency + 0.2 * completeness, 2)
    return Scores(overall, accuracy, fluency, completeness)


def _percent(two_bytes: bytes) -> float:
    # Map to [40, 100]: real learners rarely score near zero, and it keeps figures plausible.
    return round(40 + 60 * int.from_bytes(two_bytes, "big") / 0xFFFF, 2)
