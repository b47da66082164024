"""Errors of the scheduler process.

    SchedulerError
     ├── RegistryCallError   a registry call failed (carries the gRPC code name and method)
     │    └── FencedError    the registry refused our fencing number: we are no longer leader
     └── ProviderError       a provider could not start or stop an engine

`grpc.RpcError` never leaves `scheduler/registry_client.py`.
"""

from __future__ import annotations


class SchedulerError(Exception):
    """Base of the scheduler's errors."""


class RegistryCallError(SchedulerError):
    def __init__(self, method: str, code: str, details: str) -> None:
        super().__init__(f"{method}: {code}: {details}")
        self.method = method
        self.code = code
        self.details = details


class FencedError(RegistryCallError):
    """A write carried a fencing number the registry no longer accepts."""


class ProviderError(SchedulerError):
    """A provider failed to start or stop capacity."""
