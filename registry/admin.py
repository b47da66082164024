"""Admin operations: weights, drains, labels, directives, aliases and tenant routes.

Each validates its whole input before it touches anything, then goes through the
core's store-then-memory path, so a rejected or failed change leaves no trace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from registry.catalog import InstanceView
from registry.core import RegistryCore
from registry.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from registry.records import AliasRecord, InstanceRecord, TenantRecord
from registry.selector import parse_selector
from registry.validation import (
    MAX_LABELS,
    validate_instance_id,
    validate_label_key,
    validate_labels,
    validate_lang,
    validate_name,
    validate_weight,
)
from tidepool.registry.v1 import registry_pb2 as pb

MAX_TENANT_ALIASES = 16
DEFAULT_SERVICE = "speech"


@dataclass
class AdminOps:
    core: RegistryCore

    async def set_weight(self, instance_id: str, weight: int, clear: bool) -> InstanceView:
        validate_instance_id(instance_id)
        override = None if clear else validate_weight(weight)
        return await self.core.update_instance(
            instance_id, lambda r: replace(r, weight_override=override)
        )

    async def drain(self, instance_id: str) -> InstanceView:
        validate_instance_id(instance_id)
        view = await self.core.update_instance(
            instance_id, lambda r: replace(r, admin_drained=True)
        )
        self.core.offer_directive(instance_id, pb.Directive(kind=pb.Directive.KIND_DRAIN))
        return view

    async def restore(self, instance_id: str) -> InstanceView:
        validate_instance_id(instance_id)
        view = await self.core.update_instance(
            instance_id, lambda r: replace(r, admin_drained=False)
        )
        self.core.offer_directive(instance_id, pb.Directive(kind=pb.Directive.KIND_RESUME))
        return view

    async def set_labels(
        self, instance_id: str, to_set: Mapping[str, str], to_remove: Sequence[str]
    ) -> InstanceView:
        validate_instance_id(instance_id)
        validate_labels(to_set, "set")
        for index, key in enumerate(to_remove):
            validate_label_key(key, f"remove[{index}]")
        clash = set(to_set) & set(to_remove)
        if clash:
            raise InvalidArgumentError("remove", f"label {sorted(clash)[0]!r} is also in set")

        def change(record: InstanceRecord) -> InstanceRecord:
            overrides = dict(record.label_overrides)
            overrides.update(to_set)
            overrides.update(dict.fromkeys(to_remove))
            updated = replace(record, label_overrides=overrides)
            if len(updated.labels) > MAX_LABELS:
                raise InvalidArgumentError(
                    "set", f"an instance may carry at most {MAX_LABELS} labels"
                )
            return updated

        return await self.core.update_instance(instance_id, change)

    def send_directive(self, instance_id: str, directive: pb.Directive) -> InstanceView:
        validate_instance_id(instance_id)
        if directive.kind == pb.Directive.KIND_UNSPECIFIED:
            raise InvalidArgumentError("directive.kind", "must be DRAIN, RESUME or SWITCH_MODEL")
        if directive.kind == pb.Directive.KIND_SWITCH_MODEL:
            validate_lang(directive.model, "directive.model")
        elif directive.model:
            raise InvalidArgumentError("directive.model", "is only allowed with SWITCH_MODEL")
        return self.core.send_directive(instance_id, directive)

    async def put_alias(self, name: str, selector: str, service: str) -> AliasRecord:
        alias = AliasRecord(
            name=validate_name(name, "alias.name"),
            selector=str(parse_selector(selector, "alias.selector")),
            service=validate_name(service or DEFAULT_SERVICE, "alias.service"),
        )
        core = self.core
        async with core.lock:
            core.check_fence()
            await core.store.put_alias(alias)
            core.hub.publish(core.catalog.put_alias(alias, core.clock()))
        return alias

    async def delete_alias(self, name: str) -> None:
        validate_name(name, "name")
        core = self.core
        async with core.lock:
            core.check_fence()
            if name not in core.catalog.aliases:
                raise NotFoundError("alias", name)
            users = [t for t in core.catalog.tenants.values() if name in t.aliases]
            if users:
                raise FailedPreconditionError(
                    f"name: alias {name!r} is used by tenant route "
                    f"{users[0].tenant}/{users[0].lang}; change that route first"
                )
            await core.store.delete_alias(name)
            core.hub.publish(core.catalog.delete_alias(name, core.clock()))

    async def put_tenant(self, tenant: str, lang: str, aliases: Sequence[str]) -> TenantRecord:
        route = TenantRecord(
            tenant=validate_name(tenant, "route.tenant"),
            lang=validate_lang(lang, "route.lang"),
            aliases=tuple(validate_name(a, f"route.aliases[{i}]") for i, a in enumerate(aliases)),
        )
        if not route.aliases or len(route.aliases) > MAX_TENANT_ALIASES:
            raise InvalidArgumentError(
                "route.aliases", f"must list 1 to {MAX_TENANT_ALIASES} aliases"
            )
        if len(set(route.aliases)) != len(route.aliases):
            raise InvalidArgumentError("route.aliases", "must not repeat an alias")
        core = self.core
        async with core.lock:
            core.check_fence()
            for index, alias in enumerate(route.aliases):
                if alias not in core.catalog.aliases:
                    raise FailedPreconditionError(
                        f"route.aliases[{index}]: alias {alias!r} does not exist; create it first"
                    )
            await core.store.put_tenant(route)
            core.hub.publish(core.catalog.put_tenant(route, core.clock()))
        return route

    async def delete_tenant(self, tenant: str, lang: str) -> None:
        validate_name(tenant, "tenant")
        validate_lang(lang)
        core = self.core
        async with core.lock:
            core.check_fence()
            if (tenant, lang) not in core.catalog.tenants:
                raise NotFoundError("tenant route", f"{tenant}/{lang}")
            await core.store.delete_tenant(tenant, lang)
            core.hub.publish(core.catalog.delete_tenant(tenant, lang, core.clock()))
