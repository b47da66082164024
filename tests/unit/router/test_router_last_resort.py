"""No registry event alone empties a pool: which departures apply at once, which are kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from router.endpoint import Endpoint
from router.outlier import Departure, last_resort


def _ep(name: str, weight: int = 100, healthy: bool = True) -> Endpoint:
    return Endpoint(name, f"{name}.test:7000", weight, healthy=healthy)


def _ids(endpoints: tuple[Endpoint, ...]) -> list[str]:
    return [e.id for e in endpoints]


def test_a_pool_with_a_healthy_endpoint_is_taken_as_the_watch_says() -> None:
    previous = [_ep("a"), _ep("b"), _ep("c")]
    current = [_ep("a"), _ep("b", healthy=False)]
    assert last_resort(previous, current) == (tuple(current), False)


def test_expiry_of_the_whole_pool_keeps_it_as_last_resort() -> None:
    previous = [_ep("a"), _ep("b")]
    current = [_ep("a", healthy=False), _ep("b", healthy=False)]
    view = last_resort(previous, current)
    assert view.last_resort is True
    assert view.endpoints == (_ep("a"), _ep("b"))  # marked healthy: routed if they answer


def test_reaped_instances_are_kept_when_nothing_else_is_left() -> None:
    previous = [_ep("a"), _ep("b", healthy=False)]
    view = last_resort(previous, [], {"a": Departure.EXPIRED})  # b: no reason known
    assert view == ((_ep("a"), _ep("b")), True)


def test_deregistration_drain_and_move_apply_at_once_even_if_the_pool_empties() -> None:
    previous = [_ep("a"), _ep("b"), _ep("c")]
    departures = {
        "a": Departure.DEREGISTERED,
        "b": Departure.DRAINED,
        "c": Departure.MOVED,
    }
    assert last_resort(previous, [], departures) == ((), False)
    drained = [_ep("a", weight=0)]
    assert last_resort([_ep("a")], drained) == (tuple(drained), False)


def test_only_the_endpoints_that_expired_are_kept() -> None:
    previous = [_ep("a"), _ep("b"), _ep("c", weight=0)]
    current = [_ep("c", weight=0)]
    view = last_resort(previous, current, {"a": Departure.DEREGISTERED})
    assert view.last_resort is True
    assert _ids(view.endpoints) == ["c", "b"]
    assert view.endpoints[0].weight == 0  # still drained: never picked


def test_last_resort_holds_across_events_and_ends_when_a_healthy_endpoint_joins() -> None:
    view = last_resort([_ep("a")], [], {"a": Departure.EXPIRED})
    view = last_resort(view.endpoints, [_ep("x", weight=0)])  # an unrelated drained join
    assert view.last_resort is True
    assert _ids(view.endpoints) == ["x", "a"]
    view = last_resort(view.endpoints, [_ep("x", weight=0), _ep("n")])
    assert view == ((_ep("x", weight=0), _ep("n")), False)


reasons = st.sampled_from(list(Departure))
members = st.tuples(
    st.integers(min_value=0, max_value=2),  # weight
    st.booleans(),  # healthy
    st.booleans(),  # still in the watch's view
    st.none() | reasons,  # why it left
)


@given(st.lists(members, max_size=8))
def test_never_keeps_a_final_departure_and_never_empties_a_pool_that_could_be_kept(
    spec: list[tuple[int, bool, bool, Departure | None]],
) -> None:
    previous = [_ep(f"e-{i}", w, h) for i, (w, h, _, _) in enumerate(spec)]
    current = [e for e, (_, _, present, _) in zip(previous, spec, strict=True) if present]
    departures = {
        e.id: why
        for e, (_, _, present, why) in zip(previous, spec, strict=True)
        if not present and why is not None
    }
    view = last_resort(previous, current, departures)
    final = {i for i, why in departures.items() if why not in (None, Departure.EXPIRED)}
    assert final.isdisjoint(e.id for e in view.endpoints if e.id not in {c.id for c in current})
    keepable = [
        e
        for e in previous
        if e.weight > 0 and (e in current or departures.get(e.id, Departure.EXPIRED) == "expired")
    ]
    if any(e.routable for e in current):
        assert view == (tuple(current), False)
    else:
        assert view.last_resort == bool(keepable)
        assert any(e.routable for e in view.endpoints) == bool(keepable)
