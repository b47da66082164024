"""Registry channels reconnect within about a second, and retry sleeps end when they do."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tidepool.runtime.channel import (
    channel_options,
    registry_channel_options,
    sleep_until_reconnected,
)

State = grpc.ChannelConnectivity


class FakeChannel:
    """Connectivity like grpc.aio.Channel's: a state and a wait for it to change."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.connect_requests = 0
        self._changed = asyncio.Event()

    def get_state(self, try_to_connect: bool = False) -> State:
        self.connect_requests += try_to_connect
        return self.state

    async def wait_for_state_change(self, last_observed_state: State) -> None:
        while self.state is last_observed_state:
            self._changed.clear()
            await self._changed.wait()

    def become(self, state: State) -> None:
        self.state = state
        self._changed.set()


def test_registry_channels_cap_the_reconnect_backoff_near_one_second() -> None:
    options = dict(registry_channel_options())
    assert options["grpc.initial_reconnect_backoff_ms"] <= 200
    # gRPC adds up to 20 % jitter on top of the cap.
    assert options["grpc.max_reconnect_backoff_ms"] * 1.2 <= 1_500
    assert options["grpc.min_reconnect_backoff_ms"] <= 5_000
    assert set(dict(channel_options())) < set(options)


async def test_a_retry_sleep_ends_as_soon_as_the_channel_reconnects() -> None:
    channel = FakeChannel(State.TRANSIENT_FAILURE)
    sleeper = asyncio.create_task(sleep_until_reconnected(channel, 60.0))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    channel.become(State.CONNECTING)
    await asyncio.sleep(0)
    assert not sleeper.done()
    channel.become(State.READY)
    async with asyncio.timeout(5):
        await sleeper
    assert channel.connect_requests >= 1


async def test_a_retry_sleep_on_a_connected_channel_lasts_the_whole_delay() -> None:
    # The failure was not the connection's (e.g. the registry ended the stream), so
    # waking at once would turn the retry loop into a busy loop.
    channel = FakeChannel(State.READY)
    sleeper = asyncio.create_task(sleep_until_reconnected(channel, 60.0))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not sleeper.done()
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper


async def test_a_retry_sleep_on_a_channel_that_stays_down_ends_at_the_delay() -> None:
    channel = FakeChannel(State.TRANSIENT_FAILURE)
    async with asyncio.timeout(5):
        await sleep_until_reconnected(channel, 0.0)  # type: ignore[arg-type]
    assert channel.state is State.TRANSIENT_FAILURE
