"""The relay's own HPACK decoder agrees with python-hyper's `hpack.Decoder`, block by block.

`hpack` is the oracle: header lists encoded by its `Encoder` (Huffman or not,
indexed, never-indexed, table resizes) must decode to the same lists with the
same dynamic table after each block, and any byte string must either decode to
the same list in both or be refused by both.
"""

from __future__ import annotations

import pytest
from hpack import Decoder, Encoder, HeaderTuple, NeverIndexedHeaderTuple
from hpack.exceptions import HPACKError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.relay import frames as f
from router.relay.frames import HeaderList
from router.relay.grpcwire import check_request, parse_request
from router.relay.h2core import hpack_decoder as hd
from router.relay.h2core.hpack_decoder import HeaderBlockError, HpackDecoder

LIST_LIMIT = 4096

names = st.sampled_from([b":path", b":method", b"content-type", b"grpc-timeout", b"te", b"x-a"])
names |= st.binary(min_size=1, max_size=20)
values = st.sampled_from([b"", b"POST", b"/a.B/C", b"application/grpc", b"100m", b"trailers"])
values |= st.binary(max_size=40)
header = st.tuples(names, values, st.booleans())
"""(name, value, sensitive): sensitive ones are encoded as never indexed."""
blocks = st.lists(
    st.tuples(
        st.lists(header, max_size=8),
        st.booleans(),  # huffman
        st.none() | st.integers(0, 4096),  # a table size the encoder moves to first
    ),
    min_size=1,
    max_size=6,
)


def _encoded(
    encoder: Encoder, item: tuple[list[tuple[bytes, bytes, bool]], bool, int | None]
) -> bytes:
    headers, huffman, resize = item
    if resize is not None:
        encoder.header_table_size = resize
    tuples = [
        NeverIndexedHeaderTuple(n, v) if sensitive else HeaderTuple(n, v)
        for n, v, sensitive in headers
    ]
    return encoder.encode(tuples, huffman=huffman)


def _theirs(decoder: Decoder, block: bytes) -> list[tuple[bytes, bytes]] | None:
    try:
        return [(bytes(n), bytes(v)) for n, v in decoder.decode(block, raw=True)]
    except HPACKError:
        return None


def _mine(decoder: HpackDecoder, block: bytes) -> list[tuple[bytes, bytes]] | None:
    try:
        return decoder.decode(block)
    except HeaderBlockError as error:
        code = error.code
    assert code == f.COMPRESSION_ERROR  # what the connection's GOAWAY will carry
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks)
def test_blocks_from_hpack_encoder_decode_the_same_with_the_same_table(
    items: list[tuple[list[tuple[bytes, bytes, bool]], bool, int | None]],
) -> None:
    encoder = Encoder()
    theirs, mine = Decoder(max_header_list_size=LIST_LIMIT), HpackDecoder(LIST_LIMIT)
    for item in items:
        block = _encoded(encoder, item)
        for _ in range(2):  # a repeat comes from the block cache when the table is unchanged
            expected = _theirs(theirs, block)
            assert _mine(mine, block) == expected
            if expected is None:  # the list went over the limit: both refused, stop here
                return
            assert list(mine.table) == list(theirs.header_table.dynamic_entries)
            assert mine.size == theirs.header_table._current_size


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=4))
def test_any_bytes_decode_alike_or_are_refused_by_both(raw_blocks: list[bytes]) -> None:
    theirs, mine = Decoder(max_header_list_size=200), HpackDecoder(200)
    for block in raw_blocks:
        expected = _theirs(theirs, block)
        assert _mine(mine, block) == expected
        if expected is None:  # after an error the context is dead (the connection ends)
            return


