"""gRPC server reflection, so `grpcurl list` and other generic clients can read a server's schema.

One helper for every tidepool gRPC server, so each lists the same standard
services beside its own: grpc.health.v1 and the reflection service itself.
Reflection answers with schemas only (service, message and field names, never
data), so it is served without a token, like grpc.health.v1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection

STANDARD_SERVICES = (health.SERVICE_NAME, reflection.SERVICE_NAME)
"""Listed by every tidepool gRPC server besides its own services."""


def enable_reflection(server: Any, services: Sequence[str]) -> tuple[str, ...]:
    """Serve reflection for `services` (full names) plus the standard ones; the names listed.

    Add it before any generic handler that claims every method (the router's proxy),
    or that handler would forward reflection calls to an engine. The schemas come
    from the default descriptor pool, so the caller must have imported the generated
    `_pb2` module of each service it names.
    """
    names = (*services, *STANDARD_SERVICES)
    reflection.enable_server_reflection(names, server)
    return names
