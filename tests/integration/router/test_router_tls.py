"""TLS on both of the router's hops, on both data paths, with real processes and real handshakes.

One module-scoped fleet: a registry, four engine stubs and, per data path, four
routers, all started at once. Certificates come from throwaway CAs made with
`openssl` (`tests.support.tls`):

- engine `plain-a` serves plaintext; `ip-a` a certificate with only the IP SAN
  127.0.0.1; `dns-a` one with only the DNS SAN engine.test; `wrong-a` an IP-SAN
  certificate from another CA. Each sits alone in a pool, so aliases pick them.
- routers: `listener` serves callers over TLS and dials engines in plaintext;
  `engine` dials engines over TLS (`--engine-ca`); `named` verifies every engine
  as engine.test (`--engine-server-name`); `strict` is `engine` with one attempt
  a call, so a failed handshake reaches the caller instead of a retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from router.config import RouterConfig
from router.core import build_core
from router.relay import start_relay
from tests.support.fleet_harness import (
    CALL_TIMEOUT_S,
    EVALUATE,
    READ_TOKEN,
    ROUTER_READY,
    START_S,
    EngineSpec,
    Fleet,
    Router,
    evaluate_request,
    tidepool_args,
    wait_for_metric,
    wait_routable,
)
from tests.support.processes import RunningProcess, child_env, spawn
from tests.support.router_harness import DATA_PATHS
from tests.support.tls import CertPair, ThrowawayCa
from tidepool.engine.v1 import evaluator_pb2 as epb

ENGINE_NAME = "engine.test"
ALIASES = {
    "plain": "pool=plain",
    "tls-ip": "pool=ip",
    "tls-dns": "pool=dns",
    "wrong": "pool=wrong",
    "mixed": "pool=ip|wrong",
}
EXIT_S = 20.0


@dataclass
class TlsFleet:
    ca: ThrowawayCa
    """Signed the router's listener certificate and the good engines' ones."""
    listener: CertPair
    """The routers' listener certificate (IP SAN 127.0.0.1)."""
    routers: dict[str, Router]
    """By "<role>-<data path>"."""

    def router(self, role: str, data_path: str) -> Router:
        return self.routers[f"{role}-{data_path}"]


@pytest.fixture(scope="module")
def tls_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsFleet]:
    tmp = tmp_path_factory.mktemp("tls")
    ca, other = ThrowawayCa.create(tmp / "ca"), ThrowawayCa.create(tmp / "other-ca", "other CA")
    listener = ca.issue("router", ips=("127.0.0.1",))
    with Fleet(tmp) as fleet:
        fleet.start_registry(ttl_s=2.0)
        fleet.put_aliases(ALIASES)
        fleet.start_engines(
            EngineSpec("plain-a", pool="plain"),
            EngineSpec("ip-a", pool="ip", extra=ca.issue("ip", ips=("127.0.0.1",)).flags()),
            EngineSpec("dns-a", pool="dns", extra=ca.issue("dns", dns=(ENGINE_NAME,)).flags()),
            EngineSpec("wrong-a", pool="wrong", extra=other.issue("w", ips=("127.0.0.1",)).flags()),
        )
        engine_ca = ("--engine-ca", str(ca.cert))
        roles = {
            "listener": listener.flags(),
            "engine": engine_ca,
            "named": (*engine_ca, "--engine-server-name", ENGINE_NAME),
            "strict": (*engine_ca, "--max-attempts", "1"),
        }
        flags = {
            f"{role}-{path}": (*extra, "--data-path", path)
            for role, extra in roles.items()
            for path in DATA_PATHS
        }
        yield TlsFleet(ca, listener, start_routers(fleet, flags))


def start_routers(fleet: Fleet, flags: dict[str, tuple[str, ...]]) -> dict[str, Router]:
    """Every router at once (they start in parallel), then wait for each one's ready line."""
    spawned = {}
    for name, extra in flags.items():
        state = fleet.tmp_path / name / "view.json"
        args = tidepool_args(
            "router", "serve",
            *("--registry", fleet.registry_address, "--token", READ_TOKEN),
            *("--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"),
            *("--state-file", str(state), "--slow-start-s", "0"),
            *extra,
        )  # fmt: skip
        spawned[name] = (fleet.processes.spawn(args), state)
    for process, _ in spawned.values():
        process.wait_ready(ROUTER_READY, START_S)
    return {name: Router(process, state) for name, (process, state) in spawned.items()}


