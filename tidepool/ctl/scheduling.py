"""`ctl pools`, `moves`, `move` and `top`: the commands over the registry's Scheduling service.

Handlers return the text to print, or yield it piece by piece when it comes over
time (`move --wait` prints each state change, `top` each frame); `main` writes
and flushes every piece as it arrives.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Generator, Iterator, Sequence

from tidepool.ctl.client import CtlError, RegistryClient
from tidepool.ctl.moves import (
    bounds_refusal,
    choose_instances,
    finished,
    move_json,
    move_line,
    move_state,
    moves_table,
    moving_instances,
    unavailable_reason,
)
from tidepool.ctl.pools import pool_json, pools_text, published
from tidepool.ctl.render import json_text
from tidepool.ctl.top import TopView, error_frame, frame, frame_text
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.runtime.rules import POOL_LABEL

WAIT_POLL_S = 0.5
MOVE_REASON = "asked for with tidepool ctl move"


def _list_pools(client: RegistryClient) -> pb.ListPoolsResponse:
    response: pb.ListPoolsResponse = client.call(client.scheduling.ListPools, pb.ListPoolsRequest())
    return response


def _list_moves(client: RegistryClient) -> Sequence[pb.Move]:
    return list(client.call(client.scheduling.ListMoves, pb.ListMovesRequest()).moves)


def _list_instances(client: RegistryClient) -> Sequence[pb.Instance]:
    return client.list_instances()


def cmd_pools(client: RegistryClient, args: argparse.Namespace) -> str:
    response = _list_pools(client)
    if args.json:
        return json_text([pool_json(p) for p in response.pools])
    return pools_text(response)


def cmd_moves(client: RegistryClient, args: argparse.Namespace) -> str:
    moves = _list_moves(client)
    if args.json:
        return json_text([move_json(m) for m in moves])
    return moves_table(moves, time.time())


# ---- move ----------------------------------------------------------------------------------


def _chosen_by_pool(
    client: RegistryClient, args: argparse.Namespace, pools: Sequence[pb.PoolStatus] | None
) -> list[pb.Instance]:
    refusal = bounds_refusal(pools, args.source, args.to, args.count)
    if refusal is not None:
        raise CtlError(f"move refused: {refusal}")
    moving = moving_instances(_list_moves(client))
    chosen = choose_instances(_list_instances(client), args.source, args.count, moving)
    if len(chosen) < args.count:
        raise CtlError(
            f"move refused: only {len(chosen)} of the {args.count} engines asked for are "
            f"available in {args.source} (ready, not drained, not already moving)"
        )
    return chosen


def _chosen_by_id(
    client: RegistryClient, args: argparse.Namespace, pools: Sequence[pb.PoolStatus] | None
) -> list[pb.Instance]:
    found = [i for i in _list_instances(client) if i.id == args.instance]
    if not found:
        raise CtlError(f"move refused: no instance {args.instance!r} in the registry")
    instance = found[0]
    source = instance.labels.get(POOL_LABEL, "")
    if not source:
        raise CtlError(f"move refused: {instance.id} is in no pool yet; the scheduler admits it")
    why_not = unavailable_reason(instance, moving_instances(_list_moves(client)))
    refusal = why_not or bounds_refusal(pools, source, args.to, 1)
    if refusal is not None:
        raise CtlError(f"move refused: {refusal}")
    return [instance]


def _create(client: RegistryClient, instance: pb.Instance, to_pool: str) -> pb.Move:
    move = pb.Move(
        instance_id=instance.id,
        to_pool=to_pool,
        state=pb.Move.STATE_PENDING,
        reason=MOVE_REASON,
    )
    created: pb.Move = client.call(client.scheduling.PutMove, pb.PutMoveRequest(move=move))
    return created


def _wait(
    client: RegistryClient, moves: list[pb.Move], timeout_s: float, *, quiet: bool
) -> Generator[str, None, list[pb.Move]]:
    """Poll until every move ended; yields a line per state change, returns the last view."""
    deadline = time.monotonic() + timeout_s
    current = {m.id: m for m in moves}
    while True:
        waiting = [m for m in current.values() if not finished(m)]
        if not waiting:
            return list(current.values())
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            states = ", ".join(f"{m.id} {move_state(m)}" for m in waiting)
            raise CtlError(f"timed out after {timeout_s:g}s waiting for the moves ({states})")
        time.sleep(min(WAIT_POLL_S, remaining))
        for move in _list_moves(client):
            known = current.get(move.id)
            if known is not None and move_state(move) != move_state(known):
                current[move.id] = move
                if not quiet:
                    yield move_line(move) + "\n"


def cmd_move(client: RegistryClient, args: argparse.Namespace) -> Iterator[str]:
    response = _list_pools(client)
    pools = list(response.pools) if published(response) else None
    choose = _chosen_by_id if args.instance else _chosen_by_pool
    created: list[pb.Move] = []
    for instance in choose(client, args, pools):
        move = _create(client, instance, args.to)
        created.append(move)
        if not args.json:
            yield move_line(move) + "\n"
    if args.wait:
        created = yield from _wait(client, created, args.timeout, quiet=args.json)
    if args.json:
        yield json_text([move_json(m) for m in created])
    rolled_back = [m for m in created if move_state(m) == "rolled_back"]
    if rolled_back:
        reasons = "; ".join(f"{m.id} ({m.instance_id}): {m.reason}" for m in rolled_back)
        raise CtlError(f"{len(rolled_back)} of {len(created)} moves rolled back: {reasons}")


# ---- top -----------------------------------------------------------------------------------


def _view(client: RegistryClient) -> TopView:
    return TopView(_list_pools(client), _list_instances(client), _list_moves(client))


def cmd_top(client: RegistryClient, args: argparse.Namespace) -> Iterator[str]:
    """Frames until Ctrl-C (main exits 0 on it); with --once, one frame."""
    tty = sys.stdout.isatty() and not args.once
    first = True
    while True:
        try:
            lines = frame(_view(client), time.time())
        except CtlError as exc:
            if args.once:
                raise
            lines = error_frame(f"tidepool ctl: {exc}", time.time())
        yield frame_text(lines, tty=tty, first=first)
        if args.once:
            return
        first = False
        time.sleep(args.interval)
