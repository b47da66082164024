"""Token checks: which role each method needs, and constant-time comparison of tokens."""

from __future__ import annotations

import enum
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from registry.errors import PermissionDeniedError, UnauthenticatedError
from tidepool.runtime.channel import AUTHORIZATION

BEARER = "Bearer "


class Role(enum.Enum):
    ENGINE = "engine"  # register, heartbeat, deregister
    READ = "read"  # watch, resolve, listings
    ADMIN = "admin"  # every change to fleet or routing state


@dataclass(frozen=True)
class TokenAuth:
    """The configured tokens. A role with no token that grants it is open."""

    engine_token: str | None = None
    read_token: str | None = None
    admin_token: str | None = None

    def _granting(self, role: Role) -> tuple[str, ...]:
        by_role = {
            Role.ENGINE: (self.engine_token, self.admin_token),
            Role.READ: (self.read_token, self.admin_token),
            Role.ADMIN: (self.admin_token,),
        }
        return tuple(token for token in by_role[role] if token)

    def open_roles(self) -> list[Role]:
        """Roles anyone can exercise; the server warns about them at start-up."""
        return [role for role in Role if not self._granting(role)]

    def check(self, role: Role, metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
        """Raise unless the call's bearer token grants `role`; nothing has changed yet."""
        granting = self._granting(role)
        if not granting:
            return
        presented = _bearer(metadata)
        if presented is None:
            raise UnauthenticatedError(
                f"this method needs the {role.value} token: send 'authorization: Bearer <token>'"
            )
        if any(_same(presented, token) for token in granting):
            return
        known = (self.engine_token, self.read_token, self.admin_token)
        if any(token and _same(presented, token) for token in known):
            raise PermissionDeniedError(f"this token does not grant {role.value} access")
        raise UnauthenticatedError("the presented token is not valid")


def _same(presented: str, token: str) -> bool:
    return hmac.compare_digest(presented.encode(), token.encode())


def _bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key != AUTHORIZATION or not isinstance(value, str):
            continue
        # RFC 7235: the scheme is case-insensitive ("bearer", "BEARER"), then 1*SP.
        scheme, space, credential = value.partition(" ")
        if space and scheme.lower() == BEARER.strip().lower():
            return credential.lstrip(" ")
    return None
