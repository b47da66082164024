"""Rules for the address an instance registers, which every router will dial."""

# A router connects to whatever address is registered, so a loose parser is a
# request-forgery path: `2130706433:80`, `0177.0.0.1:80` or `localhost:80` would
# all let a caller point routers at the router's own host. Only one spelling of
# each address is accepted, and only addresses a remote router can sensibly dial.

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import TypeAlias
from urllib.parse import unquote

from registry.errors import InvalidArgumentError, PermissionDeniedError
from registry.validation import quote

__all__ = [
    "AddressPolicy",
    "canonical_address",
    "check_claim",
    "format_address",
    "parse_address",
    "parse_peer",
    "parse_ranges",
]

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPNetwork: TypeAlias = IPv4Network | IPv6Network

# Longest valid form is a full IPv6 literal with brackets and port (47 chars); the
# cap only keeps pathological input cheap.
_MAX_ADDRESS_LEN = 64
_FORM_RULE = "must be a.b.c.d:port or [ipv6]:port"
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_DOTTED_QUAD = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
# Starts with a digit and uses only characters of numeric IPv4 spellings (integer,
# hex, octal, shortened): worth a more specific message than "host name".
_NUMERIC_HOST = re.compile(r"[0-9][0-9a-fA-FxX.]*")
_THIS_NETWORK = IPv4Network("0.0.0.0/8")
_BROADCAST = IPv4Address("255.255.255.255")


def parse_address(text: str, field: str = "address") -> tuple[IPAddress, int]:
    """Parse a registered `a.b.c.d:port` or `[ipv6]:port` into an address and port."""
    if len(text) > _MAX_ADDRESS_LEN:
        raise InvalidArgumentError(field, f"{_FORM_RULE}, at most {_MAX_ADDRESS_LEN} characters")
    if any(char.isspace() for char in text):
        raise InvalidArgumentError(field, f"must not contain whitespace, got {quote(text)}")
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise InvalidArgumentError(field, f"{_FORM_RULE}, got {quote(text)}")
        ip: IPAddress = _parse_ipv6(host, field)
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise InvalidArgumentError(
                field, f"must include a port: {_FORM_RULE}, got {quote(text)}"
            )
        if ":" in host:
            raise InvalidArgumentError(
                field, f"an IPv6 address needs brackets: [ipv6]:port, got {quote(text)}"
            )
        ip = _parse_ipv4(host, field)
    port = _parse_port(port_text, field)
    _check_dialable(ip, field)
    return ip, port


def format_address(ip: IPAddress, port: int) -> str:
    """Write an address and port in the one form `parse_address` accepts."""
    if isinstance(ip, IPv6Address):
        # RFC 5952: lower case, leading zeros dropped, the longest zero run as `::`.
        return f"[{ip.compressed}]:{port}"
    return f"{ip}:{port}"


def canonical_address(text: str, field: str = "address") -> str:
    """The one spelling of a registered address: what the registry stores and compares.

    `[::1]:80`, `[0:0:0:0:0:0:0:1]:80` and `[::0001]:80` are one endpoint, so they must
    be one instance (and one conflict check), as RFC 5952 asks of every IPv6 text form.
    Raises `InvalidArgumentError` naming `field` when `text` is not a valid address.
    """
    return format_address(*parse_address(text, field))


def _parse_port(text: str, field: str) -> int:
    # The regex, not int(), decides: int() also takes "+80", " 80", "0_80" and "٨٠".
    if _PORT.fullmatch(text) is None or int(text) > 65535:
        raise InvalidArgumentError(
            field,
            "port must be a decimal integer from 1 to 65535 without sign or leading zeros,"
            f" got {quote(text)}",
        )
    return int(text)


def _parse_ipv4(host: str, field: str) -> IPv4Address:
    if _DOTTED_QUAD.fullmatch(host) is None:
        if _NUMERIC_HOST.fullmatch(host) is not None:
            raise InvalidArgumentError(
                field,
                "must be four decimal octets a.b.c.d (no integer, hex, octal or shortened forms),"
                f" got {quote(host)}",
            )
        raise InvalidArgumentError(
            field, f"must be a literal IP address, not a host name, got {quote(host)}"
        )
    for octet in host.split("."):
        if len(octet) > 1 and octet.startswith("0"):
            # Many resolvers read 0177 as octal 127, so a leading zero is ambiguous.
            raise InvalidArgumentError(
                field, f"octet {quote(octet)} has a leading zero; octets are written in decimal"
            )
        if int(octet) > 255:
            raise InvalidArgumentError(field, f"octet {quote(octet)} must be from 0 to 255")
    return IPv4Address(host)


def _parse_ipv6(host: str, field: str) -> IPv6Address:
    if "%" in host:
        # A zone names an interface on the registering machine, meaningless to routers.
        raise InvalidArgumentError(
            field, f"must not carry an IPv6 zone id (%...), got {quote(host)}"
        )
    try:
        ip = IPv6Address(host)
    except ValueError:
        raise InvalidArgumentError(
            field, f"brackets must hold an IPv6 address, got {quote(host)}"
        ) from None
    if ip.ipv4_mapped is not None or _is_ipv4_compatible(ip):
        # These reach an IPv4 host through an IPv6 spelling, dodging the IPv4 checks.
        raise InvalidArgumentError(
            field,
            "must not be an IPv4-mapped or IPv4-compatible IPv6 address; register the IPv4"
            f" address as a.b.c.d:port, got {quote(host)}",
        )
    return ip


