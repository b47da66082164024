"""What a wrong `--registry` address points at, from how a registry call failed (pure).

Operators mix up the ports of `tidepool up`: the router's, an engine's, or an HTTP
status port. Each fails a registry call in its own way:

- an HTTP/1 port: gRPC cannot even start ("Trying to connect an http1.x server");
- the router proxies every method, so it answers "missing routing key";
- an engine (or any other gRPC server) has no Registry service: UNIMPLEMENTED.
  An engine then tells itself apart by reporting its Evaluator in grpc.health.v1,
  which the client probes (bounded) before asking `not_a_registry` for the words.
"""

from __future__ import annotations

import re
from typing import Literal

Suspect = Literal["http", "router", "grpc"]
"""What the failure suggests: an HTTP/1 port, a tidepool router, another gRPC server."""

_HTTP_STATUS = re.compile(r"http1\.x server \(HTTP status (\d+)\)")


def suspect(code: str, details: str) -> Suspect | None:
    """Whether the failure of a registry call says the address is something else."""
    if "http1.x server" in details:
        return "http"
    if code == "INVALID_ARGUMENT" and "missing routing key" in details:
        return "router"
    if code == "UNIMPLEMENTED":
        return "grpc"
    return None


def not_a_registry(target: str, kind: Suspect, details: str, *, engine: bool = False) -> str:
    """The one-line explanation for the operator; `engine` when the probe recognised one."""
    if kind == "http":
        found = _HTTP_STATUS.search(details)
        status = f": it answered HTTP status {found.group(1)}" if found else ""
        what = f"an HTTP port, probably a /metrics or status port{status}"
    elif kind == "router":
        what = "a tidepool router: it asked for a routing key"
    elif engine:
        what = "a tidepool engine: it serves tidepool.engine.v1.Evaluator"
    else:
        what = "a gRPC server without the tidepool registry service (a router or an engine?)"
    return (
        f"{target} is not a tidepool registry (it is {what}); "
        "give --registry the registry's gRPC address (default 127.0.0.1:7700)"
    )
