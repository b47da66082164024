"""A registered IPv6 address is stored, listed and compared in its one canonical form."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.registry_harness import clients, registration, running_registry
from tidepool.registry.v1 import registry_pb2 as pb

pytestmark = pytest.mark.timeout(30)

STEADY = {"heartbeat_interval_s": 1.0, "ttl_s": 30.0, "restart_grace_s": 30.0}
SPELLINGS = ("[::1]:9001", "[0:0:0:0:0:0:0:1]:9001", "[::0001]:9001", "[0::1]:9001")


async def test_every_spelling_of_an_ipv6_address_is_stored_as_one(tmp_path: Path) -> None:
    async with running_registry(tmp_path, **STEADY) as server, clients(server) as c:
        secret = ""
        for n, spelling in enumerate(SPELLINGS):
            request = registration(0, instance_id="v6", address=spelling, secret=secret)
            secret = (await c.registry.Register(request)).secret or secret
            listed = await c.registry.ListInstances(pb.ListInstancesRequest())
            addresses = {i.id: i.address for i in listed.instances}
            assert addresses == {"v6": "[::1]:9001"}, f"after spelling {n}: {spelling}"
