"""Aliases, tenant routes and Resolve against a real registry."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.support.registry_harness import (
    Clients,
    RawEngine,
    clients,
    registration,
    running_registry,
    wait_for,
)
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = pytest.mark.timeout(30)

STEADY = {"heartbeat_interval_s": 1.0, "ttl_s": 30.0, "restart_grace_s": 30.0}


async def _alias(c: Clients, name: str, selector: str, service: str = "") -> pb.Alias:
    request = pb.PutAliasRequest(alias=pb.Alias(name=name, selector=selector, service=service))
    return await c.admin.PutAlias(request)  # type: ignore[no-any-return]


async def _tenant(c: Clients, tenant: str, lang: str, *aliases: str) -> pb.TenantRoute:
    route = pb.TenantRoute(tenant=tenant, lang=lang, aliases=list(aliases))
    return await c.admin.PutTenant(pb.PutTenantRequest(route=route))  # type: ignore[no-any-return]


async def _resolve(c: Clients, **request: str) -> tuple[str, dict[str, int]]:
    """The answering alias and {instance id: effective weight}."""
    response = await c.registry.Resolve(pb.ResolveRequest(**request))
    return response.alias, {i.id: i.effective_weight for i in response.instances}


async def _register(
    c: Clients, port: int, instance_id: str, weight: int = 100, **labels: str
) -> None:
    await c.registry.Register(
        registration(port, instance_id=instance_id, weight=weight, labels=labels)
    )


async def test_aliases_can_be_put_listed_replaced_and_deleted(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        stored = await _alias(c, "zh-cheap", " tier = idc|cvm , lang=zh ")
        # Stored in one canonical spelling; the service defaults to the big pool.
        assert (stored.name, stored.selector, stored.service) == (
            "zh-cheap",
            "lang=zh,tier=cvm|idc",
            "speech",
        )
        await _alias(c, "en-public", "lang=en", service="speech")
        listed = await c.registry.ListAliases(pb.ListAliasesRequest())
        assert [(a.name, a.selector) for a in listed.aliases] == [
            ("en-public", "lang=en"),
            ("zh-cheap", "lang=zh,tier=cvm|idc"),
        ]
        await _alias(c, "zh-cheap", "lang=zh")
        await c.admin.DeleteAlias(pb.DeleteAliasRequest(name="en-public"))
        listed = await c.registry.ListAliases(pb.ListAliasesRequest())
        assert [(a.name, a.selector) for a in listed.aliases] == [("zh-cheap", "lang=zh")]


async def test_tenant_routes_can_be_put_listed_replaced_and_deleted(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _alias(c, "zh-acme", "pool=zh-acme")
        await _alias(c, "zh-public", "lang=zh")
        await _alias(c, "en-public", "lang=en")
        stored = await _tenant(c, "acme", "zh", "zh-acme", "zh-public")
        assert list(stored.aliases) == ["zh-acme", "zh-public"]
        await _tenant(c, "acme", "en", "en-public")
        await _tenant(c, "acme", "zh", "zh-public")  # replaces the zh route
        listed = await c.registry.ListTenants(pb.ListTenantsRequest())
        assert [(t.tenant, t.lang, list(t.aliases)) for t in listed.tenants] == [
            ("acme", "en", ["en-public"]),
            ("acme", "zh", ["zh-public"]),
        ]
        await c.admin.DeleteTenant(pb.DeleteTenantRequest(tenant="acme", lang="en"))
        listed = await c.registry.ListTenants(pb.ListTenantsRequest())
        assert [(t.tenant, t.lang) for t in listed.tenants] == [("acme", "zh")]
        # Once no route uses it, the alias can go.
        await c.admin.DeleteAlias(pb.DeleteAliasRequest(name="en-public"))


async def test_resolve_returns_only_ready_undrained_instances_with_effective_weights(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _register(c, 9001, "zh-1", weight=100, lang="zh")
        await _register(c, 9002, "zh-2", weight=60, lang="zh")
        await _register(c, 9003, "zh-3", weight=80, lang="zh")
        await _register(c, 9004, "zh-4", weight=0, lang="zh")  # weight 0: registered, no traffic
        await _register(c, 9005, "en-1", weight=100, lang="en")
        await _alias(c, "zh-public", "lang=zh")
        assert await _resolve(c, alias="zh-public") == (
            "zh-public",
            {"zh-1": 100, "zh-2": 60, "zh-3": 80},
        )

        await c.admin.Drain(pb.DrainRequest(instance_id="zh-1"))
        await c.admin.SetWeight(pb.SetWeightRequest(instance_id="zh-2", weight=250))
        engine = RawEngine(c, "zh-3")
        await engine.attach()
        engine.break_stream()

        async def zh3_gone() -> bool:
            return "zh-3" not in (await _resolve(c, alias="zh-public"))[1]

        await wait_for(zh3_gone, 2.0, "an unhealthy instance should leave the answer")
        assert await _resolve(c, alias="zh-public") == ("zh-public", {"zh-2": 250})

        await c.admin.Restore(pb.RestoreRequest(instance_id="zh-1"))
        await c.admin.SetWeight(pb.SetWeightRequest(instance_id="zh-2", clear=True))
        await c.admin.SetWeight(pb.SetWeightRequest(instance_id="zh-4", weight=30))
        assert await _resolve(c, alias="zh-public") == (
            "zh-public",
            {"zh-1": 100, "zh-2": 60, "zh-4": 30},
        )


async def test_weight_override_of_zero_drains_and_is_flagged(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _register(c, 9001, "zh-1", lang="zh")
        await _alias(c, "zh-public", "lang=zh")
        instance = await c.admin.SetWeight(pb.SetWeightRequest(instance_id="zh-1", weight=0))
        assert (instance.state, instance.weight, instance.effective_weight) == (
            pb.INSTANCE_STATE_DRAINING,
            100,
            0,
        )
        assert instance.weight_overridden
        assert await _resolve(c, alias="zh-public") == ("zh-public", {})


async def test_selector_with_a_set_of_values_picks_each_of_them(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _register(c, 9001, "idc-1", lang="zh", tier="idc")
        await _register(c, 9002, "cvm-1", lang="zh", tier="cvm")
        await _register(c, 9003, "sls-1", lang="zh", tier="serverless")
        await _register(c, 9004, "en-idc", lang="en", tier="idc")
        await _alias(c, "zh-reserved", "tier=idc|cvm,lang=zh")
        _, resolved = await _resolve(c, alias="zh-reserved")
        assert set(resolved) == {"idc-1", "cvm-1"}


async def test_relabelling_moves_an_instance_between_aliases(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _register(c, 9001, "e-1", lang="zh")
        await _alias(c, "zh-public", "lang=zh")
        await _alias(c, "en-public", "lang=en")
        await c.admin.SetLabels(pb.SetLabelsRequest(instance_id="e-1", set={"lang": "en"}))
        assert await _resolve(c, alias="zh-public") == ("zh-public", {})
        assert await _resolve(c, alias="en-public") == ("en-public", {"e-1": 100})
        # Removing a label hides the engine's own value too: now in neither pool.
        await c.admin.SetLabels(pb.SetLabelsRequest(instance_id="e-1", remove=["lang"]))
        assert await _resolve(c, alias="zh-public") == ("zh-public", {})
        assert await _resolve(c, alias="en-public") == ("en-public", {})


async def test_tenant_resolves_to_its_dedicated_pool_then_falls_through(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _register(c, 9001, "acme-1", lang="zh", pool="zh-acme")
        await _register(c, 9002, "pub-1", lang="zh", pool="zh-public")
        await _alias(c, "zh-acme", "pool=zh-acme")
        await _alias(c, "zh-public", "pool=zh-public")
        await _tenant(c, "acme", "zh", "zh-acme", "zh-public")
        assert await _resolve(c, tenant="acme", lang="zh") == ("zh-acme", {"acme-1": 100})

        await c.admin.Drain(pb.DrainRequest(instance_id="acme-1"))
        assert await _resolve(c, tenant="acme", lang="zh") == ("zh-public", {"pub-1": 100})

        await c.admin.Drain(pb.DrainRequest(instance_id="pub-1"))
        assert await _resolve(c, tenant="acme", lang="zh") == ("zh-acme", {})

        await c.admin.Restore(pb.RestoreRequest(instance_id="acme-1"))
        assert await _resolve(c, tenant="acme", lang="zh") == ("zh-acme", {"acme-1": 100})


@pytest.mark.parametrize(
    ("request_", "missing"),
    [
        (pb.ResolveRequest(alias="nowhere"), "alias 'nowhere'"),
        (pb.ResolveRequest(tenant="nobody", lang="zh"), "tenant route 'nobody/zh'"),
    ],
)
async def test_resolving_an_unknown_alias_or_tenant_is_not_found(
    tmp_path: Path, request_: pb.ResolveRequest, missing: str
) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await c.registry.Resolve(request_)
        assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND
        assert missing in (excinfo.value.details() or "")


async def test_resolve_carries_the_current_revision(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        await _register(c, 9001, "e-1", lang="zh")
        await _alias(c, "zh-public", "lang=zh")
        first = await c.registry.Resolve(pb.ResolveRequest(alias="zh-public"))
        await c.admin.SetWeight(pb.SetWeightRequest(instance_id="e-1", weight=9))
        second = await c.registry.Resolve(pb.ResolveRequest(alias="zh-public"))
        listed = await c.registry.ListInstances(pb.ListInstancesRequest())
        assert first.revision < second.revision == listed.revision
