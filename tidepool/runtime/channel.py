"""Client channels to tidepool servers: size limits, keepalive, reconnect, token metadata."""

from __future__ import annotations

import asyncio
import contextlib

import grpc

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
AUTHORIZATION = "authorization"
RECONNECT_INITIAL_MS = 100
"""First wait before a lost registry connection is tried again."""
RECONNECT_MAX_MS = 1_000
"""Cap on the wait between connection attempts (gRPC's default is 120 s, its first wait 1 s).

gRPC adds up to 20 % jitter, so a registry that is back is reached within 1.2 s; a fleet
of engines retrying a dead port once a second costs the host one refused SYN each."""
CONNECT_TIMEOUT_MS = 2_000
"""Give up on one connection attempt after this long (gRPC's default, 20 s, would leave a
client stuck on a SYN sent while a registry host rebooted long after it is back)."""


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


def registry_channel_options(
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> list[tuple[str, int]]:
    """`channel_options` plus a reconnect backoff capped near 1 s, for clients of the registry."""
    return [
        *channel_options(max_message_bytes),
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_MS),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
        # Despite its name this is the minimum connect timeout of each attempt.
        ("grpc.min_reconnect_backoff_ms", CONNECT_TIMEOUT_MS),
    ]


def open_channel(
    target: str,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    root_certificates: bytes | None = None,
) -> grpc.aio.Channel:
    """Open an asyncio channel to the registry; TLS when `root_certificates` is given."""
    options = registry_channel_options(max_message_bytes)
    if root_certificates is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        return grpc.aio.secure_channel(target, credentials, options=options)
    return grpc.aio.insecure_channel(target, options=options)


async def sleep_until_reconnected(channel: grpc.aio.Channel, delay_s: float) -> None:
    """Sleep `delay_s` seconds, or only until `channel` connects, whichever is first.

    Why: a retry loop that sleeps its own backoff on top of the channel's reconnect
    backoff waits for both; waking as soon as the channel is READY again leaves only
    the channel's (capped) wait. A channel that is READY already sleeps the whole
    delay: the failure was not the connection's, so backing off is what is wanted.
    """
    state = channel.get_state(try_to_connect=True)
    if state is grpc.ChannelConnectivity.READY:
        await asyncio.sleep(delay_s)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay_s):
            while state is not grpc.ChannelConnectivity.READY:
                await channel.wait_for_state_change(state)
                state = channel.get_state(try_to_connect=True)


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying `token` as a bearer credential (empty when there is none)."""
    if not token:
        return ()
    return ((AUTHORIZATION, f"Bearer {token}"),)
