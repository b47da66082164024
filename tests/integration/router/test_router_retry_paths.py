"""The three data paths retry, eject and give up alike: relay, grpc.aio, in-process client.

One stack of real echo engines on loopback (a, b, c, and an instance whose
address refuses connections), two router processes (`--data-path relay` and
`grpc`) and an in-process `RouterClient`, all with --max-attempts 2 and
Echo/Unary the one idempotent method. Each failure is played once per path, on
an alias of its own (so one case's ejections cannot steer another's picks);
what each path did (the callers' status codes, the calls each engine took, the
retries and the engines ejected) must be the same table row for all three,
since all three act on `retry.decide` and `timers.Deadline`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from prometheus_client import generate_latest

from router.client import RouterCallError, RouterClient
from router.config import RouterConfig
from tests.support.processes import wait_until_async
from tests.support.router_harness import (
    MUTATE,
    UNARY,
    EchoStack,
    EngineSpec,
    RefusingPort,
    Samples,
    StackSpec,
    alias_key,
    each_data_path,
    echo_stack,
    metric,
    parse_metrics,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.asyncio(loop_scope="module")]

A, B, C, FAKE = "paths-a", "paths-b", "paths-c", "paths-fake"
ENGINES = (A, B, C, FAKE)
MAX_ATTEMPTS = 2
FLAGS = [
    *("--max-attempts", str(MAX_ATTEMPTS)),
    *("--idempotent-methods", UNARY),
    *("--unary-methods", f"{UNARY},{MUTATE}"),
    # Every failure that may eject does: which engines were ejected is part of the outcome.
    *("--max-ejection-percent", "100"),
]
PATHS = ("relay", "grpc", "client")
FAIL = ("x-fail-code", "UNAVAILABLE")
ONLY_A = ("x-fail-instance", A)


@dataclass(frozen=True)
class Case:
    """Calls on one alias, and what every path must do with them."""

    selector: str
    method: str
    metadata: tuple[tuple[str, str], ...]
    calls: int
    codes: tuple[str, ...]
    """The status each caller gets, in order."""
    engine_calls: dict[str, int]
    """Calls each engine took (every attempt that reached it)."""
    retries: int
    ejected: frozenset[str]
    timeout_s: float = 5.0


CASES = {
    # Never reached an engine: retried even for a non-idempotent method; ejected at once.
    "connect-refused": Case("member=fake|a", MUTATE, (), 2, ("OK", "OK"), {A: 2}, 1,
                            frozenset({FAKE})),
    # It reached an engine: a non-idempotent method is not retried, the engine is ejected.
    "unavailable-mutate": Case("member=a", MUTATE, (FAIL,), 1, ("UNAVAILABLE",), {A: 1}, 0,
                               frozenset({A})),
    # Idempotent: retried on the other engine; the failing one is ejected, called once.
    "unavailable-idempotent": Case("member=a|b", UNARY, (FAIL, ONLY_A), 2, ("OK", "OK"),
                                   {A: 1, B: 2}, 1, frozenset({A})),
    # The same after the engine sent its initial metadata: still nothing reached the caller.
    "unavailable-after-headers": Case("member=a|b", UNARY, (FAIL, ONLY_A, ("x-echo-k", "v")), 2,
                                      ("OK", "OK"), {A: 1, B: 2}, 1, frozenset({A})),
    # Never past --max-attempts, each attempt on another engine.
    "max-attempts": Case("member=a|b|c", UNARY, (FAIL,), 1, ("UNAVAILABLE",), {}, 1,
                         frozenset()),
    # An application error: no retry, no ejection.
    "internal": Case("member=a", UNARY, (("x-fail-code", "INTERNAL"),), 1, ("INTERNAL",),
                     {A: 1}, 0, frozenset()),
    # Out of time: no retry, no ejection.
    "deadline": Case("member=a", UNARY, (("x-sleep-ms", "2000"),), 1, ("DEADLINE_EXCEEDED",),
                     {A: 1}, 0, frozenset(), timeout_s=0.3),
}  # fmt: skip


def alias_of(path: str, case: str) -> str:
    return f"{case}-{path}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoStack]:
    with RefusingPort() as refusing:
        labels = {A: "a", B: "b", C: "c", FAKE: "fake"}
        engines = [EngineSpec(e, {"lang": "zh", "member": m}) for e, m in labels.items()]
        engines[-1] = EngineSpec(FAKE, {"lang": "zh", "member": "fake"}, advertise=refusing.address)
        aliases = {alias_of(p, name): c.selector for p in PATHS for name, c in CASES.items()}
        spec = StackSpec(engines=engines, aliases=aliases, routers=each_data_path(FLAGS))
        with echo_stack(tmp_path_factory.mktemp("paths"), spec) as running:
            yield running


@pytest_asyncio.fixture(loop_scope="module")
async def client(stack: EchoStack) -> AsyncIterator[RouterClient]:
    config = RouterConfig(
        state_file=None,
        max_attempts=MAX_ATTEMPTS,
        idempotent_methods=(UNARY,),
        unary_methods=(UNARY, MUTATE),
        slow_start_s=0,
        max_ejection_percent=100.0,
    )
    async with RouterClient(stack.registry.grpc, config=config) as started:
        aliases = [alias_of("client", name) for name in CASES]

        def routable() -> int:
            table = started.core.table
            return sum(1 for a in aliases for e in table.endpoints(a) if e.routable)

        want = sum(len(CASES[name].selector.split("|")) for name in CASES)
        await wait_until_async(lambda: routable() == want, 10, lambda: f"routable {routable()}")
        yield started


async def call(stack: EchoStack, client: RouterClient, path: str, case: Case, alias: str) -> str:
    """One call on `path`; its status code's name."""
    if path == "client":
        try:
            await client.unary(case.method, b"x", alias=alias, metadata=case.metadata,
                               timeout=case.timeout_s)  # fmt: skip
        except RouterCallError as error:
            return str(error.code().name)
        return "OK"
    async with grpc.aio.insecure_channel(stack.router(path).grpc) as channel:
        metadata = alias_key(alias, *case.metadata)
        try:
            await channel.unary_unary(case.method)(b"x", metadata=metadata,
                                                   timeout=case.timeout_s)  # fmt: skip
        except grpc.aio.AioRpcError as error:
            return str(error.code().name)
        return "OK"


async def samples(stack: EchoStack, client: RouterClient, path: str) -> Samples:
    if path == "client":
        return parse_metrics(generate_latest(client.core.metrics.registry).decode())
    return await stack.metrics_async(path)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", CASES)
async def test_every_path_retries_ejects_and_gives_up_alike(
    stack: EchoStack, client: RouterClient, name: str, path: str
) -> None:
    case, alias = CASES[name], alias_of(path, name)
    short = case.method.rsplit("/", 1)[1]
    before = await stack.calls_async(short)
    codes = tuple([await call(stack, client, path, case, alias) for _ in range(case.calls)])
    after = await stack.calls_async(short)
    taken = {e: after[e] - before[e] for e in ENGINES if after[e] != before[e]}
    seen = await samples(stack, client, path)
    retries = metric(seen, "tidepool_router_retries_total", alias=alias)
    ejected = frozenset(
        e for e in ENGINES
        if metric(seen, "tidepool_router_ejections_total", alias=alias, engine=e, kind="passive")
    )  # fmt: skip
    assert codes == case.codes
    if name == "max-attempts":  # which two of the three is the balancer's choice
        assert sorted(taken.values()) == [1] * MAX_ATTEMPTS
        assert ejected == frozenset(taken)
    else:
        assert taken == case.engine_calls
        assert ejected == case.ejected
    assert retries == case.retries
