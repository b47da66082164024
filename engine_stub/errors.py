"""Errors the engine stub reports to callers, each carrying the gRPC status it becomes.

    EngineError                  INTERNAL
     ├── InvalidInputError       INVALID_ARGUMENT     (field + rule)
     ├── WrongModelError         FAILED_PRECONDITION  (asked for another language)
     ├── NotAcceptingError       UNAVAILABLE          (draining or switching: try elsewhere)
     └── InjectedFaultError      INTERNAL             (--fault-error-rate)

The servicer turns them into statuses at its edge; nothing else knows gRPC codes.
"""

from __future__ import annotations

import grpc


class EngineError(Exception):
    """Base of every error the engine stub returns to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidInputError(EngineError):
    """A request field broke a rule; the message names both."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class WrongModelError(EngineError):
    """The request's language is not the model this engine has loaded."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, requested: str, loaded: str) -> None:
        super().__init__(f"lang: this engine has the {loaded!r} model loaded, not {requested!r}")
        self.requested = requested
        self.loaded = loaded


class NotAcceptingError(EngineError):
    """The engine takes no new work right now; nothing was processed, so retrying is safe."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, reason: str) -> None:
        super().__init__(f"engine is {reason}: not accepting new work, retry on another engine")
        self.reason = reason


class InjectedFaultError(EngineError):
    """A failure injected on purpose by --fault-error-rate."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self) -> None:
        super().__init__("injected fault")
