"""Errors raised by the registry, and the gRPC status each one becomes.

    RegistryError
     ├── InvalidArgumentError      INVALID_ARGUMENT   (field + rule)
     ├── NotFoundError             NOT_FOUND
     ├── FailedPreconditionError   FAILED_PRECONDITION
     ├── UnauthenticatedError      UNAUTHENTICATED
     ├── PermissionDeniedError     PERMISSION_DENIED
     ├── RateLimitedError          RESOURCE_EXHAUSTED
     └── StoreUnavailableError     UNAVAILABLE

The servicer edge turns these into statuses through `STATUS_BY_ERROR`; nothing
else in the registry knows about gRPC status codes.
"""

from __future__ import annotations

import grpc


class RegistryError(Exception):
    """Base of every error the registry reports to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgumentError(RegistryError):
    """A request field broke a rule; the message names both."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class NotFoundError(RegistryError):
    """The named instance, alias or tenant route does not exist."""

    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} not found")
        self.kind = kind
        self.name = name


class FailedPreconditionError(RegistryError):
    """The request is well formed but the current state forbids it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class UnauthenticatedError(RegistryError):
    """No credentials were presented where some are required."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(RegistryError):
    """The presented token does not grant this method."""

    code = grpc.StatusCode.PERMISSION_DENIED


class RateLimitedError(RegistryError):
    """The caller exceeded its request budget; it should back off and retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class StoreUnavailableError(RegistryError):
    """The durable store could not be written; nothing was changed."""

    code = grpc.StatusCode.UNAVAILABLE