@pytest.mark.parametrize(
    ("block", "why"),
    [
        (b"\x80", "invalid table index 0"),
        (b"\xbe", "invalid table index 62"),  # past the static table, dynamic table empty
        (b"\x00\x05ab", "string longer than the block"),
        (b"\x00\x7f", "truncated"),
        (b"\xff\xff\xff\xff\xff\xff\x01", "integer representation too long"),
        (b"\x3f\xe2\x1f", "table size 4097 over 4096"),
        (b"\x82\x20", "table size update after a header"),
        (b"\x00\x01a\x81\xff", "Incomplete Huffman string"),
    ],
)
def test_malformed_blocks_are_compression_errors_naming_the_rule(block: bytes, why: str) -> None:
    with pytest.raises(HeaderBlockError, match=why) as caught:
        HpackDecoder(LIST_LIMIT).decode(block)
    assert caught.value.code == f.COMPRESSION_ERROR
    assert _theirs(Decoder(), block) is None


def test_a_header_list_over_the_limit_is_refused() -> None:
    block = f.encode_headers([(b"x-big", b"v" * 100)])
    assert HpackDecoder(200).decode(block) == [(b"x-big", b"v" * 100)]
    with pytest.raises(HeaderBlockError, match="header list larger than 100"):
        HpackDecoder(100).decode(block)


def test_huffman_strings_are_cached_and_a_full_cache_starts_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hd, "_huffman", {})
    monkeypatch.setattr(hd, "HUFFMAN_CACHE_LIMIT", 2)
    for value in (b"first-value", b"second-value", b"third-value"):
        block = Encoder().encode([(b"x-a", value)], huffman=True)
        assert HpackDecoder(LIST_LIMIT).decode(block)[-1] == (b"x-a", value)
    assert sorted(hd._huffman.values()) == [b"third-value"]  # cleared when full, then kept


def test_a_repeated_block_is_decoded_once_until_the_table_changes() -> None:
    decoder = HpackDecoder(LIST_LIMIT)
    encoder = Encoder()
    encoder.encode([(b"x-a", b"one")])  # the encoder indexes it ...
    decoder.decode(b"\x40\x03x-a\x03one")  # ... and so does the decoder: 62 is x-a: one
    block = b"\x83\xbe"  # :method POST, then dynamic entry 62
    first = decoder.decode(block)
    assert first == [(b":method", b"POST"), (b"x-a", b"one")]
    assert isinstance(first, HeaderList)
    assert decoder.decode(block) is first  # kept: the table did not change
    decoder.decode(b"\x40\x03x-b\x03two")  # an insertion: 62 is now x-b: two
    again = decoder.decode(block)
    assert again == [(b":method", b"POST"), (b"x-b", b"two")]
    assert again is not first


def test_a_block_that_changes_the_table_is_never_kept() -> None:
    decoder = HpackDecoder(LIST_LIMIT)
    block = b"\x40\x03x-a\x03one"
    assert decoder.decode(block) == [(b"x-a", b"one")]
    assert decoder.decode(block) == [(b"x-a", b"one")]
    assert len(decoder.table) == 2  # inserted twice, as the encoder meant
    assert not decoder.blocks


REQUEST = [
    (b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/a.B/C"),
    (b"content-type", b"application/grpc"), (b"grpc-timeout", b"100m"),
    (b"x-tidepool-alias", b"zh"),
]  # fmt: skip


def test_a_repeated_request_is_checked_parsed_and_encoded_once() -> None:
    headers = HeaderList(REQUEST)
    assert check_request(headers) is None
    first = parse_request(headers)
    assert parse_request(headers) is first  # kept with the list
    assert first == parse_request(list(REQUEST))  # the same as from a plain list
    forward = first[5]
    assert f.encode_headers(forward) is f.encode_headers(forward)
    assert f.encode_headers(forward) == f.encode_headers(list(forward))
    bad = HeaderList([(b":method", b"GET"), *REQUEST[1:]])
    assert check_request(bad) == check_request(list(bad)) is not None
    assert check_request(bad) is check_request(bad)


@given(st.floats(min_value=0.0, max_value=1e9, allow_nan=False))
def test_the_grpc_timeout_field_is_the_literal_field(seconds: float) -> None:
    expected = f.encode_header(b"grpc-timeout", f.format_grpc_timeout(seconds))
    assert f.grpc_timeout_field(seconds) == expected
