"""Call metadata: the routing key is read, transport headers stay behind, the rest goes on."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from router.metadata import RoutedMetadata, answer_metadata, split_metadata

TRANSPORT = (
    (":authority", "router.test:7710"),
    (":path", "/tidepool.engine.v1.Evaluator/Evaluate"),
    ("grpc-timeout", "5S"),
    ("grpc-accept-encoding", "identity,gzip"),
    ("user-agent", "grpc-python/1.68"),
    ("te", "trailers"),
    ("content-type", "application/grpc"),
)


def test_the_alias_is_read_and_still_forwarded() -> None:
    routed = split_metadata(
        [*TRANSPORT, ("x-tidepool-alias", "zh-public"), ("x-request-id", "r-1")]
    )
    assert routed == RoutedMetadata(
        alias="zh-public",
        tenant=None,
        lang=None,
        forward=(("x-tidepool-alias", "zh-public"), ("x-request-id", "r-1")),
    )


def test_tenant_and_lang_are_read_and_still_forwarded_in_order() -> None:
    routed = split_metadata(
        [("x-tidepool-lang", "en"), ("te", "trailers"), ("x-tidepool-tenant", "acme")]
    )
    assert (routed.alias, routed.tenant, routed.lang) == (None, "acme", "en")
    assert routed.forward == (("x-tidepool-lang", "en"), ("x-tidepool-tenant", "acme"))


def test_pseudo_grpc_and_hop_by_hop_headers_are_dropped() -> None:
    routed = split_metadata([*TRANSPORT, ("host", "x"), ("connection", "keep-alive")])
    assert routed == RoutedMetadata(None, None, None, ())


def test_binary_values_pass_through_untouched() -> None:
    trace = bytes(range(256))
    routed = split_metadata([("x-trace-bin", trace), ("x-tidepool-alias", "zh")])
    assert routed.forward == (("x-trace-bin", trace), ("x-tidepool-alias", "zh"))
    assert routed.forward[0][1] is trace


def test_a_binary_value_is_never_taken_as_a_routing_key() -> None:
    routed = split_metadata([("x-tidepool-alias", b"zh")])
    assert routed.alias is None
    assert routed.forward == (("x-tidepool-alias", b"zh"),)


def test_no_metadata_is_no_routing_key_and_nothing_to_forward() -> None:
    assert split_metadata(None) == RoutedMetadata(None, None, None, ())
    assert split_metadata([]) == RoutedMetadata(None, None, None, ())


def test_answer_metadata_drops_status_and_transport_but_keeps_rich_details() -> None:
    details = b"\x08\x0e\x12\x04down"
    answer = answer_metadata(
        [
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", "14"),
            ("grpc-message", "engine draining"),
            ("grpc-status-details-bin", details),
            ("x-engine-id", "e-7"),
        ]
    )
    assert answer == (("grpc-status-details-bin", details), ("x-engine-id", "e-7"))


def test_answer_metadata_of_nothing_is_empty() -> None:
    assert answer_metadata(None) == ()
    assert answer_metadata(()) == ()


custom_keys = st.text("abcdefgh0123-", min_size=1, max_size=12).map(lambda s: f"x-{s}")


@given(st.lists(st.one_of(st.sampled_from(TRANSPORT), st.tuples(custom_keys, st.text()))))
def test_only_transport_headers_are_ever_dropped(metadata: list[tuple[str, str]]) -> None:
    forward = split_metadata(metadata).forward
    assert forward == tuple(item for item in metadata if item not in TRANSPORT)
