"""`ctl instances` (listing, filters, `--watch`) and the admin commands on one instance.

Handlers return the text to print, or yield it as it comes (`--watch`); `main`
writes and flushes each piece.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator

from registry.client import STATES_BY_NAME
from tidepool.ctl.client import CtlError, RegistryClient, RegistryGoneError
from tidepool.ctl.render import instance_json, instances_table, json_text
from tidepool.ctl.watch import HEADER, LEGEND, Keep, WatchView
from tidepool.registry.v1 import registry_pb2 as pb
from tidepool.runtime.backoff import Backoff
from tidepool.runtime.selector import Selector

RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 5.0


def keep_filter(args: argparse.Namespace) -> Keep:
    """The `--selector` and `--state` filters as one predicate (all instances without them)."""
    selector: Selector | None = args.selector
    states = {STATES_BY_NAME[s] for s in args.state or ()}

    def keep(instance: pb.Instance) -> bool:
        if selector is not None and not selector.matches(instance.labels):
            return False
        return not states or instance.state in states

    return keep


def cmd_instances(client: RegistryClient, args: argparse.Namespace) -> str | Iterator[str]:
    if args.watch:
        return _watch(client, args)
    keep = keep_filter(args)
    instances = [i for i in client.list_instances(args.service or "") if keep(i)]
    if args.json:
        return json_text([instance_json(i) for i in instances])
    return instances_table(instances, time.time(), wide=args.wide)


def _watch(client: RegistryClient, args: argparse.Namespace) -> Iterator[str]:
    """Follow the registry's watch until Ctrl-C, reconnecting when the registry goes away.

    The first connection must work (a wrong address fails at once, with its hint);
    after that a lost registry is retried with a short backoff, said on stderr.
    """
    view = WatchView(keep_filter(args), as_json=args.json)
    request = pb.WatchRequest(service=args.service or "")
    backoff = Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S)
    header = "" if args.json else f"{LEGEND}\n{HEADER}\n"
    lost = connected = False
    while True:
        try:
            for event in client.watch(request):
                if lost:
                    _say(f"watching again from revision {event.revision}")
                    lost = False
                connected = True
                backoff.reset()
                lines = view.apply(event, time.time())
                # The header waits for the first answer: a wrong address prints only its error.
                yield header + "".join(lines)
                header = ""
        except RegistryGoneError as exc:
            if not connected:
                raise
            # Full jitter can draw ~0; a floor keeps a down registry from being hammered.
            delay = max(RECONNECT_MIN_S / 2, backoff.next_delay())
            what = "still cannot reach" if lost else "lost"
            _say(f"{what} the registry at {client.target} ({exc.reason}); retry in {delay:.1f}s")
            lost = True
            time.sleep(delay)


def _say(text: str) -> None:
    sys.stderr.write(f"tidepool ctl: {text}\n")
    sys.stderr.flush()


def _changed(instance: pb.Instance, args: argparse.Namespace) -> str:
    """An admin command's answer: the instance as the registry now has it."""
    if args.json:
        return json_text(instance_json(instance))
    return instances_table([instance], time.time(), wide=args.wide, legend=False)


def cmd_drain(client: RegistryClient, args: argparse.Namespace) -> str:
    return _changed(client.call(client.admin.Drain, pb.DrainRequest(instance_id=args.id)), args)


def cmd_restore(client: RegistryClient, args: argparse.Namespace) -> str:
    request = pb.RestoreRequest(instance_id=args.id)
    return _changed(client.call(client.admin.Restore, request), args)


def cmd_weight(client: RegistryClient, args: argparse.Namespace) -> str:
    if args.weight is None and not args.clear:
        raise CtlError("weight: give a WEIGHT from 0 to 1000, or --clear")
    request = pb.SetWeightRequest(instance_id=args.id, weight=args.weight or 0, clear=args.clear)
    return _changed(client.call(client.admin.SetWeight, request), args)
