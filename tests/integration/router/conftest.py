"""Fixtures the proxy suites share: the stack on each data path, and a channel to its router.

A module that uses them defines a module-scoped `stacks` fixture (one registry,
engines and one router per data path); `stack` then runs each test once per
data path, and `channel` connects to that path's router.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from tests.support.router_harness import DATA_PATHS, EchoStack


@pytest.fixture(scope="module", params=DATA_PATHS)
def stack(stacks: EchoStack, request: pytest.FixtureRequest) -> EchoStack:
    """The stack, its default router the one on the data path under test."""
    return stacks.on(request.param)


@pytest.fixture
async def channel(stack: EchoStack) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(stack.router().grpc) as opened:
        yield opened
