"""The fencing number a call presents (metadata `x-tidepool-fence`), carried per request.

The servicer edge reads the header into a context variable; the core checks it
under its lock right before a durable write, so a leader deposed between the
two cannot slip a write in.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar

from registry.errors import InvalidArgumentError

FENCE_HEADER = "x-tidepool-fence"
PRESENTED_FENCE: ContextVar[int | None] = ContextVar("tidepool_presented_fence", default=None)


def read_fence(metadata: Iterable[tuple[str, str | bytes]] | None) -> int | None:
    """The fencing number in the call's metadata, or None when it carries none."""
    for key, value in metadata or ():
        if key != FENCE_HEADER:
            continue
        text = value.decode() if isinstance(value, bytes) else value
        # isascii: str.isdigit also accepts digits like '²' that int() refuses.
        if not (text.isascii() and text.isdigit()) or len(text) > 19:
            raise InvalidArgumentError(FENCE_HEADER, f"must be a whole number, got {text[:40]!r}")
        return int(text)
    return None
