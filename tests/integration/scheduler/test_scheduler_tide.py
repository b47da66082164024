"""The scheduler on a real fleet: admission, tide moves under load and back, steady load.

Registry, engine stubs, scheduler and router are separate processes on
127.0.0.1; load comes from `tidepool loadtest` run as an operator would, with
`--max-error-rate 0`, so its exit status proves that no call failed while
engines moved.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.fleet_harness import EngineSpec, Fleet
from tests.support.processes import wait_until_async
from tests.support.scheduler_harness import (
    assert_finished_cleanly,
    start_loadtest,
    two_pool_policy,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

# Fast enough for a test: decisions on a 2 s window, moves settle within seconds.
# Decisions on a 2 s window; moves settle within seconds.
POLICY = two_pool_policy(window_s=2.0, cooldown_s=2.0, min_stay_s=3.0)
SLOW = "0.1"
"""Engine speed: a 0.1 s clip takes ~90 ms, so 4 slots serve ~44 calls/s."""


def _engines(lang: str, count: int) -> list[EngineSpec]:
    return [
        EngineSpec(f"{lang}-{i}", lang=lang, slots=4, speed=SLOW, model_load_s=0.3)
        for i in range(count)
    ]


async def _admitted(fleet: Fleet, count: int) -> None:
    await wait_until_async(
        lambda: _all_pooled(fleet, count),
        5.0,
        "the scheduler did not admit every engine within 5 s",
        interval_s=0.1,
    )


async def _all_pooled(fleet: Fleet, count: int) -> bool:
    pools = await fleet.pools()
    return len(pools) == count and all(pools.values())


async def test_engines_without_a_pool_are_admitted_into_their_language_within_2s(
    fleet: Fleet,
) -> None:
    fleet.start_scheduler(POLICY)
    fleet.start_engines(*_engines("zh", 2), *_engines("en", 2))
    started = time.monotonic()
    await _admitted(fleet, 4)
    assert time.monotonic() - started <= 2.0
    instances = await fleet.instances()
    assert {i.id: i.labels["pool"] for i in instances.values()} == {
        "zh-0": "zh-public",
        "zh-1": "zh-public",
        "en-0": "en-public",
        "en-1": "en-public",
    }
    assert all(i.labels["home"] == i.labels["pool"] for i in instances.values())


async def test_a_chinese_surge_borrows_english_engines_and_they_go_home_when_english_rises(
    fleet: Fleet,
) -> None:
    fleet.start_scheduler(POLICY)
    fleet.start_engines(*_engines("zh", 2), *_engines("en", 3))
    await _admitted(fleet, 5)
    router = fleet.start_router()

    # Chinese at ~90 % of its 8 slots, English idle: an English engine turns Chinese.
    surge = await asyncio.to_thread(start_loadtest, router, "zh-public", 110, 12.0)
    await wait_until_async(
        lambda: _lent(fleet),
        15.0,
        "no English engine moved into zh-public during the Chinese surge",
        interval_s=0.2,
    )
    await asyncio.to_thread(assert_finished_cleanly, surge)
    lent = await _lent(fleet)
    instances = await fleet.instances()
    assert all(instances[i].labels["lang"] == "zh" for i in lent), "moved without switching"

    # The tide turns: English surges, Chinese idles; the borrowed engines go home first.
    turn = await asyncio.to_thread(start_loadtest, router, "en-public", 110, 14.0)
    await wait_until_async(
        lambda: _home(fleet, lent),
        20.0,
        lambda: f"engines lent to zh-public ({sorted(lent)}) did not come back to en-public",
        interval_s=0.2,
    )
    await asyncio.to_thread(assert_finished_cleanly, turn)
    finished = [m for m in await fleet.moves() if m.state in (5, 7)]
    assert finished, "no finished moves recorded"
    assert all(m.state == 5 for m in finished), [(m.id, m.reason) for m in finished]


async def _lent(fleet: Fleet) -> set[str]:
    instances = await fleet.instances()
    return {
        i.id
        for i in instances.values()
        if i.labels.get("home") == "en-public"
        and i.labels.get("pool") == "zh-public"
        and i.state == 1
    }


async def _home(fleet: Fleet, ids: set[str]) -> bool:
    instances = await fleet.instances()
    return all(
        instances[i].labels.get("pool") == "en-public"
        and instances[i].labels.get("lang") == "en"
        and instances[i].state == 1
        for i in ids
    )


async def test_steady_moderate_load_moves_nothing(fleet: Fleet) -> None:
    fleet.start_scheduler(POLICY)
    fleet.start_engines(*_engines("zh", 2), *_engines("en", 2))
    await _admitted(fleet, 4)
    router = fleet.start_router()
    # About 40 % of each pool: between the watermarks, with Poisson noise.
    zh = await asyncio.to_thread(start_loadtest, router, "zh-public", 35, 10.0)
    en = await asyncio.to_thread(start_loadtest, router, "en-public", 35, 10.0)
    await asyncio.to_thread(assert_finished_cleanly, zh)
    await asyncio.to_thread(assert_finished_cleanly, en)
    assert await fleet.moves() == []
