"""Wrong-address hints: what a registry call's failure says the address really is."""

from __future__ import annotations

import pytest

from tidepool.ctl.diagnose import not_a_registry, suspect

HTTP1 = (
    "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:7711: "
    "Failed parsing HTTP/2 (Expected SETTINGS frame as the first frame, got frame type 80) "
    "(Trying to connect an http1.x server (HTTP status 405))"
)
ROUTER = "missing routing key: set x-tidepool-alias, or x-tidepool-tenant and x-tidepool-lang"


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        ("UNAVAILABLE", HTTP1, "http"),
        ("INVALID_ARGUMENT", ROUTER, "router"),
        ("UNIMPLEMENTED", "Method not found!", "grpc"),
        ("UNAVAILABLE", "Connection refused", None),
        ("UNAUTHENTICATED", "this method needs the read token", None),
        ("INVALID_ARGUMENT", "service: must be a name", None),
    ],
)
def test_suspect_reads_the_failure(code: str, details: str, expected: str | None) -> None:
    assert suspect(code, details) == expected


def test_an_http_port_is_named_with_its_status() -> None:
    text = not_a_registry("127.0.0.1:7711", "http", HTTP1)
    assert text.startswith("127.0.0.1:7711 is not a tidepool registry (it is an HTTP port")
    assert "/metrics" in text
    assert "HTTP status 405" in text


def test_a_router_is_named() -> None:
    assert "(it is a tidepool router" in not_a_registry("h:1", "router", ROUTER)


def test_an_engine_is_named_when_the_probe_recognised_one() -> None:
    assert "(it is a tidepool engine" in not_a_registry("h:1", "grpc", "", engine=True)


def test_another_grpc_server_is_a_guess() -> None:
    text = not_a_registry("h:1", "grpc", "Method not found!")
    assert "without the tidepool registry service (a router or an engine?)" in text


@pytest.mark.parametrize("kind", ["http", "router", "grpc"])
def test_every_hint_is_one_line_pointing_at_the_registry_port(kind: str) -> None:
    text = not_a_registry("h:1", kind, HTTP1)  # type: ignore[arg-type]
    assert "\n" not in text
    assert "--registry" in text
