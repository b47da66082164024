"""Several registry replicas behind one setting: `--registry A,B,C`.

Every client of the registry (engines, routers, `ctl`, the scheduler) talks to one
replica at a time and moves to the next when that one cannot be reached. Any replica
serves any client (they share one state over etcd), so which one is only a matter of
who answers. Pure: `ReplicaRotation` decides, the caller sleeps and connects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tidepool.runtime.backoff import Backoff
from tidepool.runtime.options import parse_host_port, setting

MAX_REPLICAS = 16


def parse_addresses(text: str) -> tuple[str, ...]:
    """Split "A,B,C" into HOST:PORT addresses; each is checked, duplicates are refused."""
    addresses = tuple(part.strip() for part in text.split(",") if part.strip())
    if not addresses:
        raise ValueError(f"expected HOST:PORT[,HOST:PORT…], got {text!r}")
    if len(addresses) > MAX_REPLICAS:
        raise ValueError(f"at most {MAX_REPLICAS} addresses, got {len(addresses)}")
    for address in addresses:
        parse_host_port(address)
    if len(set(addresses)) != len(addresses):
        raise ValueError(f"an address is given twice in {text!r}")
    return addresses


def registry_addresses(text: str) -> str:
    """An option parser: a registry address list, checked and kept as written."""
    parse_addresses(text)
    return text


def is_address_list(text: str) -> bool:
    """Whether `parse_addresses` accepts `text` (for configs built without the parser)."""
    try:
        parse_addresses(text)
    except ValueError:
        return False
    return True


DEFAULT_REGISTRY = "127.0.0.1:7700"
REGISTRY_HELP = "registry gRPC address; replicas comma-separated (the next is tried on failure)"


def registry_setting() -> Any:
    """The `registry` field every client's config declares: `TIDEPOOL_REGISTRY`, a list."""
    return setting(DEFAULT_REGISTRY, REGISTRY_HELP, registry_addresses, env="TIDEPOOL_REGISTRY")


class ReplicaRotation:
    """Which replica to use now, and how long to wait before the next attempt.

    A failure moves to the next replica at once; only when every replica failed in a
    row does the caller wait, with jittered backoff capped at `backoff`'s maximum (1 s
    for tidepool's clients), so losing one replica costs one connection attempt.
    """

    def __init__(self, addresses: Sequence[str], backoff: Backoff) -> None:
        if not addresses:
            raise ValueError("addresses: at least one registry address is needed")
        self.addresses = tuple(addresses)
        self._backoff = backoff
        self._index = 0
        self._failures_in_a_row = 0

    @property
    def current(self) -> str:
        return self.addresses[self._index]

    def succeeded(self) -> None:
        """The current replica answered: stay on it, and start backoff afresh."""
        self._failures_in_a_row = 0
        self._backoff.reset()

    def failed(self) -> float:
        """The current replica failed: move to the next; returns seconds to wait first."""
        self._failures_in_a_row += 1
        self._index = (self._index + 1) % len(self.addresses)
        if self._failures_in_a_row < len(self.addresses):
            return 0.0
        return self._backoff.next_delay()


def rebind(method: Any, old_stubs: Sequence[object], new_stubs: Sequence[object]) -> Any:
    """The same RPC method on another replica's stubs (stubs given in the same order).

    Why: call sites pass a bound stub method (`client.admin.Drain`); when the call
    moves to the next replica, the method must be the one of the new channel.
    """
    for old, new in zip(old_stubs, new_stubs, strict=True):
        for name, value in vars(old).items():
            if value is method:
                return getattr(new, name)
    raise ValueError("rebind: the method belongs to none of the stubs")
