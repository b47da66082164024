"""Who owns an instance id: the process that registered it, proven by a secret.

The engine token lets a process join the fleet; it must not let one engine take
over another's id (re-register it elsewhere, deregister it, or break its
heartbeat stream). Register hands the engine a random secret and stores only
its SHA-256; heartbeat, deregister and re-registering a live id must present it.
Once the owner's lease has lapsed, a restarted engine may claim the id afresh.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from registry.errors import PermissionDeniedError

SECRET_BYTES = 24


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def proves(owner_digest: str, presented: str) -> bool:
    """Whether `presented` is the owner's secret; an unowned record ("") accepts anyone."""
    if not owner_digest:
        return True
    return hmac.compare_digest(owner_digest, digest(presented))


def require(owner_digest: str, presented: str, instance_id: str, what: str) -> None:
    """Raise PERMISSION_DENIED unless `presented` proves ownership of `instance_id`."""
    if not proves(owner_digest, presented):
        shown = "no secret" if not presented else "a secret that is not its owner's"
        raise PermissionDeniedError(
            f"secret: {what} of instance {instance_id!r} needs the secret its Register "
            f"returned; got {shown}"
        )
