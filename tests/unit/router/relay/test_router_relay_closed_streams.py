"""The bounded memory of closed streams: what a late frame on a gone stream is answered by."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.relay.h2core.state import ClosedStreams, Closure


def test_the_oldest_closed_stream_is_forgotten_first() -> None:
    closed = ClosedStreams(limit=3)
    for sid in (1, 3, 5, 7, 9):
        closed.add(sid, Closure.ENDED)
    assert [closed.get(sid) for sid in (1, 3)] == [None, None]
    assert [closed.get(sid) for sid in (5, 7, 9)] == [Closure.ENDED] * 3
    assert len(closed) == 3


def test_closing_a_remembered_stream_again_updates_how_without_forgetting_another() -> None:
    closed = ClosedStreams(limit=2)
    closed.add(1, Closure.ENDED)
    closed.add(3, Closure.ENDED)
    closed.add(1, Closure.RESET_BY_US)
    assert (closed.get(1), closed.get(3), len(closed)) == (Closure.RESET_BY_US, Closure.ENDED, 2)
    closed.add(5, Closure.ENDED)  # 1 closed first: it goes first, its update did not renew it
    assert (closed.get(1), closed.get(3), closed.get(5)) == (None, Closure.ENDED, Closure.ENDED)


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="1 or more, got 0"):
        ClosedStreams(limit=0)


@given(
    st.lists(st.tuples(st.integers(min_value=1, max_value=40), st.sampled_from(list(Closure)))),
    st.integers(min_value=1, max_value=8),
)
def test_it_remembers_what_a_bounded_ordered_dict_would(
    closes: list[tuple[int, Closure]], limit: int
) -> None:
    """The reference: an OrderedDict that drops its oldest entry past `limit`."""
    closed, reference = ClosedStreams(limit=limit), OrderedDict[int, Closure]()
    for sid, closure in closes:
        closed.add(sid, closure)
        reference[sid] = closure
        if len(reference) > limit:
            reference.popitem(last=False)
    assert {sid: closed.get(sid) for sid in range(1, 41)} == {
        sid: reference.get(sid) for sid in range(1, 41)
    }
    assert len(closed) == len(reference)
