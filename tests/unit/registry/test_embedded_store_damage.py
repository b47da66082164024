"""EmbeddedStore refuses a lost or damaged database with a message naming the file or row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from registry.errors import StoreUnavailableError
from registry.records import AliasRecord
from registry.store import EmbeddedStore
from registry.store.embedded import FILE_NAME, MARKER_NAME

ALIAS = AliasRecord("zh-public", "lang=zh", "speech")


async def _create(data_dir: Path) -> None:
    store = EmbeddedStore(data_dir)
    await store.put_alias(ALIAS)
    await store.close()


async def _load_error(data_dir: Path, *, allow_empty: bool = False) -> str:
    store = EmbeddedStore(data_dir, allow_empty=allow_empty)
    try:
        with pytest.raises(StoreUnavailableError) as excinfo:
            await store.load()
    finally:
        await store.close()
    return str(excinfo.value)


async def test_the_first_open_leaves_a_marker_beside_the_database(tmp_path: Path) -> None:
    await _create(tmp_path)
    assert (tmp_path / MARKER_NAME).read_text().strip()
    assert (tmp_path / FILE_NAME).stat().st_size > 0


async def test_a_missing_database_where_the_marker_remains_is_refused(tmp_path: Path) -> None:
    await _create(tmp_path)
    (tmp_path / FILE_NAME).unlink()
    message = await _load_error(tmp_path)
    assert FILE_NAME in message
    assert "missing" in message
    assert "--allow-empty-store" in message
    assert not (tmp_path / FILE_NAME).exists(), "a refused start must not create a new file"


async def test_a_zero_length_database_where_the_marker_remains_is_refused(tmp_path: Path) -> None:
    await _create(tmp_path)
    (tmp_path / FILE_NAME).write_bytes(b"")
    message = await _load_error(tmp_path)
    assert "empty (0 bytes)" in message


async def test_allow_empty_starts_afresh_where_the_database_was_lost(tmp_path: Path) -> None:
    await _create(tmp_path)
    (tmp_path / FILE_NAME).unlink()
    store = EmbeddedStore(tmp_path, allow_empty=True)
    snapshot = await store.load()
    await store.close()
    assert snapshot.aliases == ()


async def test_a_database_whose_header_is_garbage_is_called_damaged(tmp_path: Path) -> None:
    await _create(tmp_path)
    path = tmp_path / FILE_NAME
    path.write_bytes(b"\x00garbage" * 100 + path.read_bytes()[800:])
    message = await _load_error(tmp_path)
    assert str(path) in message
    assert "damaged" in message


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('{"name": "zh-public", "sel', "not JSON"),
        ('{"name": "zh-public"}', "selector"),
        ("[1, 2]", "zh-public"),
    ],
)
async def test_a_bad_row_is_named_by_table_and_key(tmp_path: Path, body: str, problem: str) -> None:
    await _create(tmp_path)
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        db.execute("UPDATE aliases SET body = ? WHERE name = 'zh-public'", (body,))
    db.close()
    message = await _load_error(tmp_path)
    assert "table aliases, row name='zh-public'" in message
    assert problem in message
