"""Split a call's metadata into the routing key and what is forwarded to the engine.

One pass over the metadata, on the hot path. Pseudo-headers, `grpc-*` and the
transport's own headers are left for grpc to set on the next hop; everything
else, the routing keys included, reaches the engine untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from router.table import ALIAS_KEY, LANG_KEY, TENANT_KEY

Metadata = tuple[tuple[str, str | bytes], ...]
_HOP_BY_HOP = frozenset({"user-agent", "te", "content-type", "host", "connection"})


class RoutedMetadata(NamedTuple):
    alias: str | None
    tenant: str | None
    lang: str | None
    forward: Metadata


def split_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> RoutedMetadata:
    """The routing key of a call and the metadata to send on."""
    alias = tenant = lang = None
    forward: list[tuple[str, str | bytes]] = []
    for key, value in metadata or ():
        if key[0] == ":" or key.startswith("grpc-") or key in _HOP_BY_HOP:
            continue
        if key == ALIAS_KEY and isinstance(value, str):
            alias = value
        elif key == TENANT_KEY and isinstance(value, str):
            tenant = value
        elif key == LANG_KEY and isinstance(value, str):
            lang = value
        forward.append((key, value))
    return RoutedMetadata(alias, tenant, lang, tuple(forward))


def answer_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> Metadata:
    """An engine's initial or trailing metadata as the caller should see it."""
    if not metadata:
        return ()
    return tuple(
        (k, v)
        for k, v in metadata
        if k[0] != ":" and k not in _HOP_BY_HOP and k not in ("grpc-status", "grpc-message")
    )
