"""Scheduler leadership, fencing numbers and the move book, on a fake clock (plain floats)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from registry.fencing import FENCE_HEADER, read_fence
from registry.leadership import LeaderLease, LeadershipTable
from registry.moves import KEEP_FINISHED, MoveBook, MoveRequest
from registry.records import FINISHED_MOVE_STATES, MOVE_STATES, MoveRecord

TTL = 2.0
LABELS = {"lang": "zh", "pool": "zh-a"}

# --- leadership -------------------------------------------------------------------------


def _held(holder: str = "sched-a", fence: int = 1, now: float = 0.0) -> LeadershipTable:
    table = LeadershipTable()
    assert table.needs_new_fence(holder, now)
    table.grant(holder, fence, TTL, now)
    return table


def test_free_leadership_needs_a_new_fence() -> None:
    table = LeadershipTable()
    assert table.current(0.0) is None
    assert table.needs_new_fence("sched-a", 0.0) is True


def test_grant_records_the_holder_its_fence_and_deadline() -> None:
    table = _held(fence=7, now=10.0)
    assert table.current(10.0) == LeaderLease("sched-a", 7, 10.0 + TTL)
    assert table.fence == 7
    lease = table.current(10.5)
    assert lease is not None
    assert lease.remaining_s(10.5) == pytest.approx(TTL - 0.5)


def test_same_holder_keeps_its_fence_and_extends_the_ttl() -> None:
    table = _held(fence=3)
    assert table.needs_new_fence("sched-a", 1.5) is False
    table.grant("sched-a", 3, TTL, 1.5)
    # Past the first deadline, still held thanks to the renewal.
    lease = table.current(TTL + 1.0)
    assert lease == LeaderLease("sched-a", 3, 1.5 + TTL)
    assert table.fence == 3


def test_other_holder_is_refused_while_the_lease_is_live() -> None:
    table = _held()
    with pytest.raises(FailedPreconditionError, match=r"holder: .*'sched-a'.*1\.0s more"):
        table.needs_new_fence("sched-b", TTL - 1.0)
    assert table.current(TTL - 1.0) == LeaderLease("sched-a", 1, TTL)


def test_other_holder_may_take_over_once_the_lease_lapses() -> None:
    table = _held()
    assert table.needs_new_fence("sched-b", TTL) is True  # the deadline itself is lapsed
    table.grant("sched-b", 2, TTL, TTL)
    assert table.current(TTL) == LeaderLease("sched-b", 2, 2 * TTL)
    assert table.fence == 2


def test_lapsed_holder_itself_needs_a_new_fence() -> None:
    table = _held()
    assert table.needs_new_fence("sched-a", TTL + 0.1) is True


def test_fence_never_goes_down_when_a_lower_number_is_granted() -> None:
    table = _held(fence=9)
    table.grant("sched-a", 4, TTL, 0.0)
    assert table.fence == 9


def test_release_by_the_holder_frees_the_leadership_at_once() -> None:
    table = _held()
    table.release("sched-a", 0.5)
    assert table.current(0.5) is None
    assert table.needs_new_fence("sched-b", 0.5) is True
    assert table.fence == 1, "releasing must not forget the last number handed out"


def test_release_by_another_holder_changes_nothing() -> None:
    table = _held()
    table.release("sched-b", 0.5)
    assert table.current(0.5) == LeaderLease("sched-a", 1, TTL)


def test_release_when_free_is_harmless() -> None:
    table = LeadershipTable()
    table.release("sched-a", 0.0)
    assert table.current(0.0) is None


def test_remaining_never_goes_negative() -> None:
    assert LeaderLease("sched-a", 1, 5.0).remaining_s(9.0) == 0.0


def test_check_accepts_the_current_fence() -> None:
    table = _held(fence=5)
    table.check(5, TTL - 0.01)


@pytest.mark.parametrize("presented", [0, 4, 6])
def test_check_refuses_any_other_fence_naming_the_leader(presented: int) -> None:
    table = _held(fence=5)
    with pytest.raises(FailedPreconditionError, match=r"x-tidepool-fence: .*'sched-a'.*fence 5"):
        table.check(presented, 1.0)


def test_check_refuses_when_nobody_holds_the_leadership() -> None:
    with pytest.raises(FailedPreconditionError, match="no scheduler holds the leadership"):
        LeadershipTable().check(1, 0.0)


def test_check_refuses_the_right_fence_once_its_lease_lapsed() -> None:
    table = _held(fence=5)
    with pytest.raises(FailedPreconditionError, match="no scheduler holds"):
        table.check(5, TTL)


def test_check_refuses_a_deposed_leaders_fence() -> None:
    table = _held(fence=1)
    table.grant("sched-b", 2, TTL, TTL + 0.5)
    table.check(2, TTL + 1.0)
    with pytest.raises(FailedPreconditionError, match="'sched-b' holds fence 2"):
        table.check(1, TTL + 1.0)


# --- the fence header ---------------------------------------------------------------------


def test_read_fence_is_none_without_the_header() -> None:
    assert read_fence(None) is None
    assert read_fence([("authorization", "Bearer x")]) is None


@pytest.mark.parametrize(("value", "fence"), [("7", 7), (b"12", 12), ("0", 0)])
def test_read_fence_reads_a_whole_number(value: str | bytes, fence: int) -> None:
    assert read_fence([("authorization", "Bearer x"), (FENCE_HEADER, value)]) == fence


@pytest.mark.parametrize("value", ["", "-1", " 7", "1e3", "x", "²", "٣", "1" * 20])
def test_read_fence_refuses_anything_but_ascii_digits(value: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"^{FENCE_HEADER}: must be a whole number"):
        read_fence([(FENCE_HEADER, value)])


# --- moves --------------------------------------------------------------------------------


def _request(**changes: str) -> MoveRequest:
    request = MoveRequest(id="", instance_id="e-1", to_pool="en-a", state="pending", reason="")
    return replace(request, **changes)


def _created(book: MoveBook, now: float = 100.0, **changes: str) -> MoveRecord:
    """Create a move the way the core does: prepare, then put."""
    move = book.prepare(_request(**changes), LABELS, fenced=True, now=now)
    assert book.put(move) == []
    return move


def _finished(index: int, updated_at: float) -> MoveRecord:
    return MoveRecord(
        id=f"m-done-{index}",
        instance_id=f"e-{index}",
        from_pool="zh-a",
        to_pool="en-a",
        state="done",
        reason="manual",
        started_at=updated_at - 1.0,
        updated_at=updated_at,
    )


def test_unfenced_create_makes_a_pending_move_from_the_instances_pool() -> None:
    book = MoveBook()
    move = book.prepare(_request(), LABELS, fenced=False, now=100.0)
    assert move.id.startswith("m-")
    assert replace(move, id="") == MoveRecord(
        id="",
        instance_id="e-1",
        from_pool="zh-a",
        to_pool="en-a",
        state="pending",
        reason="manual",
        started_at=100.0,
        updated_at=100.0,
    )


def test_every_created_move_gets_its_own_id() -> None:
    book = MoveBook()
    ids = {book.prepare(_request(), LABELS, fenced=False, now=1.0).id for _ in range(20)}
    assert len(ids) == 20


def test_prepare_changes_nothing_in_the_book() -> None:
    book = MoveBook()
    book.prepare(_request(), LABELS, fenced=False, now=1.0)
    assert book.moves == {}
    assert book.active_for("e-1") is None


def test_requested_from_pool_is_ignored_in_favour_of_the_label() -> None:
    move = MoveBook().prepare(_request(from_pool="en-b"), LABELS, fenced=False, now=1.0)
    assert move.from_pool == "zh-a"


def test_reason_and_languages_are_kept_and_the_reason_is_capped() -> None:
    request = _request(reason="x" * 600, from_lang="zh", to_lang="en")
    move = MoveBook().prepare(request, LABELS, fenced=False, now=1.0)
    assert (move.reason, move.from_lang, move.to_lang) == ("x" * 500, "zh", "en")


@pytest.mark.parametrize("fenced", [False, True])
def test_unknown_state_is_invalid(fenced: bool) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^move\.state: unknown state '\?'"):
        MoveBook().prepare(_request(state="?"), LABELS, fenced=fenced, now=1.0)


def test_create_for_an_unknown_instance_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="instance 'e-1' not found"):
        MoveBook().prepare(_request(), None, fenced=False, now=1.0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"instance_id": ""}, "move.instance_id"),
        ({"instance_id": "bad id!"}, "move.instance_id"),
        ({"to_pool": ""}, "move.to_pool"),
        ({"to_pool": "Not_A_Name"}, "move.to_pool"),
        ({"from_lang": "not a lang"}, "move.from_lang"),
        ({"to_lang": "not a lang"}, "move.to_lang"),
    ],
)
def test_create_with_a_malformed_field_names_it(changes: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"^{field}: "):
        MoveBook().prepare(_request(**changes), LABELS, fenced=False, now=1.0)


@pytest.mark.parametrize("fenced", [False, True])
def test_instance_in_no_pool_cannot_move(fenced: bool) -> None:
    with pytest.raises(FailedPreconditionError, match=r"^move\.instance_id: 'e-1' is in no pool"):
        MoveBook().prepare(_request(), {"lang": "zh"}, fenced=fenced, now=1.0)
    with pytest.raises(FailedPreconditionError, match="is in no pool"):
        MoveBook().prepare(_request(), {"pool": ""}, fenced=fenced, now=1.0)


@pytest.mark.parametrize("fenced", [False, True])
def test_move_into_the_pool_it_is_already_in_is_refused(fenced: bool) -> None:
    already_in = r"^move\.to_pool: 'e-1' is already in 'zh-a'"
    with pytest.raises(FailedPreconditionError, match=already_in):
        MoveBook().prepare(_request(to_pool="zh-a"), LABELS, fenced=fenced, now=1.0)


@pytest.mark.parametrize("state", [s for s in MOVE_STATES if s != "pending"])
def test_unfenced_create_must_be_pending(state: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^move\.state: .*must be pending"):
        MoveBook().prepare(_request(state=state), LABELS, fenced=False, now=1.0)


@pytest.mark.parametrize("state", MOVE_STATES)
def test_fenced_create_may_start_in_any_state(state: str) -> None:
    move = MoveBook().prepare(_request(state=state), LABELS, fenced=True, now=1.0)
    assert move.state == state


@pytest.mark.parametrize("fenced", [False, True])
def test_one_unfinished_move_per_instance(fenced: bool) -> None:
    book = MoveBook()
    first = _created(book, state="draining")
    with pytest.raises(FailedPreconditionError, match=f"'e-1' is already moving \\({first.id}"):
        book.prepare(_request(to_pool="en-b"), LABELS, fenced=fenced, now=101.0)
    # Another instance is not held up by it.
    other = book.prepare(_request(instance_id="e-2"), LABELS, fenced=fenced, now=101.0)
    assert other.instance_id == "e-2"


@pytest.mark.parametrize("end", sorted(FINISHED_MOVE_STATES))
def test_instance_may_move_again_once_its_move_finished(end: str) -> None:
    book = MoveBook()
    first = _created(book)
    book.put(book.prepare(_request(id=first.id, state=end), None, fenced=True, now=101.0))
    again = book.prepare(_request(), LABELS, fenced=False, now=102.0)
    assert again.id != first.id


def test_update_needs_the_fence() -> None:
    book = MoveBook()
    move = _created(book)
    with pytest.raises(FailedPreconditionError, match=r"^move\.id: only the scheduler leader"):
        book.prepare(_request(id=move.id, state="draining"), None, fenced=False, now=101.0)
    assert book.moves[move.id] == move


def test_update_of_an_unknown_move_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="move 'm-nope' not found"):
        MoveBook().prepare(_request(id="m-nope"), None, fenced=True, now=1.0)


def test_update_changes_state_reason_languages_and_time_only() -> None:
    book = MoveBook()
    move = _created(book, reason="too busy")
    request = _request(
        id=move.id, state="switching", reason="drained", to_pool="elsewhere", to_lang="en"
    )
    updated = book.prepare(request, None, fenced=True, now=150.0)
    assert updated == replace(
        move, state="switching", reason="drained", updated_at=150.0, to_lang="en"
    )
    assert book.moves[move.id] == move, "prepare must not apply the update"


def test_update_with_empty_reason_and_languages_keeps_the_old_ones() -> None:
    book = MoveBook()
    move = _created(book, reason="too busy", from_lang="zh", to_lang="en")
    updated = book.prepare(_request(id=move.id, state="admitting"), None, fenced=True, now=150.0)
    assert (updated.reason, updated.from_lang, updated.to_lang) == ("too busy", "zh", "en")


def test_update_may_not_change_the_instance() -> None:
    book = MoveBook()
    move = _created(book)
    with pytest.raises(InvalidArgumentError, match=r"^move\.instance_id: a move cannot change"):
        book.prepare(_request(id=move.id, instance_id="e-2"), None, fenced=True, now=150.0)


@pytest.mark.parametrize("end", sorted(FINISHED_MOVE_STATES))
def test_finished_move_can_no_longer_change(end: str) -> None:
    book = MoveBook()
    move = _created(book, state=end)
    with pytest.raises(FailedPreconditionError, match=f"^move.id: {move.id} already ended {end}"):
        book.prepare(_request(id=move.id, state="pending"), None, fenced=True, now=150.0)


def test_put_keeps_the_newest_finished_moves_and_returns_the_evicted() -> None:
    book = MoveBook()
    active = _created(book, now=0.0, instance_id="e-active", state="draining")
    for index in range(KEEP_FINISHED):
        assert book.put(_finished(index, 1.0 + index)) == []
    newest = _finished(KEEP_FINISHED, 1000.0)
    assert book.put(newest) == ["m-done-0"]
    # The book reports the evicted; the core deletes them from the store and drops them.
    book.drop("m-done-0")
    assert book.put(_finished(KEEP_FINISHED + 1, 1001.0)) == ["m-done-1"]
    book.drop("m-done-1")
    assert book.moves[active.id] == active, "unfinished moves are never evicted"
    finished = [m for m in book.moves.values() if m.finished]
    assert len(finished) == KEEP_FINISHED


def test_put_replacing_a_move_keeps_one_record() -> None:
    book = MoveBook()
    move = _created(book)
    book.put(replace(move, state="done", updated_at=200.0))
    assert list(book.moves) == [move.id]
    assert book.active_for("e-1") is None


def test_drop_of_an_unknown_move_is_harmless() -> None:
    book = MoveBook()
    book.drop("m-never")
    assert book.moves == {}


def test_listing_puts_unfinished_oldest_first_then_finished_newest_first() -> None:
    book = MoveBook()
    late = _created(book, now=30.0, instance_id="e-late")
    early = _created(book, now=10.0, instance_id="e-early", state="switching")
    old_done = _finished(1, 20.0)
    new_done = replace(_finished(2, 40.0), state="rolled_back")
    # A move started long ago but finished last lists first among the finished.
    slow_done = replace(_finished(3, 50.0), started_at=0.0)
    for move in (new_done, old_done, slow_done):
        book.put(move)
    assert [m.id for m in book.listing()] == [
        early.id,
        late.id,
        slow_done.id,
        new_done.id,
        old_done.id,
    ]


def test_listing_shows_at_most_the_kept_number_of_finished() -> None:
    book = MoveBook()
    for index in range(KEEP_FINISHED + 5):
        book.moves[f"m-done-{index}"] = _finished(index, float(index))
    listed = book.listing()
    assert len(listed) == KEEP_FINISHED
    assert listed[0].id == f"m-done-{KEEP_FINISHED + 4}"


def test_load_restores_moves_and_the_one_move_rule() -> None:
    source = MoveBook()
    active = _created(source, now=5.0, state="admitting")
    done = _finished(1, 3.0)
    book = MoveBook()
    book.load((active, done))
    assert book.moves == {done.id: done, active.id: active}
    assert book.active_for("e-1") == active
    with pytest.raises(FailedPreconditionError, match="already moving"):
        book.prepare(_request(), LABELS, fenced=False, now=6.0)


@given(st.lists(st.tuples(st.integers(0, 9), st.booleans()), max_size=300))
def test_retention_keeps_exactly_the_newest_finished(steps: list[tuple[int, bool]]) -> None:
    book = MoveBook()
    finished_at: dict[str, float] = {}
    for tick, (instance, finish) in enumerate(steps):
        move = MoveRecord(
            id=f"m-{tick}",
            instance_id=f"e-{instance}",
            from_pool="zh-a",
            to_pool="en-a",
            state="done" if finish else "draining",
            reason="r",
            started_at=float(tick),
            updated_at=float(tick),
        )
        for evicted in book.put(move):
            book.drop(evicted)
        if finish:
            finished_at[move.id] = float(tick)
    kept = {m.id for m in book.moves.values() if m.finished}
    newest = sorted(finished_at, key=finished_at.__getitem__)[-KEEP_FINISHED:]
    assert kept == set(newest)
    listed = book.listing()
    active = [m for m in listed if not m.finished]
    assert listed[: len(active)] == sorted(active, key=lambda m: m.started_at)
