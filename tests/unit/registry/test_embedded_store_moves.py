"""EmbeddedStore: the fencing counter and the moves table are durable across reopening."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from registry.records import AliasRecord, MoveRecord, StoreSnapshot
from registry.store import EmbeddedStore

MOVE = MoveRecord(
    id="m-0123456789ab",
    instance_id="e-1",
    from_pool="zh-a",
    to_pool="en-a",
    state="draining",
    reason="en-a above its high watermark",
    started_at=1_700_000_000.25,
    updated_at=1_700_000_001.5,
    from_lang="zh",
    to_lang="en",
)
DONE = replace(MOVE, id="m-finished", instance_id="e-2", state="done", from_lang="", to_lang="")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EmbeddedStore]:
    opened = EmbeddedStore(tmp_path)
    yield opened
    await opened.close()


async def _reopened(path: Path) -> StoreSnapshot:
    again = EmbeddedStore(path)
    try:
        return await again.load()
    finally:
        await again.close()


async def test_fence_starts_at_zero_and_each_next_is_one_higher(store: EmbeddedStore) -> None:
    assert (await store.load()).fence == 0
    assert [await store.next_fence() for _ in range(3)] == [1, 2, 3]
    assert (await store.load()).fence == 3


async def test_fence_survives_closing_and_reopening(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    await store.next_fence()
    assert await store.next_fence() == 2
    await store.close()
    assert (await _reopened(tmp_path)).fence == 2
    again = EmbeddedStore(tmp_path)
    try:
        assert await again.next_fence() == 3, "a reopened store must never repeat a fence"
    finally:
        await again.close()


async def test_fence_is_visible_to_another_connection_before_close(
    store: EmbeddedStore, tmp_path: Path
) -> None:
    # As after a kill -9: a fence handed out is already on disk.
    await store.next_fence()
    assert (await _reopened(tmp_path)).fence == 1


async def test_concurrent_next_fence_calls_hand_out_distinct_numbers(
    store: EmbeddedStore,
) -> None:
    fences = await asyncio.gather(*(store.next_fence() for _ in range(20)))
    assert sorted(fences) == list(range(1, 21))


async def test_moves_round_trip_through_a_reopen(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    await store.put_move(MOVE)
    await store.put_move(DONE)
    await store.close()
    snapshot = await _reopened(tmp_path)
    assert sorted(snapshot.moves, key=lambda m: m.id) == [MOVE, DONE]
    assert (snapshot.instances, snapshot.aliases, snapshot.tenants) == ((), (), ())


async def test_put_move_replaces_by_id(store: EmbeddedStore, tmp_path: Path) -> None:
    await store.put_move(MOVE)
    changed = replace(MOVE, state="switching", reason="drained", updated_at=1_700_000_009.0)
    await store.put_move(changed)
    assert (await _reopened(tmp_path)).moves == (changed,)


async def test_delete_move_removes_only_that_move(store: EmbeddedStore, tmp_path: Path) -> None:
    await store.put_move(MOVE)
    await store.put_move(DONE)
    await store.delete_move(DONE.id)
    await store.delete_move("m-never-there")  # deleting the absent is not an error
    assert (await _reopened(tmp_path)).moves == (MOVE,)


async def test_moves_and_fence_sit_beside_the_other_records(
    store: EmbeddedStore, tmp_path: Path
) -> None:
    alias = AliasRecord("zh-a", "pool=zh-a", "speech")
    await store.put_alias(alias)
    await store.put_move(MOVE)
    await store.next_fence()
    assert await _reopened(tmp_path) == StoreSnapshot(aliases=(alias,), moves=(MOVE,), fence=1)
