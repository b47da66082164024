"""Client channels to tidepool servers: message-size limits, keepalive and token metadata."""

from __future__ import annotations

import grpc

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
AUTHORIZATION = "authorization"


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Options shared by every tidepool client and server channel."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Keepalive lets a client notice a vanished peer on an idle stream
        # (a partitioned registry) in seconds rather than at the TCP timeout.
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Servers: accept a peer's keepalive pings on an idle connection (routers ping
        # engines every 10 s) instead of answering GOAWAY "too_many_pings".
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ]


def open_channel(
    target: str,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    root_certificates: bytes | None = None,
) -> grpc.aio.Channel:
    """Open an asyncio channel; TLS when `root_certificates` is given."""
    options = channel_options(max_message_bytes)
    if root_certificates is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        return grpc.aio.secure_channel(target, credentials, options=options)
    return grpc.aio.insecure_channel(target, options=options)


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying `token` as a bearer credential (empty when there is none)."""
    if not token:
        return ()
    return ((AUTHORIZATION, f"Bearer {token}"),)
