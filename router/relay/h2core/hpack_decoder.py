"""HPACK decoding (RFC 7541) for the relay's hot path: one loop, plain tuples, no logging.

Why not `hpack.Decoder`: it builds two tuple objects per header (`HeaderTuple`,
then the raw one), calls three functions per field and `logging.debug` about
five times per header block even with logging off; with three blocks per
relayed unary call (request, response headers, trailers) header coding was
28-37 % of the relay's Python samples (issue #13).
This decoder keeps the same rules (the static and dynamic tables, integer and
string bounds, size updates only first in a block and never over our
SETTINGS_HEADER_TABLE_SIZE, the decoded header list size cap) and is checked
against `hpack.Decoder` block by block in the tests. Huffman strings go through
`hpack`'s decoder once and are cached: a gRPC client repeats the same few
values (paths, content type, metadata) call after call.

Why a block cache: once a gRPC client's table is warm, its request blocks are a
few indexed fields and a literal or two that do not touch the table, so the same
bytes arrive call after call (the same holds for an engine's response headers and
trailers). A block that leaves the table as it was decodes to the same list while
the table stays so: it is kept (`HeaderList`, so what the relay derives from it is
kept too) until the table next changes. Bounded per connection by count and size.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from hpack.exceptions import HPACKError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

from router.relay.frames import COMPRESSION_ERROR, Header, HeaderList, ProtocolError

STATIC_TABLE: Final[tuple[Header, ...]] = HeaderTable.STATIC_TABLE
_STATIC_LEN: Final = len(STATIC_TABLE)
DEFAULT_TABLE_SIZE: Final = 4096
"""SETTINGS_HEADER_TABLE_SIZE: we never announce another, so the peer's encoder may use this."""
ENTRY_OVERHEAD: Final = 32
"""Bytes an entry costs beyond its name and value (RFC 7541 §4.1), in the table and the list."""
MAX_INTEGER_BYTES: Final = 5
"""Continuation bytes an integer may take (as `hpack`): 35 bits is past any sane length."""
HUFFMAN_CACHE_LIMIT = 4096
HUFFMAN_CACHE_MAX_STRING: Final = 256
"""Huffman strings up to this long are cached (at most about 1 MiB in all)."""
_huffman: dict[bytes, bytes] = {}
MAX_CACHED_BLOCKS: Final = 8
"""Distinct repeating blocks kept per connection (a client sends one or two per method)."""
MAX_CACHED_LIST_SIZE: Final = 2048
"""Only header lists up to this size (as counted against max_list_size) are kept:
a connection holds at most 16 KiB of them."""


class HeaderBlockError(ProtocolError):
    """A header block that cannot be decoded: COMPRESSION_ERROR, the connection ends."""

    def __init__(self, message: str) -> None:
        super().__init__(COMPRESSION_ERROR, f"bad header block: {message}")


