"""Run an engine until SIGTERM or SIGINT, then shut its agent down gracefully.

The recipe for `main()`: install `ShutdownSignals` first (a signal during model
load must not kill the process mid-way), `await agent.start()` under
`unless_signalled`, then `await run_until_signal(agent, signals)`; when it
returns, stop the gRPC server and exit with the code it gave.
"""

from __future__ import annotations

import asyncio

from registry.sdk.agent import EngineAgent
from tidepool.runtime.signals import ShutdownSignals


async def run_until_signal(agent: EngineAgent, signals: ShutdownSignals | None = None) -> int:
    """Serve until a signal (then graceful shutdown, exit code 0) or until the agent gives up.

    The agent gives up when the registry refuses it for good (a revoked token):
    then it still shuts down, and the exit code is 1.
    """
    if signals is None:
        with ShutdownSignals() as installed:
            return await run_until_signal(agent, installed)
    failed = asyncio.create_task(agent.wait_failed())
    waiter = asyncio.create_task(signals.wait())
    try:
        await asyncio.wait({failed, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (failed, waiter):
            task.cancel()
        await asyncio.gather(failed, waiter, return_exceptions=True)
    code = 0 if signals.received.is_set() else 1
    await agent.shutdown()
    return code
