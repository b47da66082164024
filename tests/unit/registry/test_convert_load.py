"""Reported load figures are clamped to bounds an engine can mean before anyone reads them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from registry.convert import LOAD_PER_SLOT_MAX, load_from_pb
from registry.validation import CAPACITY_MAX
from tidepool.registry.v1 import registry_pb2 as pb

UINT32 = st.integers(0, 2**32 - 1)


def test_sane_figures_pass_unchanged() -> None:
    figures = load_from_pb(pb.Load(in_flight=7, queued=3, slots=8, progress=12345))
    assert (figures.in_flight, figures.queued, figures.slots, figures.progress) == (7, 3, 8, 12345)


def test_in_flight_and_queued_are_clamped_to_a_multiple_of_the_slots() -> None:
    figures = load_from_pb(pb.Load(in_flight=2**32 - 1, queued=10_000, slots=4))
    assert figures.in_flight == LOAD_PER_SLOT_MAX * 4
    assert figures.queued == LOAD_PER_SLOT_MAX * 4


def test_no_slots_reported_counts_as_one_slot() -> None:
    figures = load_from_pb(pb.Load(in_flight=1_000_000, slots=0))
    assert (figures.in_flight, figures.slots) == (LOAD_PER_SLOT_MAX, 0)


@given(UINT32, UINT32, UINT32)
def test_every_figure_stays_within_its_bound(in_flight: int, queued: int, slots: int) -> None:
    figures = load_from_pb(pb.Load(in_flight=in_flight, queued=queued, slots=slots))
    assert figures.slots == min(slots, CAPACITY_MAX)
    bound = LOAD_PER_SLOT_MAX * max(figures.slots, 1)
    assert figures.in_flight == min(in_flight, bound)
    assert figures.queued == min(queued, bound)