class HpackDecoder:
    """One connection's HPACK decoding context: the dynamic table and its limits."""

    __slots__ = (
        "blocks", "generation", "max_list_size", "max_table_size", "size", "table", "table_size",
    )  # fmt: skip

    def __init__(self, max_list_size: int, max_table_size: int = DEFAULT_TABLE_SIZE) -> None:
        self.max_list_size = max_list_size
        """Most bytes one decoded header list may hold (names, values, 32 per header)."""
        self.max_table_size = max_table_size
        self.table_size = max_table_size
        """The dynamic table's current limit (the peer may lower it with a size update)."""
        self.table: deque[Header] = deque()
        """Dynamic entries, newest first (index 62 is `table[0]`)."""
        self.size = 0
        self.blocks: dict[bytes, HeaderList] = {}
        """Blocks that left the table unchanged, decoded; emptied whenever it changes."""
        self.generation = 0
        """Counts the table's changes (an insertion, a size update)."""

    def decode(self, block: bytes) -> list[Header]:
        """The header list of one complete block; HeaderBlockError when it is malformed."""
        found = self.blocks.get(block)
        if found is not None:
            return found
        generation = self.generation
        headers, listed = self._decode(block)
        if generation == self.generation and listed <= MAX_CACHED_LIST_SIZE:
            if len(self.blocks) >= MAX_CACHED_BLOCKS:
                self.blocks.clear()
            headers = self.blocks[block] = HeaderList(headers)
        return headers

    def _decode(self, block: bytes) -> tuple[list[Header], int]:
        headers: list[Header] = []
        pos, end, listed = 0, len(block), 0
        try:
            while pos < end:
                byte = block[pos]
                pos += 1
                if byte & 0x80:  # indexed field
                    index = byte & 0x7F
                    if index == 0x7F:
                        index, pos = _integer(block, pos, index)
                    header = self._entry(index)
                elif byte & 0x40:  # literal with incremental indexing
                    header, pos = self._literal(block, pos, byte & 0x3F, 0x3F)
                    self._add(header)
                elif byte & 0x20:  # dynamic table size update
                    if headers:
                        raise HeaderBlockError("table size update after a header")
                    size = byte & 0x1F
                    if size == 0x1F:
                        size, pos = _integer(block, pos, size)
                    self._resize(size)
                    continue
                else:  # literal without indexing (0x00) or never indexed (0x10)
                    header, pos = self._literal(block, pos, byte & 0x0F, 0x0F)
                headers.append(header)
                listed += len(header[0]) + len(header[1]) + ENTRY_OVERHEAD
                if listed > self.max_list_size:
                    raise HeaderBlockError(f"header list larger than {self.max_list_size}")
        except IndexError:
            raise HeaderBlockError("truncated") from None
        return headers, listed

    def _entry(self, index: int) -> Header:
        if 0 < index <= _STATIC_LEN:
            return STATIC_TABLE[index - 1]
        dynamic = index - _STATIC_LEN - 1
        if 0 <= dynamic < len(self.table):
            return self.table[dynamic]
        raise HeaderBlockError(f"invalid table index {index}")

    def _literal(self, block: bytes, pos: int, index: int, mask: int) -> tuple[Header, int]:
        if index:
            if index == mask:
                index, pos = _integer(block, pos, index)
            name = self._entry(index)[0]
        else:
            name, pos = _string(block, pos)
        value, pos = _string(block, pos)
        return (name, value), pos

    def _add(self, header: Header) -> None:
        self.generation += 1
        self.blocks.clear()  # what is kept was decoded against the table as it was
        size = len(header[0]) + len(header[1]) + ENTRY_OVERHEAD
        if size > self.table_size:  # an entry larger than the table empties it (§4.4)
            self.table.clear()
            self.size = 0
            return
        self.table.appendleft(header)
        self.size += size
        self._evict()

    def _resize(self, size: int) -> None:
        if size > self.max_table_size:
            raise HeaderBlockError(f"table size {size} over {self.max_table_size}")
        self.generation += 1
        self.blocks.clear()
        self.table_size = size
        self._evict()

    def _evict(self) -> None:
        table = self.table
        while self.size > self.table_size:
            name, value = table.pop()
            self.size -= len(name) + len(value) + ENTRY_OVERHEAD


def _integer(block: bytes, pos: int, value: int) -> tuple[int, int]:
    """The rest of an integer whose prefix was full (`value`), and where it ends."""
    shift = 0
    for _ in range(MAX_INTEGER_BYTES):
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise HeaderBlockError("integer representation too long")


def _string(block: bytes, pos: int) -> tuple[bytes, int]:
    """A string literal starting at `pos` (Huffman decoded), and where it ends."""
    byte = block[pos]
    length = byte & 0x7F
    pos += 1
    if length == 0x7F:
        length, pos = _integer(block, pos, length)
    stop = pos + length
    if stop > len(block):
        raise HeaderBlockError("string longer than the block")
    raw = block[pos:stop]
    if not byte & 0x80:
        return raw, stop
    text = _huffman.get(raw)
    if text is None:
        try:
            text = decode_huffman(raw)
        except HPACKError as error:
            raise HeaderBlockError(str(error)) from None
        if length <= HUFFMAN_CACHE_MAX_STRING:
            if len(_huffman) >= HUFFMAN_CACHE_LIMIT:
                _huffman.clear()  # a flood of unique strings only costs misses
            _huffman[raw] = text
    return text, stop