def tls_channel(address: str, ca: ThrowawayCa) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca.cert.read_bytes()))


async def evaluate(channel: grpc.aio.Channel, alias: str) -> str:
    """One Evaluate through the router; the id of the engine that answered."""
    call = channel.unary_unary(
        EVALUATE,
        request_serializer=epb.EvaluateRequest.SerializeToString,
        response_deserializer=epb.EvaluateResponse.FromString,
    )
    metadata = (("x-tidepool-alias", alias),)
    response = await call(evaluate_request(), metadata=metadata, timeout=CALL_TIMEOUT_S)
    return str(response.engine_id)


async def evaluate_error(channel: grpc.aio.Channel, alias: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await evaluate(channel, alias)
    return raised.value


# ---- the caller's hop: --tls-cert / --tls-key ------------------------------------------------


@pytest.mark.parametrize("data_path", DATA_PATHS)
async def test_a_tls_caller_is_routed_to_plaintext_engines(
    tls_fleet: TlsFleet, data_path: str
) -> None:
    router = tls_fleet.router("listener", data_path)
    await wait_routable(router, "plain", 1)
    async with tls_channel(router.grpc, tls_fleet.ca) as channel:
        assert [await evaluate(channel, "plain") for _ in range(3)] == ["plain-a"] * 3


@pytest.mark.parametrize("data_path", DATA_PATHS)
async def test_a_plaintext_caller_to_a_tls_listener_fails_cleanly(
    tls_fleet: TlsFleet, data_path: str
) -> None:
    router = tls_fleet.router("listener", data_path)
    await wait_routable(router, "plain", 1)
    started = time.monotonic()
    async with grpc.aio.insecure_channel(router.grpc) as plaintext:
        error = await evaluate_error(plaintext, "plain")
    assert error.code() is grpc.StatusCode.UNAVAILABLE, error.details()
    assert time.monotonic() - started < CALL_TIMEOUT_S, "the plaintext call hung until its deadline"
    async with tls_channel(router.grpc, tls_fleet.ca) as channel:
        assert await evaluate(channel, "plain") == "plain-a"
    assert router.process.returncode is None, router.process.describe("the router exited")


async def test_a_failed_caller_handshake_leaves_nothing_behind_in_the_relay(
    tls_fleet: TlsFleet,
) -> None:
    """In process: a plaintext caller's dropped connection must not hold up a graceful stop."""
    pair = tls_fleet.listener
    config = RouterConfig(
        registry="127.0.0.1:1", listen="127.0.0.1:0", state_file=None,
        tls_cert=str(pair.cert), tls_key=str(pair.key),
    )  # fmt: skip
    core = build_core(config)
    relay = await start_relay(core, "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        async with asyncio.timeout(CALL_TIMEOUT_S):
            await reader.read()  # until the relay drops the connection
        writer.close()
        await writer.wait_closed()
        assert not relay.connections, "a connection that never got past TLS is still counted"
    finally:
        async with asyncio.timeout(2.0):  # the grace is 10 s: only waiting on a ghost takes it
            await relay.close(grace_s=10.0)
        await core.close()


# ---- the engine's hop: --engine-ca / --engine-server-name ------------------------------------


@pytest.mark.parametrize("data_path", DATA_PATHS)
async def test_engines_are_dialled_over_tls_verified_by_ip_san(
    tls_fleet: TlsFleet, data_path: str
) -> None:
    router = tls_fleet.router("engine", data_path)
    await wait_routable(router, "tls-ip", 1)
    async with grpc.aio.insecure_channel(router.grpc) as channel:
        assert [await evaluate(channel, "tls-ip") for _ in range(3)] == ["ip-a"] * 3
        # Without --engine-server-name a certificate for engine.test is no certificate for
        # 127.0.0.1: the handshake fails, and the caller hears UNAVAILABLE.
        await wait_routable(router, "tls-dns", 1)
        error = await evaluate_error(channel, "tls-dns")
        assert error.code() is grpc.StatusCode.UNAVAILABLE, error.details()


@pytest.mark.parametrize("data_path", DATA_PATHS)
async def test_engine_server_name_verifies_every_engine_against_that_name(
    tls_fleet: TlsFleet, data_path: str
) -> None:
    router = tls_fleet.router("named", data_path)
    await wait_routable(router, "tls-dns", 1)
    async with grpc.aio.insecure_channel(router.grpc) as channel:
        assert [await evaluate(channel, "tls-dns") for _ in range(3)] == ["dns-a"] * 3


@pytest.mark.parametrize("data_path", DATA_PATHS)
async def test_an_engine_with_an_untrusted_certificate_is_ejected_and_the_call_fails_over(
    tls_fleet: TlsFleet, data_path: str
) -> None:
    router = tls_fleet.router("engine", data_path)
    await wait_routable(router, "mixed", 2)
    async with grpc.aio.insecure_channel(router.grpc) as channel:
        assert [await evaluate(channel, "mixed") for _ in range(6)] == ["ip-a"] * 6
    await wait_for_metric(
        router,
        lambda m: (
            m.total("tidepool_router_ejections_total", engine="wrong-a", kind="passive") >= 1
            and m.total("tidepool_router_retries_total", alias="mixed", reason="connect") >= 1
        ),
        5.0,
        "a passive ejection of wrong-a and a connect retry in 'mixed'",
    )


@pytest.mark.parametrize("data_path", DATA_PATHS)
async def test_a_failed_engine_handshake_is_unavailable_naming_it_and_the_router_serves_on(
    tls_fleet: TlsFleet, data_path: str
) -> None:
    router = tls_fleet.router("strict", data_path)
    await wait_routable(router, "wrong", 1)
    await wait_routable(router, "tls-ip", 1)
    async with grpc.aio.insecure_channel(router.grpc) as channel:
        error = await evaluate_error(channel, "wrong")
        assert error.code() is grpc.StatusCode.UNAVAILABLE, error.details()
        details = (error.details() or "").lower()
        assert "connect" in details, details
        assert "certificate" in details or "handshake" in details, details
        assert await evaluate(channel, "tls-ip") == "ip-a"
    assert router.process.returncode is None, router.process.describe("the router exited")


# ---- bad settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BadStart:
    """Router flags and environment that must stop it with `code`, naming `names`."""

    args: tuple[str, ...]
    env: dict[str, str]
    code: int
    names: str

    def spawn(self, data_path: str) -> RunningProcess:
        args = tidepool_args(
            "router", "serve", "--registry", "127.0.0.1:1", "--listen", "127.0.0.1:0",
            "--http-listen", "127.0.0.1:0", "--state-file", "", "--data-path", data_path,
            *self.args,
        )  # fmt: skip
        return spawn(args, env=child_env(self.env))


async def test_bad_tls_settings_stop_the_router_with_one_line_naming_the_flag(
    tmp_path: Path,
) -> None:
    missing = str(tmp_path / "missing.pem")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    pair = CertPair(not_pem, not_pem)
    cases = [
        BadStart(("--tls-cert", missing), {}, 2, "--tls-cert"),
        BadStart((), {"TIDEPOOL_ROUTER_TLS_KEY": missing}, 2, "--tls-cert"),
        BadStart(("--engine-server-name", ENGINE_NAME), {}, 2, "--engine-server-name"),
        BadStart(("--tls-cert", missing, "--tls-key", missing), {}, 1, "--tls-cert"),
        BadStart(pair.flags(), {}, 1, "--tls-cert"),
        BadStart(("--engine-ca", missing), {}, 1, "--engine-ca"),
        BadStart(("--engine-ca", str(not_pem)), {}, 1, "--engine-ca"),
    ]
    # The files are read and checked in the core both data paths share: each case runs
    # once, on the two paths in turn, so the test stays quick on a small machine.
    paths = DATA_PATHS * len(cases)
    processes = [case.spawn(path) for case, path in zip(cases, paths, strict=False)]
    codes = await asyncio.gather(*(asyncio.to_thread(p.wait, EXIT_S) for p in processes))
    for case, process, code in zip(cases, processes, codes, strict=True):
        lines = process.stderr().strip().splitlines()
        assert code == case.code, process.describe(f"{case} exited {code}")
        assert len(lines) == 1, process.describe(f"{case}: not one line on stderr")
        assert case.names in lines[0], process.describe(f"{case}: {case.names} not named")
