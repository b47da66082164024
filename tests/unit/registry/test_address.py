"""Registered-address rules: strict parsing, peer parsing and who may claim what."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.address import (
    AddressPolicy,
    canonical_address,
    check_claim,
    format_address,
    parse_address,
    parse_peer,
    parse_ranges,
)
from registry.errors import InvalidArgumentError, PermissionDeniedError


def _rejection(text: str, field: str = "address") -> str:
    with pytest.raises(InvalidArgumentError) as excinfo:
        parse_address(text, field)
    assert excinfo.value.field == field
    return str(excinfo.value)


# --- accepted forms ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ip", "port"),
    [
        ("10.0.0.7:50051", "10.0.0.7", 50051),
        ("127.0.0.1:1", "127.0.0.1", 1),
        ("192.168.1.20:65535", "192.168.1.20", 65535),
        ("100.64.0.1:80", "100.64.0.1", 80),
        ("[::1]:80", "::1", 80),
        ("[fd00::7]:50051", "fd00::7", 50051),
        ("[2001:db8::1]:443", "2001:db8::1", 443),
        ("[0:0:0:0:0:0:0:1]:80", "::1", 80),
    ],
)
def test_accepts_literal_addresses(text: str, ip: str, port: int) -> None:
    assert parse_address(text) == (ip_address(ip), port)


def test_formats_ipv6_with_brackets_in_compressed_form() -> None:
    assert format_address(IPv6Address("fd00:0:0::7"), 80) == "[fd00::7]:80"
    assert format_address(IPv4Address("10.0.0.7"), 80) == "10.0.0.7:80"


# --- rejected spellings -----------------------------------------------------------


def test_rejects_integer_encoded_ipv4() -> None:
    assert "four decimal octets" in _rejection("2130706433:80")


def test_rejects_hex_encoded_ipv4() -> None:
    assert "four decimal octets" in _rejection("0x7f.1:80")
    assert "four decimal octets" in _rejection("0x7f.0.0.1:80")


def test_rejects_octal_encoded_ipv4() -> None:
    message = _rejection("0177.0.0.1:80")
    assert 'octet "0177" has a leading zero' in message


def test_rejects_leading_zero_octet() -> None:
    assert "leading zero" in _rejection("10.0.0.07:80")


def test_rejects_shortened_ipv4() -> None:
    assert "four decimal octets" in _rejection("127.1:80")


def test_rejects_octet_above_255() -> None:
    assert 'octet "256" must be from 0 to 255' in _rejection("10.0.0.256:80")


@pytest.mark.parametrize("text", ["localhost:80", "example.com:80", "engine-1:50051"])
def test_rejects_host_names(text: str) -> None:
    assert "address: must be a literal IP address, not a host name" in _rejection(text)


def test_rejects_unbracketed_ipv6() -> None:
    assert "needs brackets" in _rejection("::1:80")


def test_rejects_ipv6_zone_id() -> None:
    assert "zone id" in _rejection("[fe80::1%eth0]:80")


@pytest.mark.parametrize(
    "text", ["[::ffff:127.0.0.1]:80", "[::ffff:7f00:1]:80", "[::127.0.0.1]:80"]
)
def test_rejects_ipv4_mapped_and_compatible_ipv6(text: str) -> None:
    assert "IPv4-mapped or IPv4-compatible" in _rejection(text)


def test_rejects_ipv4_in_brackets() -> None:
    assert "brackets must hold an IPv6 address" in _rejection("[127.0.0.1]:80")


@pytest.mark.parametrize("text", ["[::1]", "[::1]80", "[::1:80"])
def test_rejects_malformed_bracket_form(text: str) -> None:
    assert "a.b.c.d:port or [ipv6]:port" in _rejection(text)


def test_rejects_missing_port() -> None:
    assert "must include a port" in _rejection("10.0.0.1")


@pytest.mark.parametrize("port", ["0", "65536", "080", "+80", "-1", "", "8a", "0x50", "٨٠"])
def test_rejects_bad_port(port: str) -> None:
    assert "port must be a decimal integer from 1 to 65535" in _rejection(f"10.0.0.1:{port}")


@pytest.mark.parametrize("text", [" 10.0.0.1:80", "10.0.0.1:80\n", "10.0.0.1 :80"])
def test_rejects_whitespace(text: str) -> None:
    assert "must not contain whitespace" in _rejection(text)


def test_rejects_overlong_input() -> None:
    assert "at most 64 characters" in _rejection("1" * 1000)


def test_error_uses_the_given_field_name() -> None:
    assert _rejection("localhost:80", field="spec.address").startswith("spec.address: ")


# --- rejected ranges --------------------------------------------------------------


@pytest.mark.parametrize("text", ["0.0.0.0:80", "[::]:80"])
def test_rejects_unspecified_address(text: str) -> None:
    assert "must not be the unspecified address" in _rejection(text)


def test_rejects_this_network_range() -> None:
    assert '0.0.0.0/8 ("this network")' in _rejection("0.1.2.3:80")


@pytest.mark.parametrize("text", ["169.254.169.254:80", "[fe80::1]:80"])
def test_rejects_link_local(text: str) -> None:
    assert "must not be link-local" in _rejection(text)


@pytest.mark.parametrize("text", ["224.0.0.1:80", "239.1.2.3:80", "[ff02::1]:80"])
def test_rejects_multicast(text: str) -> None:
    assert "must not be multicast" in _rejection(text)


def test_rejects_ipv4_broadcast() -> None:
    assert "broadcast address 255.255.255.255" in _rejection("255.255.255.255:80")


@pytest.mark.parametrize("text", ["240.0.0.1:80", "[64:ff9b::a00:1]:80", "[100::1]:80"])
def test_rejects_reserved_ranges(text: str) -> None:
    assert "must not be in a reserved range" in _rejection(text)


def test_rejects_deprecated_site_local_ipv6() -> None:
    assert "must not be site-local" in _rejection("[fec0::1]:80")


# --- property tests ---------------------------------------------------------------

IPS = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))
PORTS = st.integers(min_value=1, max_value=65535)


@given(IPS, PORTS)
def test_parse_round_trips_format_and_never_returns_undialable_ip(
    ip: IPv4Address | IPv6Address, port: int
) -> None:
    try:
        parsed = parse_address(format_address(ip, port))
    except InvalidArgumentError:
        return
    assert parsed == (ip, port)
    parsed_ip = parsed[0]
    assert not parsed_ip.is_unspecified
    assert not parsed_ip.is_multicast
    assert not parsed_ip.is_link_local
    assert parsed_ip != IPv4Address("255.255.255.255")


@given(st.ip_addresses(v=4, network="10.0.0.0/8"), PORTS)
def test_accepts_every_private_ipv4(ip: IPv4Address, port: int) -> None:
    assert parse_address(format_address(ip, port)) == (ip, port)


@given(st.text(max_size=40))
def test_parse_address_raises_only_invalid_argument(text: str) -> None:
    try:
        ip, port = parse_address(text)
    except InvalidArgumentError:
        return
    assert parse_address(format_address(ip, port)) == (ip, port)


# --- peers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("ipv4:127.0.0.1:5555", "127.0.0.1"),
        ("ipv4:10.1.2.3:40000", "10.1.2.3"),
        ("ipv6:[::1]:5555", "::1"),
        ("ipv6:%5B::1%5D:5555", "::1"),
        ("ipv6:%5Bfd00::7%5D:5555", "fd00::7"),
        ("ipv6:[::ffff:10.0.0.1]:5", "10.0.0.1"),
        ("ipv6:[fe80::1%25eth0]:5", "fe80::1"),
    ],
)
def test_parses_grpc_peer_strings(peer: str, expected: str) -> None:
    assert parse_peer(peer) == ip_address(expected)


@pytest.mark.parametrize(
    "peer",
    ["unix:/tmp/registry.sock", "unix-abstract:x", "", "ipv4:", "ipv4:nope:1", "ipv6:::1", "x"],
)
def test_peer_without_an_ip_gives_none(peer: str) -> None:
    assert parse_peer(peer) is None


# --- ranges -----------------------------------------------------------------------


def test_parses_comma_separated_ranges() -> None:
    assert parse_ranges(" 10.0.0.0/8 , fd00::/8") == (
        IPv4Network("10.0.0.0/8"),
        IPv6Network("fd00::/8"),
    )


@pytest.mark.parametrize("text", ["", "  "])
def test_empty_ranges_text_gives_no_ranges(text: str) -> None:
    assert parse_ranges(text) == ()


def test_rejects_range_with_host_bits_set() -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        parse_ranges("10.0.0.1/8")
    assert str(excinfo.value).startswith("allow_address_ranges: each entry must be a CIDR")
    assert '"10.0.0.1/8"' in str(excinfo.value)


@pytest.mark.parametrize("text", ["10.0.0.0/33", "nonsense", "10.0.0.0/8;fd00::/8"])
def test_rejects_malformed_range(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^ranges: each entry must be a CIDR"):
        parse_ranges(text, field="ranges")


def test_rejects_empty_range_entry() -> None:
    with pytest.raises(InvalidArgumentError, match=r"entry 2 is empty"):
        parse_ranges("10.0.0.0/8,,fd00::/8")


# --- claims -----------------------------------------------------------------------

LOCAL = IPv4Address("127.0.0.1")
ENGINE = IPv4Address("10.0.0.7")
OTHER = IPv4Address("10.0.0.8")
OPEN_LOOPBACK = AddressPolicy(allow_loopback=True)


def _denial(
    ip: IPv4Address | IPv6Address,
    peer: IPv4Address | IPv6Address | None,
    policy: AddressPolicy,
) -> str:
    with pytest.raises(PermissionDeniedError) as excinfo:
        check_claim(ip, peer, policy)
    return str(excinfo.value)


def test_allows_claiming_the_callers_own_address() -> None:
    check_claim(ENGINE, ENGINE, AddressPolicy())


def test_allows_claim_from_ipv4_mapped_peer() -> None:
    check_claim(ENGINE, IPv6Address("::ffff:10.0.0.7"), AddressPolicy())


def test_denies_claiming_another_address() -> None:
    message = _denial(OTHER, ENGINE, AddressPolicy())
    assert message.startswith("address: 10.0.0.8 is not the caller's address 10.0.0.7")


def test_denies_when_peer_is_unknown() -> None:
    assert "cannot verify the caller's address" in _denial(ENGINE, None, AddressPolicy())


def test_allows_claim_inside_allowed_range_from_anywhere() -> None:
    policy = AddressPolicy(allowed_ranges=(IPv4Network("10.0.0.0/24"),))
    check_claim(OTHER, ENGINE, policy)
    check_claim(OTHER, None, policy)


def test_denies_claim_outside_allowed_ranges() -> None:
    policy = AddressPolicy(allowed_ranges=(IPv4Network("10.0.1.0/24"),))
    assert "is not the caller's address" in _denial(OTHER, ENGINE, policy)


def test_allows_loopback_claim_from_loopback_when_policy_allows() -> None:
    check_claim(LOCAL, LOCAL, OPEN_LOOPBACK)
    check_claim(IPv6Address("::1"), LOCAL, OPEN_LOOPBACK)
    check_claim(IPv4Address("127.0.0.2"), IPv6Address("::1"), OPEN_LOOPBACK)


def test_denies_loopback_claim_when_policy_forbids_it() -> None:
    message = _denial(LOCAL, LOCAL, AddressPolicy())
    assert message.startswith("address: loopback address 127.0.0.1 is accepted only from")


def test_denies_loopback_claim_from_remote_caller() -> None:
    assert "loopback" in _denial(LOCAL, ENGINE, OPEN_LOOPBACK)


def test_denies_loopback_claim_from_unknown_caller() -> None:
    assert "loopback" in _denial(LOCAL, None, OPEN_LOOPBACK)


def test_allowed_ranges_never_admit_a_loopback_claim() -> None:
    policy = AddressPolicy(allowed_ranges=(IPv4Network("127.0.0.0/8"),))
    assert "loopback" in _denial(LOCAL, ENGINE, policy)


# --- canonical form ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("[::1]:80", "[::1]:80"),
        ("[0:0:0:0:0:0:0:1]:80", "[::1]:80"),
        ("[::0001]:80", "[::1]:80"),
        ("[0000::1]:80", "[::1]:80"),
        ("[FD00:0:0:0:0:0:0:7]:50051", "[fd00::7]:50051"),
        ("[fd00:0:0:1:0:0:0:7]:1", "[fd00:0:0:1::7]:1"),
        ("10.0.0.7:50051", "10.0.0.7:50051"),
    ],
)
def test_every_spelling_of_an_address_has_one_canonical_form(text: str, canonical: str) -> None:
    assert canonical_address(text) == canonical


def test_canonical_address_names_the_field_of_a_bad_address() -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        canonical_address("[::1]", "instance.address")
    assert excinfo.value.field == "instance.address"


@given(st.ip_addresses(v=6), st.integers(1, 65535))
def test_canonical_form_is_a_fixed_point(ip: IPv6Address, port: int) -> None:
    try:
        once = canonical_address(f"[{ip.exploded}]:{port}")
    except InvalidArgumentError:
        return  # not dialable (multicast, link-local, ...): refused in every spelling alike
    assert canonical_address(once) == once
    assert once == format_address(ip, port)
