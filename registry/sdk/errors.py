"""Errors the engine SDK raises; `grpc.RpcError` never leaves the agent.

    AgentError                      base; `code` is the gRPC status name when one caused it
     ├── RegistrationError          refused for good (bad token, bad field): do not retry
     ├── RegistryUnavailableError   unreachable or a transient failure: retried with backoff
     ├── InstanceNotFoundError      the registry forgot the instance: re-register, same id
     └── AgentStateError            the agent was used out of order (not started, shut down)

`translate` and `translate_status` are the one table from gRPC status codes to these.
"""

from __future__ import annotations

import grpc

PERMANENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
"""Statuses that retrying cannot fix: the credentials, the request or the server must change.

FAILED_PRECONDITION is deliberately not here: the registry uses it for an address
still held by an instance whose lease has not yet lapsed, which clears by itself.
"""


class AgentError(Exception):
    """Base of every error the engine agent raises."""

    def __init__(self, message: str, *, code: str | None = None, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class RegistrationError(AgentError):
    """The registry refused the instance and will keep refusing it."""


class RegistryUnavailableError(AgentError):
    """The registry could not be reached, or failed in a way worth retrying."""


class InstanceOwnedError(RegistryUnavailableError):
    """The id belongs to another live registration (or our secret is not its owner's):
    worth retrying by registering again, which succeeds once that lease has lapsed."""


class InstanceNotFoundError(AgentError):
    """The registry does not know the instance (it restarted or reaped it)."""


class AgentStateError(AgentError):
    """A method was called in the wrong state (before start, after shutdown)."""


def translate(exc: grpc.RpcError, action: str, registry: str) -> AgentError:
    """The agent error for a failed call; `action` names what was attempted ("register")."""
    return translate_status(_code(exc), _details(exc), action, registry)


def translate_status(
    code: grpc.StatusCode | None, details: str, action: str, registry: str
) -> AgentError:
    """The agent error for a call that ended with `code` (None: no status was received)."""
    name = code.name if code is not None else "UNKNOWN"
    message = f"{action} at registry {registry} failed: {name}: {details or 'no details'}"
    if code == grpc.StatusCode.NOT_FOUND:
        return InstanceNotFoundError(message, code=name, details=details)
    if code == grpc.StatusCode.PERMISSION_DENIED and details.startswith("secret:"):
        return InstanceOwnedError(message, code=name, details=details)
    if code in PERMANENT_CODES:
        return RegistrationError(message, code=name, details=details)
    return RegistryUnavailableError(message, code=name, details=details)


def _code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(exc, "code", None)
    if code is None:
        return None
    value = code()
    return value if isinstance(value, grpc.StatusCode) else None


def _details(exc: grpc.RpcError) -> str:
    details = getattr(exc, "details", None)
    text = details() if details is not None else None
    return str(text) if text else ""