def _is_ipv4_compatible(ip: IPv6Address) -> bool:
    # ::a.b.c.d (RFC 4291, deprecated) is ::/96 minus :: and ::1, which have their own rules.
    return int(ip) >> 32 == 0 and int(ip) > 1


def _check_dialable(ip: IPAddress, field: str) -> None:
    # Loopback is deliberately allowed here: whether a caller may claim it is a
    # policy decision made by `check_claim`, which knows who is asking.
    if ip.is_unspecified:
        raise InvalidArgumentError(
            field, f"must not be the unspecified address {ip}; register an address routers can dial"
        )
    if isinstance(ip, IPv4Address) and ip in _THIS_NETWORK:
        raise InvalidArgumentError(field, f'must not be in 0.0.0.0/8 ("this network"), got {ip}')
    if ip == _BROADCAST:
        raise InvalidArgumentError(field, "must not be the broadcast address 255.255.255.255")
    if ip.is_link_local:
        raise InvalidArgumentError(
            field, f"must not be link-local (169.254.0.0/16, fe80::/10), got {ip}"
        )
    if ip.is_multicast:
        raise InvalidArgumentError(
            field, f"must not be multicast (224.0.0.0/4, ff00::/8), got {ip}"
        )
    if isinstance(ip, IPv6Address) and ip.is_site_local:
        raise InvalidArgumentError(
            field, f"must not be site-local (fec0::/10, deprecated), got {ip}"
        )
    # ipaddress counts ::1 inside the reserved ::/8, hence the loopback exemption.
    if ip.is_reserved and not ip.is_loopback:
        raise InvalidArgumentError(field, f"must not be in a reserved range, got {ip}")


def parse_peer(peer: str) -> IPAddress | None:
    """Read the caller's IP from a gRPC `context.peer()` string; None when there is none."""
    scheme, _, rest = peer.partition(":")
    if scheme not in ("ipv4", "ipv6"):
        return None  # unix:, unix-abstract:, or something we cannot vouch for
    # Some gRPC versions URL-encode the brackets: ipv6:%5B::1%5D:5555.
    host, sep, port = unquote(rest).rpartition(":")
    if not sep or not port.isdigit():
        return None
    if scheme == "ipv6":
        if not (host.startswith("[") and host.endswith("]")):
            return None
        host = host[1:-1].partition("%")[0]  # the zone would make equal addresses unequal
    try:
        ip: IPAddress = IPv4Address(host) if scheme == "ipv4" else IPv6Address(host)
    except ValueError:
        return None
    return _unmap(ip)


def _unmap(ip: IPAddress) -> IPAddress:
    # A dual-stack listener sees IPv4 callers as ::ffff:a.b.c.d.
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_ranges(text: str, field: str = "allow_address_ranges") -> tuple[IPNetwork, ...]:
    """Parse comma-separated CIDRs such as `10.0.0.0/8,fd00::/8`; empty text gives none."""
    if not text.strip():
        return ()
    ranges: list[IPNetwork] = []
    for position, part in enumerate(text.split(","), start=1):
        item = part.strip()
        if not item:
            raise InvalidArgumentError(
                field, f"entry {position} is empty; ranges are separated by single commas"
            )
        try:
            # strict: 10.0.0.1/8 is more likely a typo than a wish to allow 10.0.0.0/8.
            ranges.append(ip_network(item, strict=True))
        except ValueError:
            raise InvalidArgumentError(
                field,
                "each entry must be a CIDR with no host bits set, such as 10.0.0.0/8 or"
                f" fd00::/8, got {quote(item)}",
            ) from None
    return tuple(ranges)


@dataclass(frozen=True)
class AddressPolicy:
    """Which claimed addresses the registry accepts beyond the caller's own."""

    allowed_ranges: tuple[IPNetwork, ...] = ()
    """Claims inside these ranges are accepted from any caller (e.g. an operator's pod CIDR)."""
    allow_loopback: bool = False
    """Accept loopback claims from loopback callers: true when the registry listens on loopback."""


def check_claim(
    ip: IPAddress,
    peer: IPAddress | None,
    policy: AddressPolicy,
    field: str = "address",
) -> None:
    """Raise `PermissionDeniedError` unless the caller at `peer` may register `ip`."""
    peer = _unmap(peer) if peer is not None else None
    ip = _unmap(ip)
    if ip.is_loopback:
        # Loopback means "the router's own host" to every router, so it is only safe
        # when the whole stack shares one machine, and never via allowed_ranges.
        if policy.allow_loopback and peer is not None and peer.is_loopback:
            return
        raise PermissionDeniedError(
            f"{field}: loopback address {ip} is accepted only from a loopback caller when"
            " the registry allows loopback"
        )
    if any(ip in network for network in policy.allowed_ranges):
        return
    if peer is None:
        raise PermissionDeniedError(
            f"{field}: cannot verify the caller's address, so {ip} must lie in an allowed range"
        )
    if ip != peer:
        raise PermissionDeniedError(
            f"{field}: {ip} is not the caller's address {peer}; register from the instance"
            " itself or add its range to the allowed address ranges"
        )
