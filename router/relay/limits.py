"""What one peer may cost the relay: buffers, rates and timeouts per connection and per stream.

Pure: no asyncio, times passed in. Each cap is a router flag (`RouterConfig`)
so that one slow or hostile caller cannot stall the others (STYLE §11,
"Budgets per peer"); the numbers follow Envoy's and nginx's defaults and the
HTTP/2 rapid-reset (CVE-2023-44487) and CONTINUATION-flood (CVE-2024-27316) fixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

BURST_S: Final = 10.0
"""A rate budget holds this many seconds' worth: a short burst passes, a flood does not."""


@dataclass(frozen=True)
class RelayLimits:
    """Per-peer budgets of the relay (see the module doc)."""

    stream_buffer_bytes: int = 1 << 20
    """Bytes buffered per stream and direction: the HTTP/2 stream window we grant."""
    connection_buffer_bytes: int = 4 << 20
    """Output queued for one connection before its streams stop being fed (and credited)."""
    max_resets_per_s: float = 100.0
    """Stream resets a caller may send per second (bursts of 10 s worth) before GOAWAY."""
    max_control_frames_per_s: float = 1000.0
    """SETTINGS, PING, PRIORITY and empty DATA/CONTINUATION frames per second (10 s bursts)."""
    handshake_timeout_s: float = 10.0
    """Longest wait for a caller's preface and first SETTINGS."""
    idle_timeout_s: float = 300.0
    """A caller connection with no stream for this long is closed (GOAWAY)."""
    max_connections: int = 10_000
    """Caller connections held at once; more are closed as soon as they are accepted."""
    engine_streams_per_connection: int = 100
    """Streams on one engine connection before another connection is opened."""

    @property
    def tick_s(self) -> float:
        """How often connections are checked against the timeouts."""
        return max(0.05, min(1.0, self.handshake_timeout_s / 4, self.idle_timeout_s / 4))


class RateBudget:
    """A token bucket of `rate_per_s`, holding `BURST_S` seconds' worth; `spend` says if allowed."""

    __slots__ = ("_at", "_burst", "_rate", "_tokens")

    def __init__(self, rate_per_s: float, now: float) -> None:
        self._rate = rate_per_s
        self._burst = max(1.0, rate_per_s * BURST_S)
        self._tokens = self._burst
        self._at = now

    def spend(self, now: float) -> bool:
        """Take one token at `now`; False once the budget is spent (the peer is flooding)."""
        tokens = self._tokens + (now - self._at) * self._rate
        self._at = now
        if tokens > self._burst:
            tokens = self._burst
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True
