"""The last known good view on disk, so a router restarted during a registry outage routes.

Written atomically (temporary file, fsync, rename) so a crash mid-write leaves
the previous file; read leniently: a missing file is no view, a corrupt one is
reported once and ignored rather than stopping the router.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

from router.view import RegistryView

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def encode_view(view: RegistryView) -> bytes:
    """The file's bytes for `view` (cheap enough for the event loop; writing is not)."""
    document = {"version": FORMAT_VERSION, "saved_at": time.time(), "view": view.to_json()}
    return json.dumps(document, separators=(",", ":")).encode()


def save_view(path: Path, data: bytes) -> None:
    """Replace the file at `path` with `data` from `encode_view`; raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_view(path: Path) -> tuple[RegistryView, float] | None:
    """The saved view and when it was saved (wall seconds), or None."""
    try:
        document = json.loads(path.read_text())
        if document.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown version {document.get('version')!r}")
        return RegistryView.from_json(document["view"]), float(document["saved_at"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring unreadable view file %s: %s", path, exc)
        return None
